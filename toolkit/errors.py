"""One error type for everything a user can get wrong.

The CLI prints ``error: <path>: <problem>`` on one line and exits non-zero; Python users catch
:class:`ToolkitError`. Never raise it for programming errors (those stay ordinary exceptions).
"""

from __future__ import annotations

import os


class ToolkitError(Exception):
    """A problem with user input: a file, a config value or a resource request.

    ``path`` names the file (or option) at fault; ``problem`` says what is wrong with it.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return self.problem if self.path is None else f"{self.path}: {self.problem}"

    def __reduce__(self):
        # Rebuilt from (path, problem), so the error crosses from a worker process unchanged.
        return type(self), (self.path, self.problem)


class AudioError(ToolkitError):
    """An audio file that cannot be used (missing, unreadable, empty, NaN...)."""


class CheckpointError(ToolkitError):
    """A checkpoint that cannot be loaded (missing, truncated, wrong model, unsafe pickle)."""


class DataError(ToolkitError):
    """A manifest, CSV, shard or dataset layout that is malformed."""
