"""Everything ``toolkit submit`` checks before it queues a job, so that a mistake fails in seconds.

Config files exist and parse, the input paths they name exist, checkpoints are complete and
readable, the job's ``toolkit pretrain`` / ``toolkit evaluate`` arguments parse with those
commands' own parsers, and SLURM accepts the resource request (``sbatch --test-only``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from toolkit.checkpoints import SUFFIXES, checkpoint_info
from toolkit.errors import CheckpointError, ToolkitError
from toolkit.slurm.sbatch import slurm_message

# Config keys whose values are inputs that must exist before the job starts (matched on the last key
# component, case-insensitively). Outputs (run dirs, log dirs) are created by the job and not checked.
_INPUT_KEY = re.compile(r"(shard|manifest|init|checkpoint|ckpt|pretrained|heldout|mos_set|data_dir|train_dir|valid_dir)")
_OUTPUT_KEY = re.compile(r"(root_dir|output|save_dir|log_dir|dirpath|cache)")


def check_request(command: Sequence[str], what: str = "resource request") -> str:
    """Ask SLURM whether it would accept ``command`` (an sbatch argument list), without queuing it.

    Runs the same command with ``--test-only`` (and without ``--dependency``, whose job may not exist
    yet) and returns SLURM's answer. Raises :class:`ToolkitError` with SLURM's reason when it refuses
    (no such partition or account, more nodes/CPUs/GPUs/memory than exist, a malformed time...).
    """
    argv = [command[0], "--test-only", *[a for a in command[1:] if a != "--parsable" and not a.startswith("--dependency=")]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ToolkitError(what, f"SLURM refuses it: {slurm_message(done.stderr)}")
    return done.stderr.strip()


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
    will. Checkpoints among them must be complete and readable (:func:`toolkit.checkpoints.checkpoint_info`).
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
            if target.is_file() and target.suffix in SUFFIXES:
                checkpoint_info(target)
    return config


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


def check_resume(resume: str, run_dir: str | os.PathLike) -> str | None:
    """Check a pretraining job's ``--resume`` (auto, never/none or a path); a note on what it resumes from."""
    from toolkit.checkpoints import newest_in_run

    if resume in ("never", "none"):
        return None
    if resume == "auto":
        newest = newest_in_run(run_dir)
        return None if newest is None else f"resumes from {newest} (the run's newest complete checkpoint)"
    info = checkpoint_info(resume)
    if info.kind != "lightning":
        raise CheckpointError(resume, f"is a {info.kind} checkpoint; resuming needs a Lightning .ckpt from a run")
    return f"resumes from {resume} (step {info.step})"
