"""Kill pretraining (SIGTERM; SIGKILL in the middle of a checkpoint write) and resume it.

The reference run and the resumed runs execute in-process through ``toolkit.training.cli.main``;
only the runs that get killed are subprocesses (``python -m toolkit pretrain``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from training_support import REPO, make_shards, pretrain_command, read_metric, subprocess_env

from toolkit.checkpoints import SLEEP_ENV, is_complete_checkpoint, list_checkpoints
from toolkit.errors import DataError, ToolkitError
from toolkit.training.cli import main

MAX_STEPS = 40
EVERY = 8


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("resume-data"))


def args(shards: Path, root: Path) -> list[str]:
    return [
        "--config", str(REPO / "toolkit/configs/pretrain/tiny.yaml"),
        "--data.train_shards", str(shards),
        "--trainer.default_root_dir", str(root),
        "--trainer.max_steps", str(MAX_STEPS),
        "--checkpoint.every_n_steps", str(EVERY),
        "--checkpoint.keep_last", "2",
    ]


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> dict[int, float]:
    root = tmp_path_factory.mktemp("reference")
    assert main(args(shards, root)) == 0
    losses = read_metric(root, "train/loss")
    assert sorted(losses) == list(range(MAX_STEPS))
    return losses


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"training exited early ({proc.returncode}):\n{out[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for training to reach the kill point")


def start(shards: Path, root: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(pretrain_command(*args(shards, root)), cwd=REPO, env=subprocess_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def steps_of(root: Path) -> list[int]:
    return [int(p.name[5:14]) for p in list_checkpoints(root / "checkpoints")]


def assert_curve_matches(reference: dict[int, float], resumed: dict[int, float], first: int) -> None:
    steps = [s for s in range(first, MAX_STEPS)]
    assert all(s in resumed for s in steps), f"missing steps after resume: {sorted(set(steps) - set(resumed))}"
    ref = torch.tensor([reference[s] for s in steps])
    got = torch.tensor([resumed[s] for s in steps])
    print(f"\nresumed at {first}: max |loss - reference| = {(got - ref).abs().max().item():.2e}")
    # Same data position, same negatives (seeded by step), same Adam state: equal up to float noise.
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-3)


def test_sigterm_then_resume(shards, reference, tmp_path):
    proc = start(shards, tmp_path)
    wait_for(lambda: (tmp_path / "checkpoints" / f"step-{EVERY:09d}.ckpt").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 143, out[-2000:]
    assert "stopped by SIGTERM" in out
    saved = steps_of(tmp_path)
    stopped_at = max(saved)
    assert EVERY <= stopped_at < MAX_STEPS, saved
    ckpt = torch.load(tmp_path / "checkpoints" / f"step-{stopped_at:09d}.ckpt", weights_only=True)
    assert ckpt["global_step"] == stopped_at and ckpt["toolkit"]["step"] == stopped_at

    assert main(args(shards, tmp_path)) == 0  # --resume auto
    assert max(steps_of(tmp_path)) == MAX_STEPS
    final = torch.load(tmp_path / "checkpoints" / f"step-{MAX_STEPS:09d}.ckpt", weights_only=True)
    assert final["global_step"] == MAX_STEPS
    assert_curve_matches(reference, read_metric(tmp_path, "train/loss"), stopped_at)


def test_sigterm_to_the_whole_process_group_with_loader_workers(shards, tmp_path):
    """scancel signals every process of the job, DataLoader workers included: still a clean checkpoint."""
    command = pretrain_command(*args(shards, tmp_path), "--data.num_workers", "1")
    proc = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    wait_for(lambda: (tmp_path / "checkpoints" / f"step-{EVERY:09d}.ckpt").exists(), proc)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 143, out[-2000:]
    assert "stopped by SIGTERM" in out and "is killed by signal" not in out
    stopped_at = max(steps_of(tmp_path))
    assert torch.load(tmp_path / "checkpoints" / f"step-{stopped_at:09d}.ckpt", weights_only=True)["global_step"] == stopped_at


def test_sigkill_during_checkpoint_write_then_resume(shards, reference, tmp_path):
    second = 2 * EVERY
    proc = start(shards, tmp_path, **{SLEEP_ENV: f"120:step-{second:09d}"})
    ckpts = tmp_path / "checkpoints"
    wait_for(lambda: any(ckpts.glob(f".step-{second:09d}.ckpt.*.tmp")), proc)
    time.sleep(0.2)  # half of the bytes are on disk; the writer sleeps before the rest
    proc.kill()  # SIGKILL
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (ckpts / f"step-{second:09d}.ckpt").exists()
    previous = ckpts / f"step-{EVERY:09d}.ckpt"
    assert is_complete_checkpoint(previous)
    assert torch.load(previous, weights_only=True)["global_step"] == EVERY
    assert list(ckpts.glob("*.tmp")), "the interrupted write should have left its temporary file"

    assert main(args(shards, tmp_path)) == 0
    assert steps_of(tmp_path)[-1] == MAX_STEPS
    assert not list(ckpts.glob("*.tmp")), "stale temporary files are cleaned up"
    assert_curve_matches(reference, read_metric(tmp_path, "train/loss"), EVERY)


def test_the_stream_position_is_in_the_checkpoint_and_a_changed_stream_is_refused(shards, tmp_path, caplog):
    assert main([*args(shards, tmp_path), "--trainer.max_steps", str(EVERY)]) == 0
    ckpt = torch.load(tmp_path / "checkpoints" / f"step-{EVERY:09d}.ckpt", weights_only=True)
    state = ckpt["AudioShardDataModule"]
    progress = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]
    # Batches trained in the current epoch (the loader's prefetched batch is not counted).
    assert (state["epoch"], state["batches_consumed"]) == (ckpt["epoch"], progress + 1)
    assert state["stream"]["num_workers"] == 0 and state["stream"]["world_size"] == 1

    # Another worker count deals the shards differently: the position would be meaningless.
    with pytest.raises(DataError, match=r"cannot resume the data stream.*num_workers: 0 -> 1.*on_stream_mismatch"):
        main([*args(shards, tmp_path), "--data.num_workers", "1"])
    caplog.set_level("WARNING")
    assert main([*args(shards, tmp_path), "--data.num_workers", "1", "--trainer.max_steps", str(EVERY + 2),
                 "--data.on_stream_mismatch", "restart"]) == 0
    assert "restarts from its beginning" in caplog.text


def test_the_schedule_length_is_the_trainers_max_steps(shards, tmp_path):
    assert main([*args(shards, tmp_path), "--trainer.max_steps", "12", "--model.max_updates", "null"]) == 0
    ckpt = torch.load(tmp_path / "checkpoints" / f"step-{12:09d}.ckpt", weights_only=True)
    assert ckpt["lr_schedulers"][0]["max_updates"] == 12
    with pytest.raises(ToolkitError, match="trainer.max_steps"):
        main([*args(shards, tmp_path / "unbounded"), "--trainer.max_steps", "-1", "--model.max_updates", "null"])


def test_a_fresh_start_in_a_folder_with_checkpoints_is_refused(shards, tmp_path):
    assert main([*args(shards, tmp_path), "--trainer.max_steps", str(EVERY)]) == 0
    with pytest.raises(ToolkitError, match=r"already holds 1 checkpoint.*step-000000008\.ckpt.*--resume auto"):
        main([*args(shards, tmp_path), "--resume", "none"])
