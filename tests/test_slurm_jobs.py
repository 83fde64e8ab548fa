"""Pretraining and evaluation jobs on a real SLURM cluster (2 virtual nodes on localhost).

One pretraining run serves every test here: `toolkit submit pretrain` with the project's template,
2 nodes x 1 task, CPU DDP over gloo, on tiny shards built with `toolkit manifest` / `toolkit shard`.
It is preempted with SIGUSR1 once its first checkpoint exists, requeues itself, resumes and
finishes; then `toolkit submit evaluate` scores each of its checkpoints in an array job and merges
the results table. Writing the step-4 checkpoint is slowed down (the toolkit's test-only fault
injection), so the signal always lands before training could finish, however fast the machine.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401

from toolkit.checkpoints import SLEEP_ENV, checkpoint_info

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "toolkit" / "configs" / "pretrain" / "tiny.yaml"
MAX_STEPS = 6


def toolkit(cluster: SlurmCluster, *args: str, cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "toolkit", *args], cwd=cwd, env=cluster.env(**env),
                          capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"toolkit {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def tones(folder: Path, count: int, seconds: float, seed: int) -> list[Path]:
    """Noisy tones of different pitch and noise level (16 kHz mono WAV)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 16000)) / 16000
    paths = []
    for i in range(count):
        x = 0.3 * np.sin(2 * np.pi * (140 + 25 * i) * t) + (0.02 + 0.05 * (i % 4)) * rng.standard_normal(t.size)
        path = folder / f"clip{i:02d}.wav"
        sf.write(path, x.astype(np.float32), 16000)
        paths.append(path)
    return paths


def log_of(run_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((run_dir / "slurm").glob("*.out")))


@pytest.fixture(scope="module")
def preempted_run(slurm_cluster: SlurmCluster, tmp_path_factory) -> Iterator[dict]:  # noqa: F811
    if slurm_cluster.nodes < 2:
        pytest.skip(f"needs 2 nodes, the cluster has {slurm_cluster.nodes}")
    if not TINY.is_file():
        pytest.skip(f"{TINY} not found")
    work = tmp_path_factory.mktemp("slurm-run")
    tones(work / "audio", 16, 1.5, seed=0)
    toolkit(slurm_cluster, "manifest", "audio", "--output", "train.tsv", "--workers", "1", cwd=work)
    toolkit(slurm_cluster, "shard", "train.tsv", "--output", "shards", "--max-count", "8", "--workers", "1", cwd=work)
    run_dir = work / "run"
    started = time.monotonic()
    done = toolkit(
        slurm_cluster, "submit", "pretrain", "--config", str(TINY), "--run-dir", str(run_dir),
        "--nodes", "2", "--time", "00:10:00", "--job-name", "tiny-ddp",
        "--", "--data.train_shards", str(work / "shards"), f"--trainer.max_steps={MAX_STEPS}",
        "--checkpoint.every_n_steps=2", "--checkpoint.keep_last=10", cwd=work,
        **{SLEEP_ENV: "8:step-000000004"},  # the jobs inherit it: 8 s inside the step-4 write
    )
    job = re.search(r"pretraining job (\d+)", done.stdout).group(1)
    # Preempt once the first periodic checkpoint exists (training is under way on both ranks).
    first = run_dir / "checkpoints" / "step-000000002.ckpt"
    deadline = time.monotonic() + 150
    while not first.exists():
        state = slurm_cluster.job(job).get("JobState")
        assert state in ("PENDING", "RUNNING", "CONFIGURING"), f"job {job} {state} before its first checkpoint:\n{log_of(run_dir)}"
        assert time.monotonic() < deadline, f"no first checkpoint after 150 s:\n{log_of(run_dir)}"
        time.sleep(0.5)
    signalled = time.monotonic()
    slurm_cluster.run(["scancel", "--signal=USR1", job])
    record = slurm_cluster.wait(job, timeout=240)
    finished = time.monotonic()
    print(f"\npretraining job {job}: {finished - started:.0f} s in all, "
          f"{finished - signalled:.0f} s from SIGUSR1 to the end (requeue and resume included)")
    yield {"job": job, "record": record, "run_dir": run_dir, "work": work, "log": log_of(run_dir)}
    slurm_cluster.drain(work)  # leave no job of this module behind for the next one to see


def test_two_node_ddp_pretraining_completes_on_both_ranks(preempted_run: dict) -> None:
    record, log = preempted_run["record"], preempted_run["log"]
    assert record["JobState"] == "COMPLETED", log[-4000:]
    assert record["NumNodes"] == "2" and record["NodeList"] == "node[1-2]"
    # Lightning found SLURM's environment on both tasks: one process per node, ranks 0 and 1 of 2.
    assert "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2" in log
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert "distributed_backend=gloo" in log
    final = preempted_run["run_dir"] / "checkpoints" / f"step-{MAX_STEPS:09d}.ckpt"
    assert final.is_file(), sorted(p.name for p in final.parent.iterdir())
    assert checkpoint_info(final).step == MAX_STEPS


def test_preemption_checkpoints_requeues_and_resumes(preempted_run: dict) -> None:
    record, log, run_dir = preempted_run["record"], preempted_run["log"], preempted_run["run_dir"]
    assert int(record["Restarts"]) >= 1, log[-4000:]
    saved = re.search(r"preemption: SIGUSR1 -> checkpoint (\S+hpc_ckpt_(\d+)\.ckpt) \(step (\d+)\)", log)
    assert saved, log[-4000:]
    step = int(saved.group(3))
    assert 2 <= step < MAX_STEPS
    assert f"preemption: job {preempted_run['job']} requeued" in log
    # The restart resumed from the run's newest checkpoint (`--resume auto`): the preemption
    # checkpoint's step, the highest there was (from hpc_ckpt_* itself, or from a periodic checkpoint
    # of the same step written after it).
    first, restarted = log.split("job {} restart 1".format(preempted_run["job"]))
    assert "resuming from" not in first
    resumed = re.findall(r"resuming from (\S+)", restarted)
    assert len(resumed) == 1 and checkpoint_info(resumed[0]).step == step, (resumed, step)
    assert resumed[0] == saved.group(1) or Path(resumed[0]).name == f"step-{step:09d}.ckpt", resumed
    # The global step continued: the resumed run logged only steps after the checkpoint.
    versions = sorted((run_dir / "csv").glob("version_*/metrics.csv"))
    assert len(versions) >= 2, versions
    rows = list(csv.DictReader(versions[-1].open()))
    steps = [int(r["step"]) for r in rows if r.get("step")]
    assert steps and min(steps) >= step - 1, (step, steps[:5])
    assert max(steps) >= MAX_STEPS - 1  # the logged step is the global step before the update


def test_evaluation_array_over_the_checkpoints(preempted_run: dict, slurm_cluster: SlurmCluster) -> None:  # noqa: F811
    work, run_dir = preempted_run["work"], preempted_run["run_dir"]
    clips = tones(work / "mos", 6, 1.0, seed=1)
    (work / "mos.csv").write_text("path,mos,system\n" + "".join(
        f"{p},{1 + (i * 7) % 5},sys{i % 3}\n" for i, p in enumerate(clips)))
    out = work / "results"
    started = time.monotonic()
    done = toolkit(
        slurm_cluster, "submit", "evaluate", "--checkpoints", str(run_dir / "checkpoints"), "--output", str(out),
        "--time", "00:10:00", "--", "--dataset", f"csv:{work / 'mos.csv'}", "--measures", "entropy.mean,loss_bce",
        "--draws", "1", "--bootstrap", "20", "--no-plots", "--no-progress", "--wandb-mode", "disabled",
        "--device", "cpu", cwd=work,
    )
    array = re.search(r"evaluation array job (\d+)", done.stdout).group(1)
    merge = re.search(r"merge job (\d+)", done.stdout).group(1)
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*.ckpt"))
    tasks = slurm_cluster.tasks(array)
    slurm_cluster.wait(array, timeout=240)
    record = slurm_cluster.wait(merge, timeout=240)
    print(f"\nevaluation of {len(checkpoints)} checkpoints: {time.monotonic() - started:.0f} s")
    logs = "\n".join(p.read_text() for p in sorted((out / "slurm").glob("*.out")))
    assert record["JobState"] == "COMPLETED", logs[-4000:]
    assert len(tasks) >= 1 and all(t["JobState"] == "COMPLETED" for t in slurm_cluster.tasks(array)), logs[-4000:]
    assert f"afterany:{array}" in record.get("Dependency", "") or record["JobState"] == "COMPLETED"
    # One results folder per checkpoint from the array, and one merged table with every step.
    for checkpoint in checkpoints:
        assert (out / "checkpoints" / checkpoint.stem / "results.csv").is_file()
    rows = list(csv.DictReader((out / "results.csv").open()))
    steps = sorted({int(r["step"]) for r in rows})
    assert steps == sorted(int(c.stem.split("-")[1]) for c in checkpoints)
    assert {r["measure"] for r in rows} == {"entropy.mean", "loss_bce"}
    assert all(r["srcc"] not in ("", "nan") for r in rows if r["level"] == "utterance")
    # The merge scored nothing itself: every score came from the array tasks' shared cache.
    assert re.findall(r"(\d+) computed, (\d+) from cache", logs.split("merge job")[-1]) == [("0", "6")] * len(checkpoints)
