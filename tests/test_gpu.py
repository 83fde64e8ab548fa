"""The CUDA paths: mixed-precision pretraining and NCCL DDP. `pytest -m gpu` on a GPU machine runs them
in a few minutes; without CUDA they skip (the padded CUDA scoring test lives with the scorer's tests)."""

from __future__ import annotations

import math
import socket
import subprocess

import pytest
import torch
from training_support import REPO, make_shards, pretrain_command, read_metric, subprocess_env

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _args(shards, root, *extra: str) -> list[str]:
    return ["--config", str(REPO / "toolkit/configs/pretrain/tiny.yaml"), "--data.train_shards", str(shards),
            "--trainer.default_root_dir", str(root), "--trainer.accelerator", "gpu", "--trainer.devices", "1",
            "--trainer.max_steps", "8", "--checkpoint.every_n_steps", "8", *extra]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("gpu-data"), clips=16)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_pretraining_has_finite_losses_and_weights(precision, shards, tmp_path):
    from toolkit.training.cli import main

    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    assert main(_args(shards, tmp_path, "--trainer.precision", precision)) == 0
    losses = read_metric(tmp_path, "train/loss")
    assert sorted(losses) == list(range(8)) and all(math.isfinite(v) for v in losses.values()), losses
    skipped = read_metric(tmp_path, "train/skipped_steps")
    assert max(skipped.values()) <= 2, f"{precision}: too many non-finite steps skipped: {skipped}"
    ckpt = torch.load(tmp_path / "checkpoints" / "step-000000008.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for k, v in ckpt["state_dict"].items() if v.is_floating_point())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_with_nccl(shards, tmp_path):
    """Two ranks, launched as two 'nodes' of one process each, on distinct GPUs when there are two and
    sharing GPU 0 otherwise (where NCCL allows it)."""
    if not torch.distributed.is_nccl_available():
        pytest.skip("this torch has no NCCL")
    count = torch.cuda.device_count()
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = subprocess_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(rank), LOCAL_RANK="0",
                             WORLD_SIZE="2", CUDA_VISIBLE_DEVICES=str(rank % count))
        command = pretrain_command(*_args(shards, tmp_path, "--trainer.num_nodes", "2", "--trainer.strategy", "ddp",
                                          "--trainer.precision", "bf16-mixed"))
        procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    if count == 1 and any("Duplicate GPU detected" in out for out in outputs):
        pytest.skip("NCCL refuses two ranks on one GPU (Duplicate GPU detected); needs two GPUs")
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]
    losses = read_metric(tmp_path, "train/loss")
    assert sorted(losses) == list(range(8)) and all(math.isfinite(v) for v in losses.values())
    ckpt = torch.load(tmp_path / "checkpoints" / "step-000000008.ckpt", weights_only=True)
    assert ckpt["global_step"] == 8
