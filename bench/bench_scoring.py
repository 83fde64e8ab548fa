"""Time the zero-shot evaluator end to end on the YourTTS Portuguese set (530 clips) on CPU.

Model: ``wav2vec_small`` (1.3M parameters) with *seeded random weights* (no pretrained checkpoint
is used here unless --checkpoint is given), plus the trivial acoustic control. It measures the
evaluator's speed and prints every measure's SRCC with its interval; a random-weights model's
correlations are a noise floor, not a result.

    python bench/bench_scoring.py [--checkpoint PATH] [--limit N] [--threads 2]

Appends a dated block to bench/RESULTS.md (unless --no-record).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import append_results  # noqa: E402
from toolkit.scoring.evaluate import evaluate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mos" / "yourtts"))
    parser.add_argument("--checkpoint", default="random:small")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="bench_scoring_"))
    try:
        spec = f"yourtts:{args.data}:PT"
        t0 = time.perf_counter()
        result = evaluate([args.checkpoint], [spec], controls=["acoustic"], output_dir=out, draws=args.draws,
                          limit=args.limit, device="cpu", wandb_mode="disabled", progress=False, echo=None)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluate([args.checkpoint], [spec], controls=["acoustic"], output_dir=out, draws=args.draws,
                 limit=args.limit, device="cpu", wandb_mode="disabled", progress=False, echo=None, plots=False)
        warm = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    from toolkit.scoring.evaluate import format_summary

    summary = format_summary(result)
    n = next(r["n"] for r in result.rows if r["level"] == "utterance")
    lines = [
        f"YourTTS Portuguese, {n} clips; model `{args.checkpoint}`"
        + (" = wav2vec_small with SEEDED RANDOM WEIGHTS (untrained: a noise floor, not a result)" if args.checkpoint.startswith("random:") else "")
        + f"; {args.draws} negative draws; plus the acoustic control; 1000 bootstrap resamples.",
        f"- end to end, cold cache (score + metrics + files + plots): **{cold:.1f} s**",
        f"- re-run with a warm cache (nothing rescored): **{warm:.1f} s**",
        "",
        "```",
        summary.strip(),
        "```",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        append_results("bench_scoring.py: zero-shot evaluation on CPU", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
