"""Non-finite losses through the real `toolkit pretrain`: a shard whose audio went bad (NaN samples,
e.g. from another tool or bit rot) makes those steps' losses NaN; each such step is skipped (weights
and Adam untouched), counted in ``train/skipped_steps`` and in the checkpoint, and training goes on.

(The module-level test in test_training_module.py checks the skipped update in detail.)
"""

from __future__ import annotations

import io
import math
import tarfile
from pathlib import Path

import numpy as np
import torch
from reliability_support import REPO, make_clips
from training_support import read_metric

from toolkit.cli import main
from toolkit.data.manifest import build_manifest
from toolkit.data.shards import write_shards
from toolkit.models.checkpoint import safe_torch_load


def poison_first_utterance(shard: Path) -> str:
    """Overwrite the float32 audio of the shard's first utterance with NaN (same size); its key."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    target = next(m.name for m, _ in members if m.name.endswith(".f32"))
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            if member.name == target:
                data = np.full(len(data) // 4, np.nan, dtype="<f4").tobytes()
            tar.addfile(member, io.BytesIO(data))
    return target.rsplit(".", 1)[0]


def test_nan_audio_steps_are_skipped_and_counted(tmp_path, capsys, caplog):
    make_clips(tmp_path / "clips", 8, seconds=(0.9, 1.0))
    build_manifest([tmp_path / "clips"], tmp_path / "m.tsv", domain="test")
    shards = tmp_path / "shards"
    write_shards(tmp_path / "m.tsv", shards, max_count=8, storage="float32")
    poison_first_utterance(next(shards.glob("shard-*.tar")))

    root = tmp_path / "run"
    code = main(["pretrain", "--config", str(REPO / "toolkit/configs/pretrain/tiny.yaml"),
                 "--data.train_shards", str(shards), "--trainer.default_root_dir", str(root),
                 "--trainer.max_steps", "4", "--checkpoint.every_n_steps", "4", "--logging.wandb", "disabled"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    losses = read_metric(root, "train/loss")
    skipped = read_metric(root, "train/skipped_steps")
    assert sorted(losses) == [0, 1, 2, 3]
    bad_steps = [step for step, loss in sorted(losses.items()) if not math.isfinite(loss)]
    assert 1 <= len(bad_steps) < 4, losses  # the poisoned clip is in some batches, not all
    assert skipped[3] == len(bad_steps)  # every non-finite step counted, and only those
    for step in bad_steps:
        assert f"step {step}: non-finite loss or gradient, update skipped" in caplog.text
    ckpt = safe_torch_load(root / "checkpoints" / "step-000000004.ckpt")
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())
    assert ckpt["global_step"] == 4
    counted = [v for v in ckpt.values() if isinstance(v, dict) and "skipped_steps" in v]
    assert counted and counted[0]["skipped_steps"] == len(bad_steps)
