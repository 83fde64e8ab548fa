"""Done-when: the small preset pretrains on real English speech shards on CPU and its loss falls."""

from __future__ import annotations

import time

import pytest
from training_support import REPO, read_metric

from toolkit.training.cli import main

STEPS = 20


def test_small_preset_loss_falls_on_shared_english(shared_data, tmp_path):
    from toolkit.data.manifest import build_manifest
    from toolkit.data.shards import write_shards

    source = shared_data / "speech" / "en" / "yourtts-reference"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    start = time.monotonic()
    build_manifest([source], tmp_path / "manifest.tsv", workers=2)
    write_shards(tmp_path / "manifest.tsv", tmp_path / "shards", storage="int16", max_count=10, workers=2)
    root = tmp_path / "run"
    code = main([
        "--config", str(REPO / "toolkit/configs/pretrain/small.yaml"),
        "--data.train_shards", str(tmp_path / "shards"),
        "--data.max_sample_size", "16000", "--data.max_tokens", "64000", "--data.num_workers", "0",
        "--model.lr", "0.001", "--model.warmup_updates", "5",
        "--trainer.max_steps", str(STEPS), "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
        "--logging.wandb", "disabled",
    ])
    elapsed = time.monotonic() - start
    assert code == 0
    loss = read_metric(root, "train/loss")
    assert sorted(loss) == list(range(STEPS))
    first = sum(loss[s] for s in range(3)) / 3
    last = sum(loss[s] for s in range(STEPS - 5, STEPS)) / 5
    print(f"\nsmall preset on {source.name}: loss {first:.3f} -> {last:.3f} in {STEPS} steps, {elapsed:.1f} s")
    assert last < 0.7 * first, (first, last)
    assert (root / "checkpoints" / f"step-{STEPS:09d}.ckpt").is_file()
