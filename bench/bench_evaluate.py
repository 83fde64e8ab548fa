"""The evaluator's own speed on CPU, end to end, on real 48 kHz WAV: fp32 and bf16 in the same run.

Input: ``--clips`` rated clips of the YourTTS listening test (../shared/data/mos/yourtts, both
languages, a seeded random pick), resampled to 48 kHz mono 16-bit WAV into a temporary folder at
run time (never into the repository), as a ``csv:`` dataset. Model: the embedded default
(toolkit/assets/default/model.pt), 3 negative draws, all measures, 1000 bootstrap resamples, no
score cache, plots on, W&B off: what ``toolkit evaluate`` does.

Besides the end-to-end figures it times the parts on their own (decoding + resampling every file,
the model's forward pass, the contrastive logits and measures of the draws), so the table says where
the time goes. Wall time depends on the machine's load; process CPU time is the steadier figure.

    python bench/bench_evaluate.py [--clips 384] [--threads 2] [--repo PATH] [--no-record]

``--repo`` imports the toolkit from another checkout (for a before/after comparison in one run).
Appends a dated block to bench/RESULTS.md (unless --no-record).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_wavs(source: Path, out: Path, clips: int, seed: int = 0) -> tuple[Path, float]:
    """``clips`` YourTTS clips as 48 kHz WAV in ``out``; returns the CSV and the seconds of audio."""
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    rows = list(csv.DictReader(open(source / "mos.csv", newline="")))
    random.Random(seed).shuffle(rows)
    lines, total = ["path,mos,system"], 0.0
    (out / "wav").mkdir(parents=True)
    for i, r in enumerate(rows[:clips]):
        x, rate = sf.read(source / "audio" / r["audio_path"], dtype="float32")
        y = AF.resample(torch.from_numpy(x), rate, 48000).clamp(-1, 1).numpy()
        sf.write(out / "wav" / f"{i:04d}.wav", y, 48000, subtype="PCM_16")
        total += len(y) / 48000
        lines.append(f"wav/{i:04d}.wav,{r['mos']},{r['language']}-{r['system']}")
    (out / "set.csv").write_text("\n".join(lines) + "\n")
    return out / "set.csv", total


def commit_of(repo: Path) -> str:
    import subprocess

    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=repo)
    return out.stdout.strip() or "unknown"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mos" / "yourtts"))
    parser.add_argument("--clips", type=int, default=384)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--repo", default=str(REPO), help="import the toolkit from this checkout")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from bench.common import append_results, table  # always this checkout's RESULTS.md

    sys.path.insert(0, str(Path(args.repo).resolve()))
    import torch

    from toolkit.audio import load_audio
    from toolkit.models.checkpoint import load_checkpoint
    from toolkit.scoring.evaluate import evaluate
    from toolkit.scoring.scorer import Wav2VecScorer

    torch.set_num_threads(args.threads)
    model_path = Path(args.repo) / "toolkit" / "assets" / "default" / "model.pt"
    tmp = Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    try:
        table_csv, seconds = make_wavs(Path(args.data), tmp / "data", args.clips)
        files = sorted((tmp / "data" / "wav").glob("*.wav"))
        rows, scores = [], {}
        waves, wall, cpu = timed(lambda: [load_audio(f).samples for f in files])
        rows.append(["decode + resample 48->16 kHz only", f"{wall:.1f}", f"{cpu:.1f}", f"{seconds / wall:.0f}"])
        model, _ = load_checkpoint(model_path)
        model.eval()

        def forward():
            with torch.inference_mode():
                for w in waves:
                    model.encode(w[None], torch.tensor([w.numel()]))

        _, wall, cpu = timed(forward)
        rows.append(["model forward only (encode)", f"{wall:.1f}", f"{cpu:.1f}", f"{seconds / wall:.0f}"])
        scorer = Wav2VecScorer(model, draws=args.draws)
        _, wall, cpu = timed(lambda: [scorer.score(w[None], None, [str(i)]) for i, w in enumerate(waves)])
        rows.append([f"scorer.score, {args.draws} draws (forward + logits + measures)", f"{wall:.1f}", f"{cpu:.1f}",
                     f"{seconds / wall:.0f}"])
        for dtype in (None, "bf16"):
            out = tmp / f"eval-{dtype or 'fp32'}"
            result, wall, cpu = timed(lambda o=out, d=dtype: evaluate(
                [str(model_path)], [f"csv:{table_csv}"], output_dir=o, draws=args.draws, dtype=d, device="cpu",
                use_cache=False, wandb_mode="disabled", progress=False, echo=None))
            scores[dtype or "fp32"] = result.scores
            rows.append([f"toolkit evaluate end to end, {dtype or 'fp32'}", f"{wall:.1f}", f"{cpu:.1f}",
                         f"{seconds / wall:.0f}"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import toolkit

    fp32, bf16 = (next(iter(scores[k].values())) for k in ("fp32", "bf16"))
    diff = max(abs(fp32[u][m] - bf16[u][m]) for u in fp32 for m in fp32[u])
    load = os.getloadavg()[0]
    text = table(["what", "wall (s)", "CPU (s)", "audio-s per wall-s"], rows)
    notes = (
        f"{args.clips} YourTTS clips resampled to 48 kHz mono WAV ({seconds:.0f} s of audio), embedded default "
        f"model, {args.draws} negative draws, all measures, no cache, {args.threads} intra-op thread(s); toolkit "
        f"imported from {Path(toolkit.__file__).parent.parent} (commit {commit_of(Path(args.repo))}). Largest |fp32 - bf16| score "
        f"difference: {diff:.3g}. 1-minute load average at the end: {load:.1f} (shared machine: compare CPU time)."
    )
    print(text + "\n\n" + notes)
    if not args.no_record:
        append_results("bench_evaluate.py: toolkit evaluate end to end on 48 kHz WAV, fp32 and bf16", text, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
