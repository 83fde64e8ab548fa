"""`toolkit submit`: mistakes fail at submission with a clear message, and nothing is queued.

The checks that need SLURM run against the real local cluster (marked ``slurm``); the pure parts
(resource options, checkpoint selection) run anywhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401

from toolkit.cli import main
from toolkit.errors import CheckpointError, ToolkitError
from toolkit.models.checkpoint import save_model
from toolkit.models.wav2vec import build_preset
from toolkit.preemption import slurm_job_id
from toolkit.submit import (
    Resources,
    is_complete_checkpoint,
    list_checkpoints,
    newest_checkpoint,
    result_name,
)


# ---------------------------------------------------------------------------------------------- pure parts
def test_resource_options_are_an_argument_list_without_defaults_invented() -> None:
    assert Resources().options() == ["--nodes=1", "--ntasks-per-node=1"]
    opts = Resources(nodes=2, gpus_per_node=4, cpus_per_task=8, time="2-00:00:00", partition="gpu p",
                     account="a;rm -rf /", extra=["--exclusive"]).options()
    assert opts == ["--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=8",
                    "--time=2-00:00:00", "--partition=gpu p", "--account=a;rm -rf /", "--exclusive"]
    with pytest.raises(ToolkitError, match="one process per GPU"):
        Resources(gpus_per_node=4, tasks_per_node=2).options()
    with pytest.raises(ToolkitError, match="at least 1"):
        Resources(nodes=0).options()
    with pytest.raises(ToolkitError, match="not an option"):
        Resources(extra=["exclusive"]).options()


def _lightning_like(path: Path, step: int) -> Path:
    """A small zip checkpoint with a toolkit header, as the trainer writes them."""
    model = build_preset("tiny")
    save_model(path, model, step=step)
    return path


def test_newest_checkpoint_skips_incomplete_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    old = _lightning_like(run / "checkpoints" / "step-000000002.ckpt", 2)
    hpc = _lightning_like(run / "hpc_ckpt_3.ckpt", 3)
    newest = run / "checkpoints" / "step-000000004.ckpt"
    newest.write_bytes(hpc.read_bytes()[: hpc.stat().st_size // 2])  # cut short, and written last
    (run / "checkpoints" / ".step-000000006.ckpt.123.tmp").write_bytes(b"partial")
    assert not is_complete_checkpoint(newest) and is_complete_checkpoint(hpc)
    assert newest_checkpoint(run) == hpc
    hpc.unlink()
    assert newest_checkpoint(run) == old
    assert newest_checkpoint(tmp_path / "absent") is None


def test_list_checkpoints_sorts_by_step_and_rejects_bad_files(tmp_path: Path) -> None:
    for step in (30, 10, 20):
        _lightning_like(tmp_path / f"step-{step:09d}.ckpt", step)
    _lightning_like(tmp_path / "hpc_ckpt_1.ckpt", 25)  # preemption copies repeat a step: left out
    infos = list_checkpoints([tmp_path])
    assert [i["step"] for i in infos] == [10, 20, 30]
    assert [result_name(i["path"]) for i in infos] == ["step-000000010", "step-000000020", "step-000000030"]
    (tmp_path / "step-000000040.ckpt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CheckpointError, match="step-000000040.ckpt"):
        list_checkpoints([tmp_path])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToolkitError, match="no checkpoints"):
        list_checkpoints([tmp_path / "empty"])


def test_requeue_job_id() -> None:
    assert slurm_job_id({"SLURM_JOB_ID": "42"}) == "42"
    assert slurm_job_id({"SLURM_JOB_ID": "43", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "3"}) == "40_3"
    assert slurm_job_id({"SLURM_JOB_ID": "1; rm -rf /"}) is None
    assert slurm_job_id({}) is None


# ---------------------------------------------------------------------------------------------- on the cluster
@pytest.fixture()
def project(tmp_path: Path) -> dict:
    """A config naming real shards and an init checkpoint, a run with one checkpoint, a MOS CSV."""
    import numpy as np
    import soundfile as sf

    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "shard-000000.tar").write_bytes(b"")
    init = tmp_path / "init.pt"
    save_model(init, build_preset("tiny"), step=0)
    config = tmp_path / "pretrain.yaml"
    config.write_text(f"model:\n  preset: tiny\n  init_from: {init}\ndata:\n  train_shards: {tmp_path / 'shards'}\n"
                      "trainer:\n  accelerator: cpu\n  max_steps: 4\n")
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    _lightning_like(run / "step-000000002.ckpt", 2)
    rows = ["path,mos"]
    for i in range(3):
        sf.write(tmp_path / f"c{i}.wav", np.full(8000, 0.1 * (i + 1), np.float32), 16000)
        rows.append(f"{tmp_path / f'c{i}.wav'},{i + 1}")
    (tmp_path / "mos.csv").write_text("\n".join(rows) + "\n")
    return {"dir": tmp_path, "config": config, "init": init, "run": tmp_path / "run", "csv": tmp_path / "mos.csv"}


@pytest.fixture()
def submit(slurm_cluster: SlurmCluster, capsys, monkeypatch):  # noqa: F811
    """Run `toolkit submit ARGS` through the real CLI entry point (in-process: imports once)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))

    def call(*args: str) -> SimpleNamespace:
        capsys.readouterr()
        try:
            code = main(["submit", *args])
        except SystemExit as exc:  # argparse errors
            code = exc.code
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return call


def queued(cluster: SlurmCluster) -> set[str]:
    return set(cluster.run(["squeue", "-h", "-o", "%i"]).stdout.split())


def assert_refused(done: SimpleNamespace, *needles: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines and lines[-1].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]


@pytest.mark.slurm
def test_mistakes_fail_at_submission_and_queue_nothing(slurm_cluster: SlurmCluster, project: dict, submit) -> None:  # noqa: F811
    before = queued(slurm_cluster)
    base = ["pretrain", "--config", str(project["config"]), "--run-dir", str(project["run"])]
    cases = {
        "missing config": (["pretrain", "--config", "nope.yaml", "--run-dir", "r"], ["nope.yaml", "config file not found"]),
        "missing checkpoint": ([*base, "--resume", str(project["dir"] / "gone.ckpt")], ["gone.ckpt", "file not found"]),
        "too many nodes": ([*base, "--nodes", str(slurm_cluster.nodes + 1)], ["SLURM refuses it", "Node count"]),
        "GPUs that do not exist": ([*base, "--gpus-per-node", "8"], ["SLURM refuses it"]),
        "unknown partition": ([*base, "--partition", "no-such-partition"], ["invalid partition"]),
        "malformed time": ([*base, "--time", "three days"], ["SLURM refuses it", "time"]),
        "evaluate: no checkpoints": (["evaluate", "--checkpoints", str(project["dir"] / "shards"), "--output",
                                     str(project["dir"] / "out"), "--", "--dataset", f"csv:{project['csv']}"],
                                    ["no checkpoints"]),
        "evaluate: missing dataset": (["evaluate", "--checkpoints", str(project["run"]), "--output",
                                       str(project["dir"] / "out"), "--", "--dataset", "csv:/no/such/mos.csv"],
                                      ["/no/such/mos.csv"]),
        "evaluate: unknown option": (["evaluate", "--checkpoints", str(project["run"]), "--output",
                                      str(project["dir"] / "out"), "--", "--dataset", f"csv:{project['csv']}",
                                      "--no-such-option"], ["--no-such-option"]),
    }
    for name, (args, needles) in cases.items():
        done = submit(*args)
        try:
            assert_refused(done, *needles)
            assert queued(slurm_cluster) == before
        except AssertionError as err:
            raise AssertionError(f"case '{name}': {err}") from None
    # Inputs named inside the config: a missing shard folder and a truncated init checkpoint.
    text = project["config"].read_text()
    project["config"].write_text(text.replace(str(project["dir"] / "shards"), str(project["dir"] / "no-shards")))
    assert_refused(submit(*base), "data.train_shards", "no-shards does not exist")
    # A key the pretraining CLI does not know, and a value of the wrong type.
    project["config"].write_text(text.replace("max_steps: 4", "max_step: 4"))
    assert_refused(submit(*base), "do not parse", "max_step")
    project["config"].write_text(text)
    assert_refused(submit(*base, "--", "--trainer.max_steps=four"), "trainer.max_steps", "four")
    data = project["init"].read_bytes()
    project["init"].write_bytes(data[: len(data) // 3])
    assert_refused(submit(*base), "init.pt", "truncated")
    assert queued(slurm_cluster) == before


@pytest.mark.slurm
def test_dry_run_prints_the_sbatch_command_and_queues_nothing(slurm_cluster: SlurmCluster, project: dict, submit) -> None:  # noqa: F811
    before = queued(slurm_cluster)
    done = submit("pretrain", "--config", str(project["config"]), "--run-dir", str(project["run"]),
                  "--nodes", "2", "--time", "1:00:00", "--dry-run", "--", "--trainer.max_steps=3")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert re.search(r"sbatch --parsable --nodes=2 --ntasks-per-node=1 --time=1:00:00 --signal=SIGUSR1@300 "
                     r"--requeue --open-mode=append --output=\S+/run/slurm/%x-%j.out \S+/slurm/pretrain.sbatch "
                     r"--run-dir \S+/run --python \S+ --resume auto -- --config \S+/pretrain.yaml "
                     r"--trainer.max_steps=3$", line), line
    assert "resumes from" in done.stderr and "step-000000002.ckpt" in done.stderr
    assert queued(slurm_cluster) == before


@pytest.mark.slurm
def test_chain_queues_evaluation_behind_pretraining(slurm_cluster: SlurmCluster, project: dict, submit) -> None:  # noqa: F811
    out = project["dir"] / "results"
    done = submit("chain", "--config", str(project["config"]), "--run-dir", str(project["run"]),
                  "--eval-output", str(out), "--time", "0:05:00", "--sbatch-option=--hold",
                  "--", "--dataset", f"csv:{project['csv']}", "--draws", "1")
    assert done.returncode == 0, done.stderr
    pretrain = re.search(r"pretraining job (\d+)", done.stdout).group(1)
    chain = re.search(r"evaluation job (\d+)", done.stdout).group(1)
    try:
        record = slurm_cluster.job(chain)
        assert record["Dependency"].startswith(f"afterok:{pretrain}"), record["Dependency"]
        assert record["JobName"] == "toolkit-chain"
        assert slurm_cluster.job(pretrain)["JobName"] == "toolkit-pretrain"
    finally:
        slurm_cluster.run(["scancel", pretrain, chain], check=False)


@pytest.mark.slurm
def test_periodic_chain_dry_run(slurm_cluster: SlurmCluster, project: dict, submit) -> None:  # noqa: F811
    before = queued(slurm_cluster)
    done = submit("chain", "--config", str(project["config"]), "--run-dir", str(project["run"]),
                  "--eval-output", str(project["dir"] / "results"), "--every", "30", "--dry-run",
                  "--pretrain-arg=--trainer.max_steps=3", "--", "--dataset", f"csv:{project['csv']}")
    assert done.returncode == 0, done.stderr
    pretrain, chain = done.stdout.strip().splitlines()[-2:]
    assert "/slurm/pretrain.sbatch" in pretrain and pretrain.endswith("--trainer.max_steps=3")
    assert "--begin=now+30minutes" in chain and "/slurm/chain.sbatch" in chain
    assert "--every 30 --while-running PRETRAIN_JOB --" in chain
    assert queued(slurm_cluster) == before
