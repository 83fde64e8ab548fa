"""Submit pretraining, evaluation and chained jobs: check everything, build the commands, queue them.

The Python side of ``toolkit submit`` (``from toolkit import submit_pretrain, submit_evaluate``).
Checks come from :mod:`toolkit.slurm.checks`, sbatch argument lists from :mod:`toolkit.slurm.sbatch`
and checkpoints from :mod:`toolkit.checkpoints`. Progress notes go to stderr; the functions return
job ids (``None`` on a dry run, which prints the sbatch commands instead).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from toolkit.checkpoints import SUFFIXES, CheckpointInfo, evaluation_checkpoints
from toolkit.errors import ToolkitError
from toolkit.slurm import checks, sbatch
from toolkit.slurm.resources import SHARED, Resources

RESULTS_CSV = "results.csv"


def result_name(checkpoint: str | os.PathLike) -> str:
    """Folder name for one checkpoint's results: its file name without suffix, made filesystem-safe."""
    stem = Path(checkpoint).name
    for suffix in SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", stem) or "checkpoint"


def has_results(output: str | os.PathLike, checkpoint: str | os.PathLike) -> bool:
    """True if ``checkpoint`` already has a results table under ``output``."""
    return (Path(output) / "checkpoints" / result_name(checkpoint) / RESULTS_CSV).is_file()


def job_active(job_id: str) -> bool:
    """True while ``job_id`` is pending, running or requeued (it is still in ``squeue``)."""
    done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60)
    return done.returncode == 0 and bool(done.stdout.strip())


def _queue(command: list[str], log_dir: str | os.PathLike, *, dry_run: bool) -> str | None:
    if dry_run:
        print(shlex.join(command))
        return None
    (Path(log_dir) / "slurm").mkdir(parents=True, exist_ok=True)
    return sbatch.run_sbatch(command)


# ---------------------------------------------------------------------------------------------- pretraining
def submit_pretrain(
    configs: Sequence[str],
    run_dir: str | os.PathLike,
    resources: Resources,
    *,
    extra: Sequence[str] = (),
    resume: str = "auto",
    signal_seconds: int = 300,
    python: str | None = None,
    dependency: str | None = None,
    dry_run: bool = False,
    test: bool = True,
) -> str | None:
    """Check everything, then submit the pretraining job. Returns the job id (``None`` on a dry run).

    ``resume``: ``auto`` (every start continues from the run's newest complete checkpoint),
    ``never``, or a Lightning ``.ckpt`` path.
    """
    if not configs:
        raise ToolkitError("--config", "at least one pretraining config is required")
    for config in configs:
        checks.check_config(config)
    resources.validate()
    checks.check_pretrain_arguments(sbatch.pretrain_arguments(configs, run_dir, resources, extra=extra, resume=resume))
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise ToolkitError(run_dir, "run directory exists and is not a directory")
    note = checks.check_resume(resume, run_dir)
    if note:
        print(note, file=sys.stderr)
    command = sbatch.pretrain_command(
        configs, run_dir, resources, extra=extra, resume=resume, signal_seconds=signal_seconds, python=python,
        dependency=dependency,
    )
    if test:
        checks.check_request(command)
    return _queue(command, run_dir, dry_run=dry_run)


# ---------------------------------------------------------------------------------------------- evaluation
def evaluation_list(sources: Sequence[str | os.PathLike]) -> list[CheckpointInfo]:
    """The checkpoints to evaluate (:func:`toolkit.checkpoints.evaluation_checkpoints`), each with its
    own results folder name."""
    infos = evaluation_checkpoints(sources)
    if not infos:
        raise ToolkitError(" ".join(map(str, sources)), "no checkpoints to evaluate")
    seen: dict[str, Path] = {}
    for info in infos:
        name = result_name(info.path)
        if name in seen and seen[name] != info.path:
            raise ToolkitError(info.path, f"has the same result name '{name}' as {seen[name]}")
        seen[name] = info.path
    return infos


def _steps(infos: list[CheckpointInfo]) -> str:
    steps = [str(i.step) for i in infos]
    return ", ".join(steps) if len(steps) <= 8 else f"{', '.join(steps[:4])}, ..., {', '.join(steps[-2:])}"


def submit_evaluate(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    resources: Resources,
    *,
    extra: Sequence[str] = (),
    parallel: int | None = None,
    python: str | None = None,
    only_new: bool = False,
    merge: bool = True,
    dependency: str | None = None,
    dry_run: bool = False,
    test: bool = True,
) -> tuple[str | None, str | None]:
    """Check and submit the evaluation of every checkpoint in ``sources``: ``(array id, merge id)``.

    With ``only_new``, checkpoints that already have results under ``output`` are skipped; the merge
    still covers all of them. Returns ``(None, None)`` on a dry run, and no array id when nothing is new.
    """
    infos = evaluation_list(sources)
    output = Path(output).resolve()
    if output.exists() and not output.is_dir():
        raise ToolkitError(output, "output exists and is not a directory")
    every = [str(info.path) for info in infos]
    todo = [info for info in infos if not (only_new and has_results(output, info.path))]
    checks.check_evaluate_arguments(every[0], extra, str(output / "checkpoints" / result_name(every[0])))
    resources.validate()
    if todo:
        print(f"{len(todo)} checkpoint(s) to evaluate (steps {_steps(todo)})", file=sys.stderr)
    else:
        print("no new checkpoints to evaluate", file=sys.stderr)
    tasks = [str(info.path) for info in todo]
    array, merging = sbatch.evaluate_commands(
        tasks, every, output, resources, extra=extra, parallel=parallel, python=python, merge=merge,
        dependency=dependency,
    )
    if test:
        checks.check_request(array or merging)
    if dry_run:
        for command in (array, merging):
            if command:
                print(shlex.join(command))
        return None, None
    from toolkit.io import write_text

    (output / "slurm").mkdir(parents=True, exist_ok=True)
    for listed in (tasks, every):
        if listed:
            write_text(sbatch.list_file(output, listed), "".join(f"{p}\n" for p in listed))
    write_text(output / "checkpoints.txt", "".join(f"{p}\n" for p in every))
    array_id = sbatch.run_sbatch(array) if array else None
    merge_id = None
    if merging:
        merging = [f"--dependency=afterany:{array_id}" if c == "--dependency=afterany:ARRAY" else c for c in merging]
        merge_id = sbatch.run_sbatch(merging)
    return array_id, merge_id


def evaluate_pass(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    resources: Resources,
    *,
    every_minutes: int,
    while_running: str,
    extra: Sequence[str] = (),
    parallel: int | None = None,
    python: str | None = None,
    merge: bool = True,
    dry_run: bool = False,
    test: bool = True,
) -> tuple[str | None, str | None, str | None]:
    """One pass of periodic evaluation: ``(array id, merge id, next pass's job id)``.

    While ``while_running`` is in the queue, the checkpoints without results are evaluated (no
    merge) and the next pass is queued ``every_minutes`` later with the same request, every option
    included (:func:`toolkit.slurm.sbatch.evaluate_pass_arguments`). Once it has left the queue,
    the final pass evaluates what is left and merges, and queues nothing more.
    """
    final = not job_active(while_running)
    try:
        array, merged = submit_evaluate(
            sources, output, resources, extra=extra, parallel=parallel, python=python, only_new=True,
            merge=final and merge, dry_run=dry_run, test=test,
        )
    except ToolkitError as err:
        if final or "no checkpoints" not in err.problem:
            raise
        print(f"no checkpoints yet ({err}); trying again in {every_minutes} min", file=sys.stderr)
        array = merged = None
    if final:
        return array, merged, None
    again = sbatch.chain_command(
        while_running,
        sbatch.evaluate_pass_arguments(
            sources, output, resources, extra=extra, parallel=parallel, every_minutes=every_minutes,
            while_running=while_running, python=python,
        ),
        resources, every_minutes=every_minutes, python=python, log_dir=output,
    )
    return array, merged, _queue(again, output, dry_run=dry_run)


# ---------------------------------------------------------------------------------------------- both
def evaluation_resources(resources: Resources, *, gpus: int = 0, cpus: int | None = None, mem: str | None = None,
                         time: str | None = None) -> Resources:
    """A chain's evaluation request: its own size, and the pretraining request's shared options
    (partition, account, QOS, constraint, extra sbatch options)."""
    shared = {name: getattr(resources, name) for name in SHARED}
    return replace(Resources(gpus_per_node=gpus, cpus_per_task=cpus, mem=mem, time=time), **shared)


def submit_chain(
    configs: Sequence[str],
    run_dir: str | os.PathLike,
    eval_output: str | os.PathLike,
    resources: Resources,
    eval_resources: Resources,
    *,
    pretrain_extra: Sequence[str] = (),
    evaluate_extra: Sequence[str] = (),
    resume: str = "auto",
    signal_seconds: int = 300,
    every_minutes: int | None = None,
    eval_parallel: int | None = None,
    python: str | None = None,
    dry_run: bool = False,
    test: bool = True,
) -> tuple[str | None, str | None]:
    """Submit pretraining, then the evaluation of its checkpoints behind it: ``(pretrain id, chain id)``.

    The evaluation options and request are checked before anything is queued, not when pretraining
    has finished.
    """
    eval_resources.validate()
    if evaluate_extra:
        checks.check_evaluate_arguments("CHECKPOINT", evaluate_extra, str(Path(eval_output) / "check"))
    if test:
        checks.check_request([sbatch.sbatch_executable(), *eval_resources.options(), "--wrap=true"],
                             "evaluation resource request")
    pretrain_job = submit_pretrain(
        configs, run_dir, resources, extra=pretrain_extra, resume=resume, signal_seconds=signal_seconds,
        python=python, dry_run=dry_run, test=test,
    )
    job = pretrain_job or "PRETRAIN_JOB"
    evaluate_args = sbatch.evaluate_pass_arguments(
        [run_dir], eval_output, eval_resources, extra=evaluate_extra, parallel=eval_parallel,
        every_minutes=every_minutes, while_running=job, python=python,
    )
    command = sbatch.chain_command(job, evaluate_args, eval_resources, every_minutes=every_minutes,
                                   python=python, log_dir=eval_output)
    return pretrain_job, _queue(command, eval_output, dry_run=dry_run)
