"""Training checkpoints on disk: find, validate, describe, save atomically, prune. One rule for all.

Every caller uses these functions: ``toolkit pretrain --resume auto`` and :class:`StepCheckpoint`
(toolkit/training), ``toolkit submit`` and the SLURM templates (``toolkit submit newest-checkpoint``),
and the recipes. The rules:

- A run's checkpoints are the periodic ``step-<9-digit step>.ckpt`` files in its checkpoint folder
  (``<root>/checkpoints`` unless ``--checkpoint.dirpath`` says otherwise) and the preemption
  checkpoints ``hpc_ckpt_<step>.ckpt`` in its root (``toolkit.preemption.SlurmPreemption``).
- A checkpoint counts only when it is complete (a torch zip archive with its pickle and intact
  CRCs) and readable as a wav2vec checkpoint; anything else is skipped with a logged warning.
- Newest = the highest global step read from the checkpoint itself; at equal steps the file
  written later wins (then the name, so the answer never depends on directory order).
- Pruning keeps the newest K of all of them, preemption checkpoints included, and removes the
  temporary files of writers that are no longer running (temporary names carry the writer's pid).

``python -m toolkit submit newest-checkpoint RUN_DIR`` prints :func:`newest_checkpoint` of a run.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import CheckpointError

log = logging.getLogger(__name__)

SUFFIXES = (".ckpt", ".pt")
STEP_NAME = re.compile(r"^step-(\d+)\.ckpt$")  # StepCheckpoint, in the checkpoint folder
PREEMPTION_NAME = re.compile(r"^hpc_ckpt_(\d+)\.ckpt$")  # SlurmPreemption, in the run's root
CHECKPOINT_FOLDER = "checkpoints"
# Test-only fault injection: seconds to sleep half-way through writing a checkpoint's bytes.
SLEEP_ENV = "TOOLKIT_TEST_CHECKPOINT_WRITE_SLEEP"


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint file holds: ``kind`` is toolkit, lightning or fairseq; ``step`` may be None."""

    path: Path
    kind: str
    step: int | None


def step_file_name(step: int) -> str:
    """The periodic checkpoint's file name for a global step (``step-000001234.ckpt``)."""
    return f"step-{step:09d}.ckpt"


def preemption_file_name(step: int) -> str:
    """The preemption checkpoint's file name for a global step (``hpc_ckpt_1234.ckpt``)."""
    return f"hpc_ckpt_{step}.ckpt"


def is_training_checkpoint_name(path: str | os.PathLike) -> bool:
    name = Path(path).name
    return bool(STEP_NAME.match(name) or PREEMPTION_NAME.match(name))


# ---------------------------------------------------------------------------------------------- validate
def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """True if ``path`` is a whole torch zip checkpoint: its pickle is there and every CRC is intact.

    Checkpoints are written to a temporary name and renamed, so a partial file normally never has a
    checkpoint's name; this also catches copies cut short and files truncated by a full disk.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return False
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------- describe
def checkpoint_info(path: str | os.PathLike, *, verify: bool = True) -> CheckpointInfo:
    """Read a checkpoint's header without loading its weights into memory.

    Raises :class:`CheckpointError` (one line, naming the file) for a missing, truncated, unsafe or
    non-wav2vec file. ``verify=False`` skips the CRC check of every byte (the header is still read).
    """
    import torch

    from toolkit.models.checkpoint import ALLOWED_GLOBALS, describe, safe_torch_load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found" if not path.exists() else "not a file")
    obj = None
    if zipfile.is_zipfile(path) and (not verify or is_complete_checkpoint(path)):
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
        step = obj["toolkit"].get("step")
        if step is None:
            step = obj.get("global_step")
    elif kind == "fairseq":
        step = (obj.get("optimizer_history") or [{}])[-1].get("num_updates")
    else:
        keys = ", ".join(sorted(map(str, obj))[:6]) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(path, f"not a wav2vec checkpoint (top-level keys: {keys})")
    return CheckpointInfo(path, kind, None if step is None else int(step))


# ---------------------------------------------------------------------------------------------- discover
def checkpoint_files(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Files named like checkpoints (``*.ckpt``, ``*.pt``) in ``folder``: not hidden, not temporary."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in found
        if p.suffix in SUFFIXES and not p.name.startswith(".") and ".tmp" not in p.name and p.is_file()
    )


def run_folders(root_dir: str | os.PathLike, checkpoint_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where a run's checkpoints are: its checkpoint folder and its root (preemption checkpoints)."""
    root = Path(root_dir)
    return [Path(checkpoint_dir) if checkpoint_dir else root / CHECKPOINT_FOLDER, root]


def newest_first_key(info: CheckpointInfo) -> tuple:
    """Sort key, oldest first: step from the file, then modification time, then name."""
    try:
        mtime = info.path.stat().st_mtime_ns
    except OSError:
        mtime = 0
    return (info.step is not None, info.step or 0, mtime, info.path.name)


def training_checkpoints(folders: Iterable[str | os.PathLike], *, verify: bool = True) -> list[CheckpointInfo]:
    """A run's complete Lightning checkpoints in ``folders`` (see :func:`run_folders`), oldest first.

    Files named ``step-*.ckpt`` or ``hpc_ckpt_*.ckpt`` are read; incomplete, unreadable or
    non-Lightning ones are skipped with a warning naming the file. ``verify=False`` reads only the
    headers and skips the CRC check of every byte (:func:`is_complete_checkpoint`), for pruning.
    """
    seen: set[Path] = set()
    infos: list[CheckpointInfo] = []
    for folder in folders:
        for path in checkpoint_files(folder):
            if not is_training_checkpoint_name(path) or path.resolve() in seen:
                continue
            seen.add(path.resolve())
            info = _usable(path, verify)
            if info is not None:
                infos.append(info)
    return sorted(infos, key=newest_first_key)


def _usable(path: Path, verify: bool = True) -> CheckpointInfo | None:
    if verify and not is_complete_checkpoint(path):
        log.warning("%s: incomplete checkpoint, skipped", path)
        return None
    try:
        info = checkpoint_info(path, verify=verify)
    except CheckpointError as err:
        log.warning("%s, skipped", err)
        return None
    if info.kind != "lightning":
        log.warning("%s: a %s checkpoint, not a training checkpoint; skipped", path, info.kind)
        return None
    return info


def list_checkpoints(*folders: str | os.PathLike) -> list[Path]:
    """The paths of :func:`training_checkpoints` in ``folders``, oldest first."""
    return [info.path for info in training_checkpoints(folders)]


def newest_checkpoint(*folders: str | os.PathLike) -> Path | None:
    """The newest complete training checkpoint in ``folders`` (highest step, then latest file), or None."""
    infos = training_checkpoints(folders)
    return infos[-1].path if infos else None


def newest_in_run(root_dir: str | os.PathLike, checkpoint_dir: str | os.PathLike | None = None) -> Path | None:
    """:func:`newest_checkpoint` of a run: what ``--resume auto`` and a requeued SLURM job resume from."""
    return newest_checkpoint(*run_folders(root_dir, checkpoint_dir))


def evaluation_checkpoints(sources: Iterable[str | os.PathLike]) -> list[CheckpointInfo]:
    """Checkpoints named by ``sources`` (files, or folders searched recursively), sorted by step.

    Every one is read with :func:`checkpoint_info` (a bad one raises, naming it). A periodic and a
    preemption checkpoint of the same run and step are one checkpoint: the file written later is kept.
    """
    from toolkit.errors import ToolkitError

    infos: list[CheckpointInfo] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            files = checkpoint_files(source, recursive=True)
            if not files:
                raise ToolkitError(source, "no checkpoints (*.ckpt, *.pt) in this folder")
            infos.extend(checkpoint_info(p) for p in files)
        elif source.exists():
            infos.append(checkpoint_info(source))
        else:
            raise CheckpointError(source, "not found")
    by_step: dict[tuple[Path, int], CheckpointInfo] = {}
    kept: list[CheckpointInfo] = []
    for info in sorted(infos, key=newest_first_key):
        if info.step is not None and is_training_checkpoint_name(info.path) and info.kind == "lightning":
            by_step[_run_root(info.path), info.step] = info  # later files replace earlier ones of the step
        else:
            kept.append(info)
    unique = {info.path: info for info in [*kept, *by_step.values()]}
    return sorted(unique.values(), key=lambda i: (i.step is None, i.step or 0, str(i.path)))


def _run_root(path: Path) -> Path:
    """The run a training checkpoint belongs to: ``RUN/hpc_ckpt_*`` or ``RUN/checkpoints/step-*``."""
    folder = path.parent.resolve()
    return folder.parent if STEP_NAME.match(path.name) and folder.name == CHECKPOINT_FOLDER else folder


# ---------------------------------------------------------------------------------------------- prune
def prune_checkpoints(folders: Iterable[str | os.PathLike], keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` training checkpoints in ``folders``; return the deleted.

    Periodic and preemption checkpoints are ranked together by the step in their headers
    (:func:`training_checkpoints`; the bytes are not re-read at every save). Temporary
    files left by writers that are no longer running are removed too; a live writer's are kept.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be at least 1, got {keep_last}")
    folders = [Path(f) for f in folders]
    doomed = [info.path for info in training_checkpoints(folders, verify=False)][:-keep_last]
    for path in doomed:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for folder in folders:
        for tmp in folder.glob(".*.ckpt.*.tmp") if folder.is_dir() else ():
            if is_training_checkpoint_name(tmp.name[1:].rsplit(".", 2)[0]) and not _writer_alive(tmp):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
    return doomed


def _writer_alive(tmp: Path) -> bool:
    """Whether the writer of ``.<name>.<pid>.tmp`` is still running on this host."""
    try:
        pid = int(tmp.name.rsplit(".", 2)[-2])
    except (ValueError, IndexError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------- save
def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically (:func:`toolkit.io.atomic_write`), through
    ``.<name>.<pid>.tmp`` in the same folder: the pid lets :func:`prune_checkpoints` remove only the
    leftovers of dead writers. A full disk becomes a :class:`ToolkitError` naming the file.
    """
    import torch

    from toolkit.io import atomic_write

    path = Path(path)
    buffer = io.BytesIO()  # serialised first: see toolkit.io.write_torch
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    with atomic_write(path, "wb", temp_name=f".{path.name}.{os.getpid()}.tmp", doing="writing the checkpoint") as handle:
        sleep = _test_sleep(path.name)
        if sleep > 0:  # fault injection: a writer killed half-way leaves half a temporary file
            half = len(data) // 2
            handle.write(data[:half])
            handle.flush()
            os.fsync(handle.fileno())
            time.sleep(sleep)
            data = data[half:]
        handle.write(data)


def _test_sleep(name: str) -> float:
    """``TOOLKIT_TEST_CHECKPOINT_WRITE_SLEEP="SECONDS[:NAME_PART]"``: pause half-way through writing
    checkpoints (those whose file name contains NAME_PART). Fault injection for tests only."""
    value = os.environ.get(SLEEP_ENV, "")
    if not value:
        return 0.0
    seconds, _, part = value.partition(":")
    return float(seconds) if part in name else 0.0
