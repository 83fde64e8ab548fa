"""`toolkit submit`: mistakes fail at submission with a clear message, and nothing is queued.

The checks that need SLURM run against the real local cluster (marked ``slurm``); the pure parts
(resource options, checkpoint selection) run anywhere.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401

from toolkit.cli import build_parser, main
from toolkit.errors import ToolkitError
from toolkit.models.checkpoint import save_model
from toolkit.models.wav2vec import build_preset
from toolkit.preemption import slurm_job_id
from toolkit.slurm.resources import FIELDS, Resources, resource_arguments, resources_from_arguments


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


def test_every_resource_option_round_trips_through_the_command_line() -> None:
    """A job that submits further jobs (periodic evaluation) passes the request on with
    resource_arguments: parsing them again gives back every field, none dropped."""
    assert set(FIELDS) == {f.name for f in dataclasses.fields(Resources)}
    full = Resources(nodes=3, gpus_per_node=2, tasks_per_node=2, cpus_per_task=5, mem="9G", time="1:00:00",
                     partition="gpu p", account="a", qos="q", constraint="a100", job_name="name",
                     extra=["--hold", "--comment=x y", "--exclusive"])
    for resources in (full, Resources()):
        for action in ("pretrain", "evaluate"):
            required = ["--config", "c.yaml", "--run-dir", "r"] if action == "pretrain" else [
                "--checkpoints", "r", "--output", "o"]
            args = build_parser("submit").parse_args(["submit", action, *required, *resource_arguments(resources)])
            assert resources_from_arguments(args) == resources
    assert all(getattr(full, f.name) != getattr(Resources(), f.name) for f in dataclasses.fields(Resources))


def lightning_like(path: Path, step: int) -> Path:
    """A checkpoint with the layout Lightning writes during pretraining (weights, step, toolkit header)."""
    from toolkit.checkpoints import atomic_torch_save
    from toolkit.models.checkpoint import checkpoint_header

    model = build_preset("tiny")
    atomic_torch_save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "global_step": step,
                       "toolkit": checkpoint_header(model.config, step)}, path)
    return path


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
    lightning_like(run / "step-000000002.ckpt", 2)
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


def assert_nothing_queued(cluster: SlurmCluster, folder: Path) -> None:
    """No job of this test is queued, and none was ever submitted: `toolkit submit` creates the
    `slurm/` log folder of a job (under the test's own folder) just before it runs sbatch."""
    assert cluster.jobs_under(folder) == {}
    assert not list(folder.rglob("slurm")), sorted(folder.rglob("slurm"))


def assert_refused(done: SimpleNamespace, *needles: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines and lines[-1].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]


@pytest.mark.slurm
def test_mistakes_fail_at_submission_and_queue_nothing(slurm_cluster: SlurmCluster, project: dict, submit) -> None:  # noqa: F811
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
            assert_nothing_queued(slurm_cluster, project["dir"])
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
    assert_nothing_queued(slurm_cluster, project["dir"])


@pytest.mark.slurm
def test_dry_run_prints_the_sbatch_command_and_queues_nothing(slurm_cluster: SlurmCluster, project: dict, submit) -> None:  # noqa: F811
    done = submit("pretrain", "--config", str(project["config"]), "--run-dir", str(project["run"]),
                  "--nodes", "2", "--time", "1:00:00", "--dry-run", "--", "--trainer.max_steps=3")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert re.search(r"sbatch --parsable --nodes=2 --ntasks-per-node=1 --time=1:00:00 --job-name=toolkit-pretrain "
                     r"--signal=SIGUSR1@300 --requeue --open-mode=append --output=\S+/run/slurm/%x-%j.out "
                     r"\S+/slurm/pretrain.sbatch --python \S+ -- --config \S+/pretrain.yaml --trainer.max_steps=3 "
                     r"--trainer.num_nodes=2 --trainer.devices=1 --trainer.default_root_dir=\S+/run --resume auto "
                     r"--trainer.callbacks\+=toolkit.preemption.SlurmPreemption$", line), line
    assert "resumes from" in done.stderr and "step-000000002.ckpt" in done.stderr
    assert_nothing_queued(slurm_cluster, project["dir"])


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
        # Pretraining that never succeeds takes its evaluation with it (nothing left pending forever).
        slurm_cluster.run(["scancel", pretrain])
        assert slurm_cluster.wait(chain, timeout=60)["JobState"] == "CANCELLED"
    finally:
        slurm_cluster.drain(project["dir"], timeout=60, cancel=True)


@pytest.mark.slurm
def test_periodic_chain_dry_run(slurm_cluster: SlurmCluster, project: dict, submit) -> None:  # noqa: F811
    done = submit("chain", "--config", str(project["config"]), "--run-dir", str(project["run"]),
                  "--eval-output", str(project["dir"] / "results"), "--every", "30", "--dry-run",
                  "--pretrain-arg=--trainer.max_steps=3", "--", "--dataset", f"csv:{project['csv']}")
    assert done.returncode == 0, done.stderr
    pretrain, chain = done.stdout.strip().splitlines()[-2:]
    assert "/slurm/pretrain.sbatch" in pretrain and " --trainer.max_steps=3 " in pretrain
    assert "--begin=now+30minutes" in chain and "/slurm/chain.sbatch" in chain
    assert "--every 30 --while-running PRETRAIN_JOB --" in chain
    assert_nothing_queued(slurm_cluster, project["dir"])


@pytest.mark.slurm
def test_every_option_survives_chaining_and_periodic_resubmission(
    slurm_cluster: SlurmCluster, project: dict, submit  # noqa: F811
) -> None:
    """`chain --every`: the pretraining job, the chain job, and what the chain job submits when it runs
    (the evaluation array and the next pass) all carry every option given, as SLURM records them."""
    out = project["dir"] / "results"
    tag = f"tag-{project['dir'].name}"
    done = submit(
        "chain", "--config", str(project["config"]), "--run-dir", str(project["run"]), "--eval-output", str(out),
        "--every", "1", "--nodes", "2", "--tasks-per-node", "1", "--cpus-per-task", "2", "--mem", "300M",
        "--time", "0:07:00", "--partition", "debug", "--account", "acct1", "--qos", "normal", "--constraint", "local",
        "--job-name", "pre-" + tag, "--sbatch-option=--hold", f"--sbatch-option=--comment={tag}",
        "--eval-cpus", "1", "--eval-mem", "200M", "--eval-time", "0:04:00", "--eval-parallel", "2",
        "--", "--dataset", f"csv:{project['csv']}", "--draws", "1", "--device", "cpu",
    )
    assert done.returncode == 0, done.stderr
    pretrain = re.search(r"pretraining job (\d+)", done.stdout).group(1)
    chain = re.search(r"evaluation job (\d+)", done.stdout).group(1)
    # (Without accounting, this cluster accepts --qos but does not record it: it is checked in the arguments.)
    shared = {"Partition": "debug", "Account": "acct1", "Comment": tag, "Reason": "JobHeldUser"}
    try:
        job = slurm_cluster.job(pretrain)
        assert {k: job[k] for k in shared} == shared, job
        assert (job["JobName"], job["NumNodes"].split("-")[0], job["NumTasks"], job["CPUs/Task"], job["MinMemoryNode"],
                job["TimeLimit"], job["Features"]) == ("pre-" + tag, "2", "2", "2", "300M", "00:07:00", "local"), job
        assert "--trainer.num_nodes=2 --trainer.devices=1 " in slurm_cluster.command(pretrain)

        first = slurm_cluster.job(chain)
        assert {k: first[k] for k in shared} == shared, first
        assert first["JobName"] == "toolkit-chain" and first["TimeLimit"] == "00:04:00"
        request = ("--cpus-per-task=1 --mem=200M --time=0:04:00 --partition=debug --account=acct1 --qos=normal "
                   f"--constraint=local --sbatch-option=--hold --sbatch-option=--comment={tag} --python ")
        first_command = slurm_cluster.command(chain)
        assert request in first_command and f"--parallel 2 --every 1 --while-running {pretrain} --" in first_command

        # Run the first pass now (pretraining stays held): it evaluates the run's checkpoint and queues
        # the next pass, both from the arguments it was given.
        slurm_cluster.run(["scontrol", "update", f"JobId={chain}", "StartTime=now"])
        slurm_cluster.run(["scontrol", "release", chain])
        finished = slurm_cluster.wait(chain, timeout=180)
        log = "\n".join(p.read_text() for p in (out / "slurm").glob("toolkit-chain-*.out"))
        assert finished["JobState"] == "COMPLETED", log[-3000:]
        array = re.search(r"evaluation array job (\d+)", log).group(1)
        again = re.search(r"next evaluation pass: job (\d+)", log).group(1)

        tasks = slurm_cluster.job(array)
        assert {k: tasks[k] for k in shared} == shared, tasks
        assert (tasks["JobName"], tasks["NumNodes"].split("-")[0], tasks["CPUs/Task"], tasks["MinMemoryNode"], tasks["TimeLimit"],
                tasks["Features"], tasks.get("ArrayTaskThrottle")) == (
                    "toolkit-evaluate", "1", "1", "200M", "00:04:00", "local", "2"), tasks

        following = slurm_cluster.job(again)
        assert {k: following[k] for k in shared} == shared, following
        assert following["JobName"] == "toolkit-chain" and following["TimeLimit"] == "00:04:00"
        assert slurm_cluster.command(again) == first_command  # the next pass asks for exactly the same
    finally:
        slurm_cluster.run(["scancel", *{j.split("_")[0] for j in slurm_cluster.jobs_under(project["dir"])}], check=False)
        slurm_cluster.drain(project["dir"], timeout=60)
