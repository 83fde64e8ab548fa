"""Two-process DDP pretraining on CPU (gloo), run as a subprocess (in-process DDP relaunches pytest)."""

from __future__ import annotations

import json

import torch
from training_support import REPO, make_shards, run_pretrain

from toolkit.checkpoints import list_checkpoints
from toolkit.models.checkpoint import load_model


def test_ddp_two_ranks_stay_in_sync_and_checkpoint_once(tmp_path):
    # 3 shards over 2 ranks: rank 1 runs out first and is kept in step with dummy batches.
    shards = make_shards(tmp_path / "data", clips=18, max_count=6)
    root = tmp_path / "run"
    result = run_pretrain(
        "--config", str(REPO / "toolkit/configs/pretrain/tiny.yaml"),
        "--data.train_shards", str(shards),
        "--trainer.default_root_dir", str(root),
        "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--trainer.max_steps", "12", "--checkpoint.every_n_steps", "6",
        "--trainer.callbacks+=training_support.ParamChecksum",
        f"--trainer.callbacks.out_dir={tmp_path / 'sums'}",
        timeout=240,
        PYTHONPATH=f"{REPO}:{REPO / 'tests'}",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / "sums" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 12
    assert ranks[0]["sha256"] == ranks[1]["sha256"], "parameters diverged between ranks"
    # Written once: only global rank 0's checkpoint I/O wrote, once per checkpoint.
    assert ranks[0]["writes"] == ["step-000000006.ckpt", "step-000000012.ckpt"]
    assert ranks[1]["writes"] == []
    files = list_checkpoints(root / "checkpoints")
    assert [p.name for p in files] == ["step-000000006.ckpt", "step-000000012.ckpt"]
    assert not list((root / "checkpoints").glob("*.tmp"))
    ckpt = torch.load(files[-1], weights_only=True)
    assert ckpt["global_step"] == 12
    model = load_model(files[-1])  # the Lightning checkpoint is a loadable toolkit checkpoint
    assert sum(p.numel() for p in model.parameters()) > 0
