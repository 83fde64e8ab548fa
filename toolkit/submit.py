"""Submit pretraining and evaluation jobs to SLURM, after checking everything that can be checked first.

A mistake should fail here, in seconds, and not in the queue hours later. Before anything is queued,
``toolkit submit`` checks that the config files exist and parse, that every input path they name
exists, that checkpoints (to continue from, or to evaluate) are complete and readable, that the
evaluation options parse, and that SLURM accepts the resource request (``sbatch --test-only``).
Jobs are built from the templates in ``slurm/`` as argument lists (nothing goes through a shell) and
the job ids are printed. ``--dry-run`` prints the sbatch commands instead of running them.

Examples::

    # 2 nodes x 4 GPUs, preemptible, resumes by itself after requeue:
    toolkit submit pretrain --config recipes/french/pretrain.yaml --run-dir runs/french \\
        --nodes 2 --gpus-per-node 4 --cpus-per-task 8 --partition gpu --account myproj --time 2-00:00:00

    # one array task per checkpoint of a run, then a merged results table:
    toolkit submit evaluate --checkpoints runs/french --output results/french --gpus-per-node 1 --time 2:00:00 \\
        -- --dataset vmc2023-track1 /data/vmc2023

    # both, the evaluation queued behind pretraining (add --every 120 to evaluate every 2 hours):
    toolkit submit chain --config recipes/french/pretrain.yaml --run-dir runs/french \\
        --eval-output results/french --nodes 2 --gpus-per-node 4 --time 2-00:00:00 \\
        -- --dataset vmc2023-track1 /data/vmc2023
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import CheckpointError, ToolkitError

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = Path(os.environ.get("TOOLKIT_SLURM_TEMPLATES", REPO / "slurm"))
CHECKPOINT_SUFFIXES = (".ckpt", ".pt")
RESULTS_CSV = "results.csv"

# Config keys whose values are inputs that must exist before the job starts (matched on the last key
# component, case-insensitively). Outputs (run dirs, log dirs) are created by the job and not checked.
_INPUT_KEY = re.compile(r"(shard|manifest|init|checkpoint|ckpt|pretrained|heldout|mos_set|data_dir|train_dir|valid_dir)")
_OUTPUT_KEY = re.compile(r"(root_dir|output|save_dir|log_dir|dirpath|cache)")


# ---------------------------------------------------------------------------------------------- resources
@dataclass
class Resources:
    """A SLURM resource request. ``None`` leaves the cluster's default; nothing is hard-coded.

    ``tasks_per_node`` defaults to ``gpus_per_node`` (one process per GPU), or 1 without GPUs.
    ``extra`` holds further sbatch options, each one list item (``"--reservation=r1"``).
    """

    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    job_name: str | None = None
    extra: list[str] = field(default_factory=list)

    def tasks(self) -> int:
        return self.tasks_per_node or max(self.gpus_per_node, 1)

    def options(self) -> list[str]:
        """The sbatch options for this request, as a list of arguments."""
        if self.nodes < 1:
            raise ToolkitError("--nodes", f"must be at least 1, got {self.nodes}")
        if self.gpus_per_node < 0:
            raise ToolkitError("--gpus-per-node", f"must be 0 or more, got {self.gpus_per_node}")
        if self.gpus_per_node and self.tasks_per_node and self.tasks_per_node != self.gpus_per_node:
            raise ToolkitError(
                "--tasks-per-node",
                f"{self.tasks_per_node} tasks for {self.gpus_per_node} GPUs per node: Lightning runs one "
                "process per GPU, so they must be equal",
            )
        opts = [f"--nodes={self.nodes}", f"--ntasks-per-node={self.tasks()}"]
        if self.gpus_per_node:
            opts.append(f"--gpus-per-node={self.gpus_per_node}")
        for flag, value in (
            ("--cpus-per-task", self.cpus_per_task),
            ("--mem", self.mem),
            ("--time", self.time),
            ("--partition", self.partition),
            ("--account", self.account),
            ("--qos", self.qos),
            ("--constraint", self.constraint),
            ("--job-name", self.job_name),
        ):
            if value is not None:
                opts.append(f"{flag}={value}")
        for option in self.extra:
            if not option.startswith("-"):
                raise ToolkitError("--sbatch-option", f"'{option}' is not an option (expected --name=value)")
            opts.append(option)
        return opts


# ---------------------------------------------------------------------------------------------- sbatch
def sbatch_executable() -> str:
    """The ``sbatch`` on PATH, or a clear error."""
    found = shutil.which("sbatch")
    if found is None:
        raise ToolkitError("sbatch", "not found on PATH: submit from a SLURM login node (or use --dry-run)")
    return found


def _slurm_message(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "failure" in line.lower()]
    return "; ".join(errors or lines[-2:]) or "no message"


def check_request(command: Sequence[str], what: str = "resource request") -> str:
    """Ask SLURM whether it would accept ``command`` (an sbatch argument list), without queuing it.

    Runs the same command with ``--test-only`` and returns SLURM's answer (when and where it would
    start). Raises :class:`ToolkitError` with SLURM's reason when it refuses (no such partition or
    account, more nodes/CPUs/GPUs/memory than exist, a malformed time...).
    """
    argv = [command[0], "--test-only", *[a for a in command[1:] if a != "--parsable"]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ToolkitError(what, f"SLURM refuses it: {_slurm_message(done.stderr)}")
    return done.stderr.strip()


def run_sbatch(command: Sequence[str]) -> str:
    """Run an sbatch argument list (with ``--parsable``) and return the job id."""
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ToolkitError("sbatch", f"submission failed: {_slurm_message(done.stderr)}")
    job_id = done.stdout.strip().split(";")[0]
    if not re.fullmatch(r"\d+(_\d+)?", job_id):
        raise ToolkitError("sbatch", f"unexpected answer {done.stdout.strip()!r} (expected a job id)")
    return job_id


def _template(name: str) -> Path:
    path = TEMPLATES / name
    if not path.is_file():
        raise ToolkitError(path, "SLURM template not found (set TOOLKIT_SLURM_TEMPLATES to the slurm/ folder)")
    return path


# ---------------------------------------------------------------------------------------------- checkpoints
def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """True if ``path`` is a whole torch zip checkpoint: readable central directory and intact CRCs.

    Checkpoints are written to a temporary name and renamed, so a partial file normally never has a
    checkpoint's name; this also catches copies cut short and files truncated by a full disk.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(name.endswith("data.pkl") for name in names):
                return False
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def _candidates(folder: Path) -> list[Path]:
    return [
        p
        for p in folder.rglob("*")
        if p.suffix in CHECKPOINT_SUFFIXES and p.is_file() and not p.name.startswith(".") and ".tmp" not in p.name
    ]


def newest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete training checkpoint (``*.ckpt``) under ``run_dir``, or ``None``.

    Lightning's preemption checkpoints (``hpc_ckpt_N.ckpt``) and periodic ones are both candidates;
    the newest by modification time that passes :func:`is_complete_checkpoint` wins.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    found = sorted(
        (p for p in _candidates(run_dir) if p.suffix == ".ckpt"),
        key=lambda p: (p.stat().st_mtime_ns, p.name),
        reverse=True,
    )
    for path in found:
        if is_complete_checkpoint(path):
            return path
        print(f"warning: {path}: incomplete checkpoint, skipped", file=sys.stderr)
    return None


def checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint's header without loading its weights into memory.

    Returns ``{"path", "kind" (toolkit|lightning|fairseq), "step"}``. Raises :class:`CheckpointError`
    (one line, naming the file) for a missing, truncated, unsafe or non-wav2vec file.
    """
    import torch

    from toolkit.models.checkpoint import ALLOWED_GLOBALS, describe, safe_torch_load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found" if not path.exists() else "not a file")
    obj = None
    if zipfile.is_zipfile(path) and is_complete_checkpoint(path):
        try:  # memory-mapped: the header is read, the tensors are not
            with torch.serialization.safe_globals(ALLOWED_GLOBALS):
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - fall back to the loader that explains the problem
            obj = None
    if obj is None:
        obj = safe_torch_load(path)
    kind = describe(obj)
    if kind == "toolkit":
        step = obj.get("step")
    elif kind == "lightning":
        step = obj["toolkit"].get("step", obj.get("global_step"))
        if step is None:
            step = obj.get("global_step")
    elif kind == "fairseq":
        step = (obj.get("optimizer_history") or [{}])[-1].get("num_updates") if isinstance(obj, dict) else None
    else:
        keys = ", ".join(sorted(map(str, obj))[:6]) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(path, f"not a wav2vec checkpoint (top-level keys: {keys})")
    return {"path": str(path), "kind": kind, "step": None if step is None else int(step)}


def list_checkpoints(sources: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Checkpoints named by ``sources`` (files, or run folders searched recursively), sorted by step.

    Every one is checked with :func:`checkpoint_info`. Lightning's ``hpc_ckpt_*`` preemption files and
    ``last*.ckpt`` duplicates are left out of folders (they repeat a step); name them to include them.
    """
    infos: list[dict[str, Any]] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            files = [
                p
                for p in _candidates(source)
                if not p.name.startswith("hpc_ckpt_") and not p.stem.startswith("last")
            ]
            if not files:
                raise ToolkitError(source, "no checkpoints (*.ckpt, *.pt) in this folder")
            infos.extend(checkpoint_info(p) for p in sorted(files))
        elif source.exists():
            infos.append(checkpoint_info(source))
        else:
            raise CheckpointError(source, "not found")
    seen: dict[str, str] = {}
    for info in infos:
        name = result_name(info["path"])
        if name in seen and seen[name] != info["path"]:
            raise ToolkitError(info["path"], f"has the same result name '{name}' as {seen[name]}")
        seen[name] = info["path"]
    return sorted(infos, key=lambda i: (i["step"] is None, i["step"] or 0, i["path"]))


def result_name(checkpoint: str | os.PathLike) -> str:
    """Folder name for one checkpoint's results: its file name without suffix, made filesystem-safe."""
    stem = Path(checkpoint).name
    for suffix in CHECKPOINT_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", stem) or "checkpoint"


# ---------------------------------------------------------------------------------------------- configs
def _expand(value: str) -> list[str]:
    if "{" in value and ".." in value:
        try:
            from braceexpand import braceexpand

            return list(braceexpand(value))
        except ImportError:
            return [value]
    return [value]


def _walk(node: Any, keys: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*keys, str(key)))
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value, keys)
    else:
        yield keys, node


def check_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a YAML config safely and check the input paths it names; return the parsed mapping.

    Input paths are values under keys that look like inputs (shards, manifest, init/checkpoint,
    held-out MOS set, data folders); relative ones are taken from the current directory, as the job
    will. Checkpoints among them must be complete and readable (:func:`checkpoint_info`).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ToolkitError(path, "config file not found")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ToolkitError(path, f"not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    except UnicodeDecodeError:
        raise ToolkitError(path, "not a text file") from None
    if not isinstance(config, dict):
        raise ToolkitError(path, f"expected a mapping of options, got {type(config).__name__}")
    for keys, value in _walk(config):
        if not keys or not isinstance(value, str) or not value:
            continue
        last = keys[-1].lower()
        if not _INPUT_KEY.search(last) or _OUTPUT_KEY.search(last) or "://" in value:
            continue
        for item in _expand(value):
            target = Path(item).expanduser()
            if not target.exists():
                raise ToolkitError(path, f"{'.'.join(keys)}: {item} does not exist")
            if target.is_file() and target.suffix in CHECKPOINT_SUFFIXES:
                checkpoint_info(target)
    return config


def job_pretrain_arguments(
    configs: Sequence[str], extra: Sequence[str], run_dir: str | os.PathLike, resources: Resources, resume: str
) -> list[str]:
    """The arguments ``slurm/pretrain.sbatch`` gives ``toolkit pretrain`` (kept in step with it)."""
    args: list[str] = []
    for config in configs:
        args += ["--config", str(Path(config).resolve())]
    return [
        *args, *extra, f"--trainer.num_nodes={resources.nodes}", f"--trainer.devices={resources.tasks()}",
        f"--trainer.default_root_dir={Path(run_dir).resolve()}", "--resume", "none" if resume == "auto" else resume,
        "--trainer.callbacks+=toolkit.preemption.SlurmPreemption",
    ]


def check_pretrain_arguments(args: Sequence[str]) -> None:
    """Parse ``toolkit pretrain ARGS`` with the pretraining CLI itself, without building anything.

    Unknown keys, wrong types and unimportable class paths in the configs or the overrides fail here
    with jsonargparse's message, instead of when the job starts.
    """
    from jsonargparse import ArgumentError

    from toolkit.training import cli as training_cli

    class ParseOnly(training_cli._cli_class()):
        def instantiate_classes(self) -> None:  # parse and type-check only: no model, data or trainer
            pass

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ParseOnly(list(args))
    except ArgumentError as err:
        text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise ToolkitError("toolkit pretrain", f"the job's arguments do not parse: {text[:400]}") from None


def check_evaluate_arguments(checkpoint: str, extra: Sequence[str], output: str) -> None:
    """Parse ``toolkit evaluate CHECKPOINT EXTRA --output OUTPUT`` with the evaluator's own parser.

    Unknown options, missing values and (where the evaluator checks them at parse time) missing
    dataset paths fail now with the evaluator's message.
    """
    import importlib

    evaluator = importlib.import_module("toolkit.scoring.evaluate")
    parser = argparse.ArgumentParser(prog="toolkit evaluate", add_help=False)
    evaluator.add_arguments(parser)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            namespace = parser.parse_args([checkpoint, *extra, "--output", output])
    except SystemExit:
        message = stderr.getvalue().strip().splitlines()
        raise ToolkitError("evaluate options", message[-1] if message else "rejected by toolkit evaluate") from None
    from toolkit.scoring.datasets import load_dataset

    for spec in getattr(namespace, "dataset", None) or []:
        load_dataset(spec, skip_bad=bool(getattr(namespace, "skip_bad", False)))


# ---------------------------------------------------------------------------------------------- commands
def _python(python: str | None) -> str:
    return python or sys.executable


def pretrain_command(
    configs: Sequence[str],
    run_dir: str | os.PathLike,
    resources: Resources,
    *,
    extra: Sequence[str] = (),
    resume: str = "auto",
    signal_seconds: int = 300,
    python: str | None = None,
) -> list[str]:
    """The sbatch argument list for :file:`slurm/pretrain.sbatch` (nothing is run)."""
    run_dir = Path(run_dir).resolve()
    command = [
        sbatch_executable(),
        "--parsable",
        *resources.options(),
        f"--signal=SIGUSR1@{signal_seconds}",
        "--requeue",
        "--open-mode=append",
        f"--output={run_dir / 'slurm' / '%x-%j.out'}",
        str(_template("pretrain.sbatch")),
        "--run-dir",
        str(run_dir),
        "--python",
        _python(python),
        "--resume",
        resume,
        "--",
    ]
    for config in configs:
        command += ["--config", str(Path(config).resolve())]
    return command + list(extra)


def check_pretrain(
    configs: Sequence[str],
    run_dir: str | os.PathLike,
    resources: Resources,
    *,
    extra: Sequence[str] = (),
    resume: str = "auto",
) -> list[str]:
    """Every check before a pretraining submission; returns notes worth printing."""
    notes: list[str] = []
    if not configs:
        raise ToolkitError("--config", "at least one pretraining config is required")
    for config in configs:
        check_config(config)
    resources.options()
    check_pretrain_arguments(job_pretrain_arguments(configs, extra, run_dir, resources, resume))
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ToolkitError(run_dir, "run directory exists and is not a directory")
    if resume not in ("auto", "never"):
        info = checkpoint_info(resume)
        if info["kind"] != "lightning":
            raise CheckpointError(resume, f"is a {info['kind']} checkpoint; resuming needs a Lightning .ckpt from a run")
        notes.append(f"resumes from {resume} (step {info['step']})")
    elif resume == "auto":
        newest = newest_checkpoint(run_dir)
        if newest is not None:
            notes.append(f"resumes from {newest} (newest complete checkpoint in the run directory)")
    return notes


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
    """Check everything, then submit the pretraining job. Returns the job id (``None`` on a dry run)."""
    for note in check_pretrain(configs, run_dir, resources, extra=extra, resume=resume):
        print(note, file=sys.stderr)
    command = pretrain_command(
        configs, run_dir, resources, extra=extra, resume=resume, signal_seconds=signal_seconds, python=python
    )
    if dependency:
        command.insert(2, f"--dependency={dependency}")
    return _submit(command, run_dir, dry_run=dry_run, test=test)


def _submit(command: list[str], log_dir: str | os.PathLike, *, dry_run: bool, test: bool) -> str | None:
    if test:
        check_request([c for c in command if not c.startswith("--dependency=")])
    if dry_run:
        print(shlex.join(command))
        return None
    (Path(log_dir) / "slurm").mkdir(parents=True, exist_ok=True)
    return run_sbatch(command)


def evaluate_commands(
    checkpoints: Sequence[str],
    output: str | os.PathLike,
    resources: Resources,
    *,
    extra: Sequence[str] = (),
    parallel: int | None = None,
    python: str | None = None,
    merge: bool = True,
) -> tuple[list[str], list[str] | None]:
    """The sbatch argument lists for the evaluation array and its merge step.

    ``checkpoints`` are written to a list file named by its content (``OUTPUT/lists/HASH.txt``, so
    a later submission never changes the list of a queued job). The merge command's
    ``--dependency`` is filled in by :func:`submit_evaluate` once the array's id is known (the
    placeholder is ``--dependency=afterany:ARRAY``). ``extra`` gets ``--cache OUTPUT/cache`` unless it
    names a cache: the merge reads the array's scores from it.
    """
    output = Path(output).resolve()
    listing = list_file(output, checkpoints)
    if "--cache" not in extra and "--no-cache" not in extra and not any(a.startswith("--cache=") for a in extra):
        extra = [*extra, "--cache", str(output / "cache")]
    template = str(_template("evaluate.sbatch"))
    array = f"0-{len(checkpoints) - 1}" + (f"%{parallel}" if parallel else "")
    tasks = [
        sbatch_executable(),
        "--parsable",
        *resources.options(),
        f"--array={array}",
        "--open-mode=append",
        f"--output={output / 'slurm' / '%x-%A_%a.out'}",
        template,
        "--list",
        str(listing),
        "--output",
        str(output),
        "--python",
        _python(python),
        "--",
        *extra,
    ]
    if not merge:
        return tasks, None
    merging = [
        sbatch_executable(),
        "--parsable",
        *resources.options(),
        f"--job-name={resources.job_name or 'toolkit-evaluate'}-merge",
        "--dependency=afterany:ARRAY",
        "--open-mode=append",
        f"--output={output / 'slurm' / '%x-%j.out'}",
        template,
        "--merge",
        "--list",
        str(listing),
        "--output",
        str(output),
        "--python",
        _python(python),
        "--",
        *extra,
    ]
    return tasks, merging


def list_file(output: str | os.PathLike, checkpoints: Sequence[str]) -> Path:
    """Where the list of ``checkpoints`` for an evaluation goes: ``OUTPUT/lists/<content hash>.txt``."""
    import hashlib

    text = "".join(f"{p}\n" for p in checkpoints)
    return Path(output) / "lists" / f"{hashlib.sha1(text.encode()).hexdigest()[:12]}.txt"


def has_results(output: str | os.PathLike, checkpoint: str | os.PathLike) -> bool:
    """True if ``checkpoint`` already has a results table under ``output``."""
    return (Path(output) / "checkpoints" / result_name(checkpoint) / RESULTS_CSV).is_file()


def submit_evaluate(
    sources: Sequence[str],
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
    infos = list_checkpoints(sources)
    if not infos:
        raise ToolkitError(" ".join(map(str, sources)), "no checkpoints to evaluate")
    output = Path(output).resolve()
    if output.exists() and not output.is_dir():
        raise ToolkitError(output, "output exists and is not a directory")
    every = [info["path"] for info in infos]
    todo = [p for p in every if not (only_new and has_results(output, p))]
    check_evaluate_arguments(every[0], extra, str(output / "checkpoints" / result_name(every[0])))
    resources.options()
    lines = "".join(f"{p}\n" for p in every)
    if todo:
        print(f"{len(todo)} checkpoint(s) to evaluate (steps {_steps(infos, todo)})", file=sys.stderr)
    else:
        print("no new checkpoints to evaluate", file=sys.stderr)
    tasks, merging = evaluate_commands(
        todo or every, output, resources, extra=extra, parallel=parallel, python=python, merge=merge
    )
    if dependency:
        tasks.insert(2, f"--dependency={dependency}")
    if test:
        check_request([c for c in tasks if not c.startswith("--dependency=")])
    if dry_run:
        if todo:
            print(shlex.join(tasks))
        if merging:
            print(shlex.join(merging))
        return None, None
    from toolkit.io import write_text

    (output / "slurm").mkdir(parents=True, exist_ok=True)
    (output / "lists").mkdir(parents=True, exist_ok=True)
    write_text(list_file(output, todo or every), "".join(f"{p}\n" for p in todo or every))
    write_text(list_file(output, every), lines)
    write_text(output / "checkpoints.txt", lines)
    array_id = None
    if todo:
        array_id = run_sbatch(tasks)
    merge_id = None
    if merging:
        if todo and todo != every:
            merging[merging.index(str(list_file(output, todo)))] = str(list_file(output, every))
        if array_id is None:
            merging = [c for c in merging if not c.startswith("--dependency=")]
        else:
            merging = [f"--dependency=afterany:{array_id}" if c.startswith("--dependency=") else c for c in merging]
        merge_id = run_sbatch(merging)
    return array_id, merge_id


def _steps(infos: list[dict[str, Any]], paths: list[str]) -> str:
    steps = [str(i["step"]) for i in infos if i["path"] in paths]
    return ", ".join(steps) if len(steps) <= 8 else f"{', '.join(steps[:4])}, ..., {', '.join(steps[-2:])}"


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

    Once: ``--dependency=afterok:JOB``. Periodically: ``--begin=now+MINUTES`` and the evaluation
    re-queues itself while the pretraining job is in the queue (see :func:`submit_evaluate`'s CLI).
    """
    small = Resources(
        time=resources.time or "0:30:00", partition=resources.partition, account=resources.account,
        qos=resources.qos, job_name="toolkit-chain",
    )
    command = [sbatch_executable(), "--parsable", *small.options()]
    if every_minutes:
        command.append(f"--begin=now+{every_minutes}minutes")
    else:
        command.append(f"--dependency=afterok:{pretrain_job}")
    command += [
        "--open-mode=append",
        f"--output={Path(log_dir).resolve() / 'slurm' / '%x-%j.out'}",
        str(_template("chain.sbatch")),
        "--python",
        _python(python),
        "--",
        *evaluate_args,
    ]
    return command


def job_active(job_id: str) -> bool:
    """True while ``job_id`` is pending, running or requeued (it is still in ``squeue``)."""
    done = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60
    )
    return done.returncode == 0 and bool(done.stdout.strip())


# ---------------------------------------------------------------------------------------------- CLI
def _add_resources(parser: argparse.ArgumentParser, prefix: str = "", gpus_default: int = 0) -> None:
    group = parser.add_argument_group(f"{prefix or 'SLURM '}resources (left to the cluster's defaults when not given)")
    p = f"--{prefix}"
    group.add_argument(f"{p}nodes", type=int, default=1, help="nodes (default 1)")
    group.add_argument(f"{p}gpus-per-node", type=int, default=gpus_default, help=f"GPUs per node (default {gpus_default})")
    group.add_argument(f"{p}tasks-per-node", type=int, help="processes per node (default: one per GPU, or 1)")
    group.add_argument(f"{p}cpus-per-task", type=int, help="CPU cores per process (data loading workers + 1)")
    group.add_argument(f"{p}mem", help="memory per node, e.g. 64G")
    group.add_argument(f"{p}time", help="time limit, e.g. 2-00:00:00")
    if not prefix:
        group.add_argument("--partition", help="partition")
        group.add_argument("--account", help="account to charge")
        group.add_argument("--qos", help="quality of service")
        group.add_argument("--constraint", help="node features, e.g. a100")
        group.add_argument(
            "--sbatch-option", action="append", default=[], metavar="OPTION",
            help="any other sbatch option, one argument each (repeatable), e.g. --sbatch-option=--exclusive",
        )
    group.add_argument(f"{p}job-name", help="job name")


def _resources(args: argparse.Namespace, prefix: str = "") -> Resources:
    get = lambda name: getattr(args, prefix + name)  # noqa: E731
    return Resources(
        nodes=get("nodes"), gpus_per_node=get("gpus_per_node"), tasks_per_node=get("tasks_per_node"),
        cpus_per_task=get("cpus_per_task"), mem=get("mem"), time=get("time"),
        partition=args.partition, account=args.account, qos=args.qos, constraint=args.constraint,
        job_name=get("job_name"), extra=list(args.sbatch_option),
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--python", help="interpreter the jobs run (default: this one, %(default)s)", default=sys.executable)
    parser.add_argument("--dry-run", action="store_true", help="check everything, print the sbatch commands, submit nothing")
    parser.add_argument("--no-test", action="store_true", help="skip the `sbatch --test-only` check of the request")


def _add_pretrain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", required=True, help="pretraining YAML config (repeatable)")
    parser.add_argument("--run-dir", required=True, help="run directory: checkpoints, logs, SLURM output")
    parser.add_argument(
        "--resume", default="auto",
        help="auto (newest complete checkpoint in the run directory, at every start), never, or a .ckpt path",
    )
    parser.add_argument("--signal-seconds", type=int, default=300, help="SIGUSR1 this long before the time limit (default 300)")
    _add_resources(parser)
    _add_common(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Submit pretraining / evaluation jobs to SLURM, after checking configs, paths, checkpoints and resources.

    Example:
      toolkit submit pretrain --config recipes/french/pretrain.yaml --run-dir runs/french \\
          --nodes 2 --gpus-per-node 4 --partition gpu --account myproj --time 2-00:00:00
      toolkit submit evaluate --checkpoints runs/french --output results/french --gpus-per-node 1 -- EVALUATE_OPTIONS
      toolkit submit chain --config recipes/french/pretrain.yaml --run-dir runs/french \\
          --eval-output results/french --gpus-per-node 4 -- EVALUATE_OPTIONS

    Options after `--` go unchanged to `toolkit pretrain` (pretrain) or `toolkit evaluate`.
    """
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("pretrain", help="submit multi-node pretraining (preemptible, resumes itself)", formatter_class=fmt,
                       description="Submit slurm/pretrain.sbatch. Arguments after -- go to `toolkit pretrain`.")
    _add_pretrain(p)

    e = sub.add_parser("evaluate", help="evaluate every checkpoint of a run: array job + merge", formatter_class=fmt,
                       description="Submit slurm/evaluate.sbatch as an array (one task per checkpoint) and a merge "
                       "job. Arguments after -- go to `toolkit evaluate`.")
    e.add_argument("--checkpoints", nargs="+", required=True, dest="sources", metavar="PATH",
                   help="run directories (searched for checkpoints) or checkpoint files")
    e.add_argument("--output", required=True, help="results directory")
    e.add_argument("--parallel", type=int, help="at most this many array tasks at once")
    e.add_argument("--only-new", action="store_true", help="skip checkpoints that already have results")
    e.add_argument("--no-merge", action="store_true", help="do not queue the merge step")
    e.add_argument("--every", type=int, metavar="MINUTES", help="with --while-running: evaluate again every MINUTES")
    e.add_argument("--while-running", metavar="JOBID", help="repeat (see --every) while this pretraining job is queued")
    _add_resources(e, gpus_default=0)
    _add_common(e)

    c = sub.add_parser("chain", help="submit pretraining, and its evaluation behind it", formatter_class=fmt,
                       description="Submit pretraining, then a small job that submits the evaluation of its "
                       "checkpoints when it finishes (afterok), or every --every minutes while it runs. "
                       "Arguments after -- go to `toolkit evaluate`.")
    _add_pretrain(c)
    c.add_argument("--eval-output", required=True, help="results directory for the evaluation")
    c.add_argument("--pretrain-arg", action="append", default=[], metavar="ARG",
                   help="one argument for `toolkit pretrain` (repeatable; write --pretrain-arg=--trainer.max_steps=100)")
    c.add_argument("--every", type=int, metavar="MINUTES", help="evaluate new checkpoints every MINUTES while training")
    c.add_argument("--eval-parallel", type=int, help="at most this many evaluation tasks at once")
    c.add_argument("--eval-gpus", type=int, default=0, help="GPUs per evaluation task (default 0)")
    c.add_argument("--eval-cpus", type=int, help="CPU cores per evaluation task")
    c.add_argument("--eval-mem", help="memory per evaluation task")
    c.add_argument("--eval-time", help="time limit per evaluation task")

    n = sub.add_parser("newest-checkpoint", help="print the checkpoint a (re)started job resumes from",
                       description="Print the newest complete *.ckpt under RUN_DIR (nothing if none). "
                       "slurm/pretrain.sbatch runs this at every start.")
    n.add_argument("run_dir")

    r = sub.add_parser("result-name", help="print the results folder name of a checkpoint")
    r.add_argument("checkpoint")

    for action_parser in (p, e, c):
        action_parser.add_argument("passthrough", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def _passthrough(args: argparse.Namespace) -> list[str]:
    rest = list(getattr(args, "passthrough", None) or [])
    if rest and rest[0] == "--":
        return rest[1:]
    if rest:
        raise ToolkitError(rest[0], "unexpected argument (options for the job itself go after --)")
    return rest


def run(args: argparse.Namespace) -> int:
    passthrough = _passthrough(args)
    action = args.action
    if action == "newest-checkpoint":
        newest = newest_checkpoint(args.run_dir)
        if newest is not None:
            print(newest)
        return 0
    if action == "result-name":
        print(result_name(args.checkpoint))
        return 0
    test = not args.no_test
    if action == "pretrain":
        job = submit_pretrain(
            args.config, args.run_dir, _resources(args), extra=passthrough, resume=args.resume,
            signal_seconds=args.signal_seconds, python=args.python, dry_run=args.dry_run, test=test,
        )
        if job:
            print(f"pretraining job {job}: logs in {Path(args.run_dir).resolve() / 'slurm'}")
        return 0
    if action == "evaluate":
        resources = _resources(args)
        final = True
        if args.while_running:
            if not args.every:
                raise ToolkitError("--while-running", "needs --every MINUTES")
            final = not job_active(args.while_running)
        try:
            array, merge = submit_evaluate(
                args.sources, args.output, resources, extra=passthrough, parallel=args.parallel,
                python=args.python, only_new=args.only_new or bool(args.while_running),
                merge=final and not args.no_merge, dry_run=args.dry_run, test=test,
            )
        except ToolkitError as err:
            if final or "no checkpoints" not in err.problem:
                raise
            print(f"no checkpoints yet ({err}); trying again in {args.every} min", file=sys.stderr)
            array = merge = None
        if array:
            print(f"evaluation array job {array}")
        if merge:
            print(f"merge job {merge}: table in {Path(args.output).resolve() / RESULTS_CSV}")
        if not final:
            again = chain_command(
                args.while_running, _reinvocation(args, passthrough), resources,
                every_minutes=args.every, python=args.python, log_dir=args.output,
            )
            if args.dry_run:
                print(shlex.join(again))
            else:
                print(f"next evaluation pass: job {run_sbatch(again)}")
        return 0
    if action == "chain":
        resources = _resources(args)
        pretrain_job = submit_pretrain(
            args.config, args.run_dir, resources, extra=args.pretrain_arg, resume=args.resume,
            signal_seconds=args.signal_seconds, python=args.python, dry_run=args.dry_run, test=test,
        )
        eval_resources = Resources(
            gpus_per_node=args.eval_gpus, cpus_per_task=args.eval_cpus, mem=args.eval_mem, time=args.eval_time,
            partition=args.partition, account=args.account, qos=args.qos, constraint=args.constraint,
        )
        eval_resources.options()
        if passthrough:  # parse the evaluation options now, not when pretraining has finished
            check_evaluate_arguments("CHECKPOINT", passthrough, str(Path(args.eval_output) / "check"))
        if test:
            check_request([sbatch_executable(), *eval_resources.options(), "--wrap=true"], "evaluation resource request")
        evaluate_args = ["--checkpoints", str(Path(args.run_dir).resolve()), "--output", str(Path(args.eval_output).resolve())]
        evaluate_args += _resource_args(eval_resources) + ["--python", args.python]
        if args.eval_parallel:
            evaluate_args += ["--parallel", str(args.eval_parallel)]
        if args.every:
            evaluate_args += ["--every", str(args.every), "--while-running", pretrain_job or "PRETRAIN_JOB"]
        evaluate_args += ["--", *passthrough]
        command = chain_command(
            pretrain_job or "PRETRAIN_JOB", evaluate_args, resources, every_minutes=args.every,
            python=args.python, log_dir=args.eval_output,
        )
        if args.dry_run:
            print(shlex.join(command))
            return 0
        (Path(args.eval_output) / "slurm").mkdir(parents=True, exist_ok=True)
        chain_job = run_sbatch(command)
        print(f"pretraining job {pretrain_job}: logs in {Path(args.run_dir).resolve() / 'slurm'}")
        print(f"evaluation job {chain_job}: " + (f"every {args.every} min while training" if args.every else "after pretraining"))
        return 0
    raise ToolkitError(action, "unknown action")


def _resource_args(resources: Resources) -> list[str]:
    out: list[str] = []
    for flag, value in (
        ("--gpus-per-node", resources.gpus_per_node or None),
        ("--cpus-per-task", resources.cpus_per_task),
        ("--mem", resources.mem),
        ("--time", resources.time),
        ("--partition", resources.partition),
        ("--account", resources.account),
        ("--qos", resources.qos),
        ("--constraint", resources.constraint),
    ):
        if value is not None:
            out += [flag, str(value)]
    return out


def _reinvocation(args: argparse.Namespace, passthrough: list[str]) -> list[str]:
    """The `toolkit submit evaluate` arguments for the next periodic pass (same request)."""
    out = ["--checkpoints", *map(str, args.sources), "--output", str(Path(args.output).resolve())]
    out += _resource_args(_resources(args)) + ["--python", args.python]
    if args.parallel:
        out += ["--parallel", str(args.parallel)]
    out += ["--every", str(args.every), "--while-running", args.while_running, "--", *passthrough]
    return out
