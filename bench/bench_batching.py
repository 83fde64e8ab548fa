"""CPU scoring: each clip alone (what ``Wav2VecScorer.score`` does on CPU) against one padded batch.

Scoring each clip alone makes the scores bit-identical whatever ``--batch-seconds`` is (CPU kernels
sum in a size-dependent order); this measures what it costs. Synthetic clips of 1-5 s (seeded),
seeded random weights, 3 negative draws, CPU CPU-time and wall time per configuration.

    python bench/bench_batching.py [--clips 12] [--presets tiny,small,large] [--threads 1] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import append_results, commit, machine, table  # noqa: E402
from toolkit.batching import pad_right  # noqa: E402
from toolkit.models.wav2vec import build_preset  # noqa: E402
from toolkit.scoring.scorer import Wav2VecScorer  # noqa: E402


def clips(count: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        n = int(16000 * (1.0 + 4.0 * torch.rand(1, generator=g).item()))
        t = torch.arange(n) / 16000
        out.append(0.3 * torch.sin(2 * torch.pi * 180 * t) + 0.05 * torch.randn(n, generator=g))
    return out


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--presets", default="tiny,small,large")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    waves = clips(args.clips)
    wavs, lengths = pad_right(waves)
    keys = [f"clip{i}" for i in range(len(waves))]
    audio = float(lengths.sum()) / 16000
    rows = []
    for preset in args.presets.split(","):
        torch.manual_seed(0)
        scorer = Wav2VecScorer(build_preset(preset), draws=3, seed=0, device="cpu")
        scorer.score(wavs[:1, : int(lengths[0])], lengths[:1], keys[:1])  # warm-up
        alone, wall_a, cpu_a = timed(lambda s=scorer: s.score(wavs, lengths, keys))
        batched, wall_b, cpu_b = timed(lambda s=scorer: s.score_batch(wavs, lengths, keys))
        halves = [scorer.score(wavs[i : i + 2, : int(lengths[i : i + 2].max())], lengths[i : i + 2], keys[i : i + 2])
                  for i in range(0, len(keys), 2)]  # batches of two: must equal the whole batch exactly
        pairs = {m: torch.cat([h[m] for h in halves]) for m in alone}
        exact = all(torch.equal(alone[m], pairs[m]) for m in alone)
        diff = max(float(((alone[m] - batched[m]).abs() / alone[m].abs().clamp(min=1e-12)).max()) for m in alone)
        rows.append([preset, f"{wall_a:.2f}", f"{cpu_a:.2f}", f"{wall_b:.2f}", f"{cpu_b:.2f}",
                     "yes" if exact else "NO", f"{diff:.1e}"])
    text = table(["preset", "alone wall (s)", "alone CPU (s)", "one batch wall (s)", "one batch CPU (s)",
                  "alone: batches of 2 == 1 batch (bitwise)", "max rel. diff alone vs one batch"], rows)
    load = os.getloadavg()[0]
    notes = (f"{len(waves)} clips, {audio:.1f} s of audio (1-5 s each), "
             f"3 negative draws, all measures; one padded batch = the default 120 s budget. 1-minute load average "
             f"{load:.1f} (shared machine: CPU time is the steadier column).")
    print(text)
    print(f"Machine: {machine()}. Commit: {commit()}. {notes}")
    if not args.no_record:
        append_results("Scoring on CPU: each clip alone vs one padded batch (bench_batching.py)", text, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
