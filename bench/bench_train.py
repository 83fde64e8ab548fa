"""CPU pretraining throughput (audio seconds per second) and the cost of DDP on CPU.

Part 1, the training step alone: forward + backward + Adam of the ``tiny`` and ``small`` presets
on a fixed batch of B crops of T samples (synthetic harmonic audio), one process, ``--threads``
torch threads, at each of ``--precisions`` (fp32, and bf16 under CPU autocast). Median over steps
after a warm-up; the CPU-time rate (audio seconds per second of process CPU time) is given too,
because wall time on a shared machine is noisy. In the same run and on the same batch, fairseq's
own wav2vec model with the same weights (``bench_model.py``'s reference step) where fairseq is
installed.

Part 2, the whole pipeline: ``toolkit pretrain`` (Lightning, AudioShardDataModule on synthetic
int16 shards, logging, checkpointing at the end) with 1 process and with 2 DDP processes (gloo),
one thread each. Throughput is ``train/audio_sec_per_sec`` from the CSV log (summed over ranks),
median over the steps after the first 5. DDP efficiency = rate(2 procs) / (2 x rate(1 proc)).
Part 2 runs at the last of ``--precisions`` (``bf16`` = ``--trainer.precision bf16-mixed``).

    python bench/bench_train.py [--steps 30] [--threads 1] [--precisions fp32,bf16] [--no-ddp] [--no-record]

Appends a dated table to bench/RESULTS.md (unless --no-record).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from bench_model import autocast, fairseq_reference, train_step_fn  # noqa: E402
from common import append_results, table  # noqa: E402
from training_support import make_shards, read_metric, subprocess_env, synth_clip  # noqa: E402

from toolkit.training.module import Wav2VecPretraining  # noqa: E402

RATE = 16_000
BATCHES = {"tiny": (8, 40_000), "small": (8, 40_000), "medium": (8, 40_000), "large": (8, 40_000)}  # 8 x 2.5 s each


def timed(step, steps: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``step()`` over ``steps`` calls after 3 warm-up calls."""
    for _ in range(3):
        step()
    walls, cpus = [], []
    for _ in range(steps):
        w, c = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def step_throughput(preset: str, steps: int, precision: str = "fp32", code: str = "toolkit") -> dict:
    """One training step's throughput; ``code`` is ``toolkit`` (the training module's own step)
    or ``fairseq`` (fairseq's model with the same weights, bench_model.py's step)."""
    batch_size, crop = BATCHES[preset]
    rng = np.random.default_rng(0)
    audio = torch.from_numpy(np.stack([synth_clip(rng, crop / RATE)[:crop] for _ in range(batch_size)]))
    batch = {"audio": audio, "lengths": torch.full((batch_size,), crop)}
    torch.manual_seed(0)
    module = Wav2VecPretraining(preset=preset, lr=5e-4, warmup_updates=10, max_updates=1000)
    if code == "fairseq":
        reference = fairseq_reference(module.model)
        if reference is None:
            return {}
        step = train_step_fn(reference, True, audio, "cpu", precision)
    else:
        optimizer = torch.optim.Adam(module.model.parameters(), lr=5e-4)

        def step() -> None:
            with autocast("cpu", precision):
                out = module.compute(batch)
            optimizer.zero_grad()
            (out["loss_sum"].float() / out["sample_size"]).backward()
            optimizer.step()

    wall, cpu = timed(step, steps)
    seconds = batch_size * crop / RATE
    return {"preset": preset, "code": code, "precision": precision,
            "params": sum(p.numel() for p in module.model.parameters()),
            "batch": f"{batch_size} x {crop / RATE:.1f} s", "step_s": wall,
            "wall_rate": seconds / wall, "cpu_rate": seconds / cpu}


def pipeline_throughput(preset: str, devices: int, shards: Path, steps: int, work: Path,
                        precision: str = "fp32") -> dict:
    root = work / f"{preset}-{devices}"
    batch_size, crop = BATCHES[preset]
    args = [sys.executable, "-m", "toolkit", "pretrain", "--config", str(REPO / "toolkit/configs/pretrain/tiny.yaml"),
            "--model.preset", preset, "--data.train_shards", str(shards), "--data.max_sample_size", str(crop),
            "--data.min_sample_size", str(crop // 2), "--data.max_tokens", str(batch_size * crop),
            "--data.num_workers", "0", "--trainer.max_steps", str(steps), "--trainer.devices", str(devices),
            "--trainer.strategy", "ddp" if devices > 1 else "auto", "--trainer.default_root_dir", str(root),
            "--checkpoint.every_n_steps", "0",
            "--trainer.precision", "bf16-mixed" if precision == "bf16" else "32-true"]
    start = time.perf_counter()
    result = subprocess.run(args, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    rates = read_metric(root, "train/audio_sec_per_sec")
    steady = [v for s, v in sorted(rates.items()) if s >= 5]
    return {"preset": preset, "procs": devices, "rate": statistics.median(steady), "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precisions", default="fp32", help="comma-separated: fp32,bf16")
    parser.add_argument("--presets", default="tiny,small", help="comma-separated presets for part 1")
    parser.add_argument("--no-ddp", action="store_true", help="skip part 2")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]

    precisions = args.precisions.split(",")
    rows = []
    for preset in args.presets.split(","):
        for precision in precisions:
            base = None
            for code in ("fairseq", "toolkit"):
                r = step_throughput(preset, args.steps, precision, code)
                if not r:
                    continue
                speed = "" if base is None else f"{r['wall_rate'] / base:.2f}x fairseq"
                base = r["wall_rate"] if code == "fairseq" else base
                rows.append([r["preset"], f"{r['params']:,}", r["batch"], precision, code, f"{r['step_s']:.3f}",
                             f"{r['wall_rate']:.1f}", f"{r['cpu_rate']:.1f}", speed])
    part1 = table(["preset", "parameters", "batch", "precision", "code", "step (s)", "audio-s/s (wall)",
                   "audio-s/s (CPU time)", "toolkit vs fairseq (wall)"], rows)
    print(part1)
    body = (f"Training step alone (forward + backward + Adam, {args.threads} thread(s); bf16 = CPU autocast; "
            f"fairseq = its own wav2vec model, same weights and batch):\n\n{part1}")

    if not args.no_ddp:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            shards = make_shards(work / "data", clips=48, seconds=4.0, max_count=12)
            for preset in ("tiny", "small"):
                one = pipeline_throughput(preset, 1, shards, args.steps, work, precisions[-1])
                two = pipeline_throughput(preset, 2, shards, args.steps, work, precisions[-1])
                eff = two["rate"] / (2 * one["rate"])
                rows.append([preset, f"{one['rate']:.1f}", f"{two['rate']:.1f}", f"{eff:.0%}",
                             f"{one['wall']:.0f} / {two['wall']:.0f}"])
        part2 = table(["preset", "1 proc audio-s/s", "2 DDP procs audio-s/s", "DDP efficiency",
                       f"wall for {args.steps} steps incl. start-up (s), 1 / 2"], rows)
        print(part2)
        body += (f"\n\nWhole pipeline at {precisions[-1]} (`toolkit pretrain`: Lightning + shard loader, 1 thread per process, "
                 f"{args.steps} steps, median after step 5; 2 procs = DDP over gloo):\n\n{part2}")
    notes = (f"1-minute load average at the start: {load:.1f} on {os.cpu_count()} cores (other jobs share this "
             "machine; wall-time rates are lower bounds, the CPU-time rate is steadier).")
    print(notes)
    if not args.no_record:
        append_results("Pretraining throughput on CPU (bench_train.py)", body, notes)


if __name__ == "__main__":
    main()
