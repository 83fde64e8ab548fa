"""A SLURM resource request: its command-line options, its sbatch options, and the way back.

One table (:data:`FIELDS`) names every request field with its ``toolkit submit`` option. The
parser is built from it (:func:`add_resource_arguments`), a parsed namespace becomes a
:class:`Resources` (:func:`resources_from_arguments`), and a :class:`Resources` becomes the
``toolkit submit`` arguments that ask for the same request again (:func:`resource_arguments`):
jobs that submit further jobs (periodic evaluation) pass the whole request on through it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields

from toolkit.errors import ToolkitError


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

    def validate(self) -> None:
        """Raise :class:`ToolkitError` for a request that cannot be right, before SLURM sees it."""
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
        for option in self.extra:
            if not option.startswith("-"):
                raise ToolkitError("--sbatch-option", f"'{option}' is not an option (expected --name=value)")

    def options(self) -> list[str]:
        """The sbatch options for this request, as a list of arguments."""
        self.validate()
        opts = [f"--nodes={self.nodes}", f"--ntasks-per-node={self.tasks()}"]
        if self.gpus_per_node:
            opts.append(f"--gpus-per-node={self.gpus_per_node}")
        for name in ("cpus_per_task", "mem", "time", "partition", "account", "qos", "constraint", "job_name"):
            value = getattr(self, name)
            if value is not None:
                opts.append(f"--{name.replace('_', '-')}={value}")
        return opts + list(self.extra)


# field -> (toolkit submit option, type, help). Every field of Resources is here (a test checks it).
FIELDS: dict[str, tuple[str, type, str]] = {
    "nodes": ("--nodes", int, "nodes (default 1)"),
    "gpus_per_node": ("--gpus-per-node", int, "GPUs per node (default 0)"),
    "tasks_per_node": ("--tasks-per-node", int, "processes per node (default: one per GPU, or 1)"),
    "cpus_per_task": ("--cpus-per-task", int, "CPU cores per process (data loading workers + 1)"),
    "mem": ("--mem", str, "memory per node, e.g. 64G"),
    "time": ("--time", str, "time limit, e.g. 2-00:00:00"),
    "partition": ("--partition", str, "partition"),
    "account": ("--account", str, "account to charge"),
    "qos": ("--qos", str, "quality of service"),
    "constraint": ("--constraint", str, "node features, e.g. a100"),
    "job_name": ("--job-name", str, "job name"),
    "extra": ("--sbatch-option", str, "any other sbatch option, one argument each (repeatable), for every job "
              "this command submits, e.g. --sbatch-option=--reservation=r1"),
}
# Options that a chain's evaluation jobs share with its pretraining job.
SHARED = ("partition", "account", "qos", "constraint", "extra")


def add_resource_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per :class:`Resources` field (``--nodes``, ..., ``--sbatch-option``)."""
    group = parser.add_argument_group("SLURM resources (left to the cluster's defaults when not given)")
    defaults = Resources()
    for name, (flag, kind, text) in FIELDS.items():
        if name == "extra":
            group.add_argument(flag, dest=name, action="append", default=[], metavar="OPTION", help=text)
        else:
            group.add_argument(flag, dest=name, type=kind, default=getattr(defaults, name), help=text)


def resources_from_arguments(args: argparse.Namespace) -> Resources:
    """The :class:`Resources` that :func:`add_resource_arguments`' options were parsed into."""
    values = {name: getattr(args, name) for name in FIELDS}
    values["extra"] = list(values["extra"] or [])
    resources = Resources(**values)
    resources.validate()
    return resources


def resource_arguments(resources: Resources) -> list[str]:
    """The ``toolkit submit`` options that ask for ``resources`` again (defaults left out).

    Written as ``--option=value``, so a value that starts with ``-`` (``--sbatch-option=--hold``)
    stays one argument.
    """
    defaults = Resources()
    out: list[str] = []
    for item in fields(Resources):
        flag = FIELDS[item.name][0]
        value = getattr(resources, item.name)
        if item.name == "extra":
            out += [f"{flag}={option}" for option in value]
        elif value != getattr(defaults, item.name):
            out.append(f"{flag}={value}")
    return out
