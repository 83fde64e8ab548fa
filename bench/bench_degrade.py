"""Time the degradation suite per type (pure DSP, no file I/O), and optionally the whole demo.

Input: synthetic speech made on the spot (Piper if installed, else espeak-ng; never shipped audio).
Reports milliseconds of processing per second of audio for each degradation type at each level,
and with --demo the wall time of each stage of ``toolkit demo`` at its defaults.

    python bench/bench_degrade.py [--clips 4] [--threads 2] [--demo] [--no-record]

Appends a dated block to bench/RESULTS.md (unless --no-record).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import append_results, table  # noqa: E402
from toolkit.degrade import DEGRADATIONS  # noqa: E402
from toolkit.degrade.suite import apply_degradation, clip_rng  # noqa: E402
from toolkit.synth import SENTENCES, synthesize  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--demo", action="store_true", help="also time `toolkit demo` at its defaults")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        clips = synthesize(Path(tmp) / "clean", SENTENCES[: args.clips])
        waves = [sf.read(c.path, dtype="float32")[0] for c in clips]
        seconds = sum(w.size for w in waves) / 16_000
        rows = []
        for name, spec in DEGRADATIONS.items():
            grid = spec.grid(args.levels)
            start = time.perf_counter()
            for i, x in enumerate(waves):
                others = [w for j, w in enumerate(waves) if j != i]
                for severity, value in enumerate(grid, start=1):
                    apply_degradation(
                        name, x, value, clip_rng(0, str(i), name, severity), babble_sources=others
                    )
            elapsed = time.perf_counter() - start
            rows.append([name, len(grid), f"{1000 * elapsed / (seconds * len(grid)):.1f}"])
        body = (
            f"{len(waves)} synthetic clips ({clips[0].engine}), {seconds:.1f} s of audio, {args.levels} levels.\n\n"
            + table(["type", "levels", "ms per s of audio per level"], rows)
        )
        if args.demo:
            from toolkit.demo import demo

            result = demo(Path(tmp) / "demo", progress=False, echo=None)
            stages = [[k, f"{v:.1f}"] for k, v in result.seconds.items()]
            stages.append(["total", f"{sum(result.seconds.values()):.1f}"])
            body += f"\n\n`toolkit demo` at its defaults (model: {result.model['kind']}):\n\n" + table(
                ["stage", "seconds"], stages
            )
    print(body)
    if not args.no_record:
        append_results(
            "Degradation suite (bench_degrade.py)",
            body,
            "Wall time on a machine that may be shared; the demo's model stage includes its own pretraining when "
            "no embedded default exists.",
        )
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
