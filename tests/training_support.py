"""Helpers for the training tests: tiny synthetic shards and running ``toolkit pretrain`` in a subprocess."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RATE = 16_000


def synth_clip(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A learnable signal: a few harmonic 'syllables' with gliding pitch, plus a little noise."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    out = np.zeros(n)
    pos = 0
    while pos < n:
        dur = int(rng.uniform(0.08, 0.25) * RATE)
        f0 = rng.uniform(90, 260)
        glide = rng.uniform(-0.4, 0.4)
        seg = t[pos : pos + dur] - t[pos]
        f = f0 * (1 + glide * seg / max(seg[-1], 1e-3))
        phase = 2 * np.pi * np.cumsum(f) / RATE
        env = np.hanning(len(seg))
        out[pos : pos + dur] = env * sum(np.sin(h * phase) / h for h in (1, 2, 3, 4))
        pos += dur + int(rng.uniform(0.0, 0.05) * RATE)
    out += 0.01 * rng.standard_normal(n)
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def make_shards(root: Path, clips: int = 24, seconds: float = 1.5, seed: int = 0, max_count: int = 8) -> Path:
    """Write ``clips`` synthetic wav files, a manifest and shards under ``root``; return the shard folder."""
    import soundfile as sf

    from toolkit.data.manifest import build_manifest
    from toolkit.data.shards import write_shards

    rng = np.random.default_rng(seed)
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    for i in range(clips):
        sf.write(audio / f"clip{i:03d}.wav", synth_clip(rng, seconds * rng.uniform(0.7, 1.3)), RATE, subtype="PCM_16")
    build_manifest([audio], root / "manifest.tsv", domain="synthetic")
    shards = root / "shards"
    write_shards(root / "manifest.tsv", shards, max_count=max_count, storage="int16")
    return shards


def pretrain_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "toolkit", "pretrain", *args]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
    env.pop("MASTER_PORT", None)
    env.pop("MASTER_ADDR", None)
    env.update(extra)
    return env


def run_pretrain(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(pretrain_command(*args), cwd=REPO, env=subprocess_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def read_metric(root: Path, name: str) -> dict[int, float]:
    """``{step: value}`` of one metric over every CSV log version under ``root/csv`` (later versions win)."""
    values: dict[int, float] = {}
    versions = sorted((root / "csv").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    for version in versions:
        path = version / "metrics.csv"
        if not path.exists():
            continue
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get(name):
                    values[int(row["step"])] = float(row[name])
    return values


try:
    import pytorch_lightning as _pl
except ImportError:  # pragma: no cover
    _pl = None


class ParamChecksum(_pl.Callback if _pl else object):
    """Test callback: at the end of training each rank writes ``rank<N>.json`` with a SHA-256 of its
    parameters and the checkpoint files its own checkpoint I/O wrote (it wraps, then calls, the real one)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.writes: list[str] = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        io = trainer.strategy.checkpoint_io
        original = io.save_checkpoint

        def counted(checkpoint, path, storage_options=None):
            self.writes.append(os.path.basename(str(path)))
            return original(checkpoint, path, storage_options)

        io.save_checkpoint = counted

    def on_train_end(self, trainer, pl_module) -> None:
        import hashlib
        import json

        digest = hashlib.sha256()
        for name, tensor in sorted(pl_module.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "sha256": digest.hexdigest(),
                  "global_step": trainer.global_step, "writes": self.writes}
        (Path(self.out_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def read_wandb_history(run_dir: Path) -> list[dict]:
    """Every history row of a finished offline W&B run, read back from its ``run-*.wandb`` file.

    The file is W&B's transaction log: a 7-byte header (``:W&B``, magic, version), then LevelDB
    log records (4-byte CRC, 2-byte length, 1-byte type: full/first/middle/last) in 32 KiB blocks,
    each record a ``wandb_internal_pb2.Record`` protobuf. wandb 0.31 ships no Python reader for it.
    """
    import json
    import struct

    from wandb.proto import wandb_internal_pb2

    (path,) = Path(run_dir).glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    block, pos, pending, rows = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:  # zero padding
            continue
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows
