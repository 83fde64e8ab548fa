"""The sbatch argument lists: the one place that builds them, and the one place that runs them.

Every job ``toolkit submit`` queues is an argument list built here (nothing goes through a
shell), from a :class:`~toolkit.slurm.resources.Resources` request and a template in ``slurm/``:

- :func:`pretrain_command`: ``slurm/pretrain.sbatch`` with the complete ``toolkit pretrain``
  argument list (:func:`pretrain_arguments`); the template only runs it under ``srun``.
- :func:`evaluate_commands`: ``slurm/evaluate.sbatch`` as an array (one task per checkpoint) and
  its merge step.
- :func:`chain_command`: ``slurm/chain.sbatch``, a small job that runs ``toolkit submit evaluate``
  with :func:`evaluate_pass_arguments`, once after pretraining or again every N minutes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.slurm.resources import Resources, resource_arguments

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = Path(os.environ.get("TOOLKIT_SLURM_TEMPLATES", REPO / "slurm"))
PRETRAIN_JOB = "toolkit-pretrain"
EVALUATE_JOB = "toolkit-evaluate"
CHAIN_JOB = "toolkit-chain"
PREEMPTION_CALLBACK = "toolkit.preemption.SlurmPreemption"


def sbatch_executable() -> str:
    """The ``sbatch`` on PATH, or a clear error."""
    found = shutil.which("sbatch")
    if found is None:
        raise ToolkitError("sbatch", "not found on PATH: submit from a SLURM login node (or use --dry-run)")
    return found


def slurm_message(stderr: str) -> str:
    """SLURM's reason, from an sbatch error output (its error lines, or its last lines)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "failure" in line.lower()]
    return "; ".join(errors or lines[-2:]) or "no message"


def run_sbatch(command: Sequence[str]) -> str:
    """Run an sbatch argument list (with ``--parsable``) and return the job id."""
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ToolkitError("sbatch", f"submission failed: {slurm_message(done.stderr)}")
    job_id = done.stdout.strip().split(";")[0]
    if not re.fullmatch(r"\d+(_\d+)?", job_id):
        raise ToolkitError("sbatch", f"unexpected answer {done.stdout.strip()!r} (expected a job id)")
    return job_id


def template(name: str) -> Path:
    path = TEMPLATES / name
    if not path.is_file():
        raise ToolkitError(path, "SLURM template not found (set TOOLKIT_SLURM_TEMPLATES to the slurm/ folder)")
    return path


def python_path(python: str | None) -> str:
    return python or sys.executable


def _named(resources: Resources, default: str) -> Resources:
    return resources if resources.job_name else replace(resources, job_name=default)


# ---------------------------------------------------------------------------------------------- pretraining
def pretrain_arguments(
    configs: Sequence[str], run_dir: str | os.PathLike, resources: Resources, *, extra: Sequence[str] = (),
    resume: str = "auto",
) -> list[str]:
    """The whole ``toolkit pretrain`` argument list of a pretraining job (every rank runs it).

    ``--resume auto`` makes every (re)start continue from the run's newest complete checkpoint
    (:func:`toolkit.checkpoints.newest_in_run`); ``never`` starts afresh.
    """
    args: list[str] = []
    for config in configs:
        args += ["--config", str(Path(config).resolve())]
    return [
        *args, *extra, f"--trainer.num_nodes={resources.nodes}", f"--trainer.devices={resources.tasks()}",
        f"--trainer.default_root_dir={Path(run_dir).resolve()}", "--resume", "none" if resume in ("never", "none") else resume,
        f"--trainer.callbacks+={PREEMPTION_CALLBACK}",
    ]


def pretrain_command(
    configs: Sequence[str],
    run_dir: str | os.PathLike,
    resources: Resources,
    *,
    extra: Sequence[str] = (),
    resume: str = "auto",
    signal_seconds: int = 300,
    python: str | None = None,
    dependency: str | None = None,
) -> list[str]:
    """The sbatch argument list for :file:`slurm/pretrain.sbatch` (nothing is run)."""
    run_dir = Path(run_dir).resolve()
    return [
        sbatch_executable(),
        "--parsable",
        *_named(resources, PRETRAIN_JOB).options(),
        *([f"--dependency={dependency}"] if dependency else []),
        f"--signal=SIGUSR1@{signal_seconds}",
        "--requeue",
        "--open-mode=append",
        f"--output={run_dir / 'slurm' / '%x-%j.out'}",
        str(template("pretrain.sbatch")),
        "--python",
        python_path(python),
        "--",
        *pretrain_arguments(configs, run_dir, resources, extra=extra, resume=resume),
    ]


# ---------------------------------------------------------------------------------------------- evaluation
def list_file(output: str | os.PathLike, checkpoints: Sequence[str]) -> Path:
    """Where the list of ``checkpoints`` for an evaluation goes: ``OUTPUT/lists/<content hash>.txt``."""
    text = "".join(f"{p}\n" for p in checkpoints)
    return Path(output) / "lists" / f"{hashlib.sha1(text.encode()).hexdigest()[:12]}.txt"


def with_cache(extra: Sequence[str], output: str | os.PathLike) -> list[str]:
    """``extra`` plus ``--cache OUTPUT/cache`` unless it names a cache: the merge reads the array's scores."""
    if "--cache" in extra or "--no-cache" in extra or any(a.startswith("--cache=") for a in extra):
        return list(extra)
    return [*extra, "--cache", str(Path(output) / "cache")]


def evaluate_commands(
    tasks: Sequence[str],
    every: Sequence[str],
    output: str | os.PathLike,
    resources: Resources,
    *,
    extra: Sequence[str] = (),
    parallel: int | None = None,
    python: str | None = None,
    merge: bool = True,
    dependency: str | None = None,
) -> tuple[list[str] | None, list[str] | None]:
    """The sbatch argument lists for the evaluation array over ``tasks`` and the merge over ``every``.

    The checkpoint lists are files named by their content (:func:`list_file`, so a later
    submission never changes the list of a queued job). No array without ``tasks``; no merge
    without ``merge``. The merge waits for the array through ``--dependency=afterany:ARRAY``, a
    placeholder that :func:`toolkit.slurm.jobs.submit_evaluate` replaces with the array's id.
    """
    output = Path(output).resolve()
    extra = with_cache(extra, output)
    script = str(template("evaluate.sbatch"))
    named = _named(resources, EVALUATE_JOB)
    array = None
    if tasks:
        array = [
            sbatch_executable(), "--parsable", *named.options(),
            *([f"--dependency={dependency}"] if dependency else []),
            f"--array=0-{len(tasks) - 1}" + (f"%{parallel}" if parallel else ""),
            "--open-mode=append", f"--output={output / 'slurm' / '%x-%A_%a.out'}",
            script, "--list", str(list_file(output, tasks)), "--output", str(output),
            "--python", python_path(python), "--", *extra,
        ]
    merging = None
    if merge:
        merging = [
            sbatch_executable(), "--parsable", *replace(named, job_name=f"{named.job_name}-merge").options(),
            *(["--dependency=afterany:ARRAY"] if tasks else [f"--dependency={dependency}"] if dependency else []),
            "--open-mode=append", f"--output={output / 'slurm' / '%x-%j.out'}",
            script, "--merge", "--list", str(list_file(output, every)), "--output", str(output),
            "--python", python_path(python), "--", *extra,
        ]
    return array, merging


def evaluate_pass_arguments(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    resources: Resources,
    *,
    extra: Sequence[str] = (),
    parallel: int | None = None,
    every_minutes: int | None = None,
    while_running: str | None = None,
    python: str | None = None,
) -> list[str]:
    """The ``toolkit submit evaluate`` arguments a chain job runs: the whole request, every option."""
    out = ["--checkpoints", *(str(Path(s).resolve()) for s in sources), "--output", str(Path(output).resolve())]
    out += [*resource_arguments(resources), "--python", python_path(python)]
    if parallel:
        out += ["--parallel", str(parallel)]
    if every_minutes:
        out += ["--every", str(every_minutes), "--while-running", while_running or "PRETRAIN_JOB"]
    return [*out, "--", *extra]


def chain_command(
    pretrain_job: str,
    evaluate_args: Sequence[str],
    resources: Resources,
    *,
    every_minutes: int | None = None,
    python: str | None = None,
    log_dir: str | os.PathLike,
) -> list[str]:
    """The sbatch argument list for :file:`slurm/chain.sbatch` behind ``pretrain_job``.

    Once: ``--dependency=afterok:JOB`` (cancelled by SLURM if JOB fails). Periodically: ``--begin=now+MINUTES``; the evaluation
    queues the next pass while the pretraining job is in the queue. ``resources`` is the evaluation's
    request: the chain job itself is small (one task, no GPU, ``resources.time`` or 30 minutes) but
    keeps its partition, account, QOS and extra sbatch options.
    """
    small = Resources(
        time=resources.time or "0:30:00", partition=resources.partition, account=resources.account,
        qos=resources.qos, job_name=CHAIN_JOB, extra=list(resources.extra),
    )
    # Behind a pretraining job that fails, the dependency can never be met: the job is cancelled, not left pending.
    when = ([f"--begin=now+{every_minutes}minutes"] if every_minutes else
            [f"--dependency=afterok:{pretrain_job}", "--kill-on-invalid-dep=yes"])
    return [
        sbatch_executable(), "--parsable", *small.options(), *when, "--open-mode=append",
        f"--output={Path(log_dir).resolve() / 'slurm' / '%x-%j.out'}",
        str(template("chain.sbatch")), "--python", python_path(python), "--", *evaluate_args,
    ]
