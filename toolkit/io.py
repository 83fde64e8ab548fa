"""Atomic file writing: a result, manifest or checkpoint is complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from toolkit.errors import ToolkitError

# Write failures that mean "the disk (or the user's share of it) is full": a user problem, not a bug.
DISK_FULL_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (file size limit)",
}


def disk_full_error(path: str | os.PathLike | None, err: OSError, doing: str = "writing") -> ToolkitError | None:
    """A one-line :class:`ToolkitError` naming ``path`` if ``err`` is a full disk / quota / size limit, else ``None``.

    Usage: ``except OSError as err: raise disk_full_error(path, err) or err``.
    """
    problem = DISK_FULL_ERRNOS.get(err.errno)  # type: ignore[arg-type]
    if problem is None:
        return None
    return ToolkitError(path if path is not None else err.filename, f"{problem} while {doing}")


def _default_mode() -> int:
    """``0o666`` less the umask: the mode ``open()`` would give a new file (mkstemp gives 0o600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_mode()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, temp_name: str | None = None,
                 doing: str = "writing", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it, rename it over ``path`` and fsync
    the folder, so that after a crash ``path`` holds the old content or the complete new one.

    On any exception the temporary file is removed and ``path`` is left untouched. A full disk
    (``ENOSPC``, or a quota or file-size limit) becomes a :class:`ToolkitError` naming the file and
    what was being done (``doing``). The file gets the permissions ``open()`` would give it (not
    mkstemp's owner-only ``0o600``). ``temp_name`` fixes the temporary file's name (default: a
    unique ``.<name>.XXXX.tmp``); checkpoints put the writer's pid there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if temp_name is None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    else:
        tmp = str(path.parent / temp_name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):  # some network file systems refuse chmod
            os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except OSError as err:
        _cleanup(tmp)
        full = disk_full_error(path, err, doing)
        if full is not None:
            raise full from None
        raise
    except BaseException:
        _cleanup(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a crash once the folder is synced
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _cleanup(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def write_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically.

    The object is serialised in memory first: torch's zip writer turns a short write on a nearly
    full disk into an opaque ``RuntimeError`` ("unexpected pos"), while a plain write of the bytes
    raises ``ENOSPC``, which :func:`atomic_write` reports as a one-line error naming the file.
    """
    import io

    import torch

    with atomic_write(path, "wb") as handle:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        handle.write(buffer.getbuffer())
