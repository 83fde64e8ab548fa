"""The ``slurm_cluster`` fixture: a real SLURM cluster (slurmctld + virtual slurmd nodes) for tests.

Import it into a test module (``from slurm_cluster import slurm_cluster  # noqa: F401``). It uses
the cluster named by ``SLURM_CONF`` when one answers (``.ci/run`` starts one with
``tests/slurm/local_cluster.sh``); otherwise it starts its own for the test session under a
temporary folder, on free ports, and stops exactly those daemons at the end. It skips, with the
reason, where SLURM cannot be had (not root, or the Debian packages cannot be installed).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent / "slurm" / "local_cluster.sh"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


@dataclass
class SlurmCluster:
    """A running cluster: its config, node count and helpers to submit and wait."""

    conf: Path
    nodes: int
    directory: Path | None  # set when this session started it

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env.update(extra)
        return env

    def run(self, argv: list[str], check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True, check=check, timeout=timeout, **kw)

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (first record; array jobs give the first task)."""
        done = self.run(["scontrol", "show", "job", "-o", job_id], check=False)
        if done.returncode != 0 or not done.stdout.strip():
            return {}
        return dict(re.findall(r"([\w/:]+)=(\S*)", done.stdout.splitlines()[0]))

    def tasks(self, job_id: str) -> list[dict[str, str]]:
        """Every record of a job (one per array task)."""
        done = self.run(["scontrol", "show", "job", "-o", job_id], check=False)
        return [dict(re.findall(r"([\w/:]+)=(\S*)", line)) for line in done.stdout.splitlines() if line.strip()]

    def command(self, job_id: str) -> str:
        """The batch script and its arguments, as SLURM holds them (space-joined)."""
        done = self.run(["scontrol", "show", "job", job_id], check=False)
        found = re.search(r"^\s*Command=(.*)$", done.stdout, re.MULTILINE)
        return found.group(1).strip() if found else ""

    def jobs_under(self, folder: Path) -> dict[str, str]:
        """``{job id: state}`` of the queued jobs whose output file is under ``folder``.

        Tests share the cluster: each one looks only at its own jobs (toolkit submit writes every
        job's output under the run or results folder it was given, inside the test's tmp_path),
        never at the whole queue, where other tests' jobs come and go.
        """
        done = self.run(["squeue", "-h", "-O", "JobArrayID:40,State:20,StdOut:4000"])
        root = str(Path(folder).resolve())
        jobs = {}
        for line in done.stdout.splitlines():
            parts = line.split(None, 2)
            if len(parts) == 3 and (parts[2] == root or parts[2].startswith(root + os.sep)):
                jobs[parts[0]] = parts[1]
        return jobs

    def drain(self, folder: Path, timeout: float = 300, cancel: bool = False) -> None:
        """Wait until no job with its output under ``folder`` is queued (cancel them after ``timeout``,
        or at once with ``cancel``)."""
        if cancel:
            self.run(["scancel", *{j.split("_")[0] for j in self.jobs_under(folder)}], check=False)
        deadline = time.monotonic() + timeout
        while self.jobs_under(folder):
            if time.monotonic() > deadline:
                left = self.jobs_under(folder)
                self.run(["scancel", *[j.split("_")[0] for j in left]], check=False)
                raise AssertionError(f"jobs still queued after {timeout}s (cancelled): {left}")
            time.sleep(0.5)

    def wait(self, job_id: str, timeout: float = 120, states: set[str] = FINAL_STATES) -> dict[str, str]:
        """Poll until every record of ``job_id`` is in one of ``states``; return the first record."""
        deadline = time.monotonic() + timeout
        records: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            records = self.tasks(job_id)
            if records and all(r.get("JobState") in states for r in records):
                return records[0]
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} not in {sorted(states)} after {timeout}s: {[r.get('JobState') for r in records]}")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int, start: int) -> int:
    """The first port >= ``start`` such that ``count`` consecutive ports are free."""
    port = start
    while port < start + 2000:
        if all(_free(port + i) for i in range(count)):
            return port
        port += count
    raise RuntimeError("no free ports for the test cluster")


def _answers(conf: str) -> int:
    """Node count of the cluster at ``conf``, or 0 if it does not answer."""
    if not shutil.which("sinfo"):
        return 0
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %T"], env={**os.environ, "SLURM_CONF": conf},
            capture_output=True, text=True, timeout=20,
        )
    except subprocess.TimeoutExpired:
        return 0
    return len({line.split()[0] for line in done.stdout.splitlines() if line.strip()}) if done.returncode == 0 else 0


_STARTED: dict[str, SlurmCluster | str] = {}  # one cluster (or skip reason) per session, for every module


def _start(tmp_path_factory: pytest.TempPathFactory, config: pytest.Config) -> SlurmCluster:
    if os.geteuid() != 0:
        pytest.skip("no SLURM cluster (SLURM_CONF unset) and not root, so none can be started here")
    directory = tmp_path_factory.mktemp("slurm-cluster")
    nodes = int(os.environ.get("SLURM_LOCAL_NODES", "2"))
    ctld = _free_ports(1, 26817)
    slurmd = _free_ports(nodes, ctld + 1)
    env = {**os.environ, "SLURM_LOCAL_NODES": str(nodes), "SLURM_LOCAL_CTLD_PORT": str(ctld),
           "SLURM_LOCAL_SLURMD_PORT": str(slurmd)}
    stop = ["bash", str(HARNESS), "stop", str(directory)]
    started = time.monotonic()
    done = subprocess.run(["bash", str(HARNESS), "start", str(directory)], env=env, capture_output=True,
                          text=True, timeout=600)
    if done.returncode == 3:
        pytest.skip(f"SLURM packages unavailable: {done.stderr.strip().splitlines()[-1:]}")
    if done.returncode != 0:
        subprocess.run(stop, env=env, capture_output=True, timeout=120)
        pytest.fail(f"local SLURM cluster did not start:\n{done.stderr}")
    config.add_cleanup(lambda: subprocess.run(stop, env=env, capture_output=True, timeout=120))
    print(f"\nlocal SLURM cluster ({nodes} nodes) up in {time.monotonic() - started:.1f}s under {directory}")
    return SlurmCluster(directory / "etc" / "slurm.conf", nodes, directory)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> SlurmCluster:
    conf = os.environ.get("SLURM_CONF")
    if conf and Path(conf).is_file():
        nodes = _answers(conf)
        if not nodes:
            pytest.fail(f"SLURM_CONF={conf} is set but the cluster does not answer sinfo")
        return SlurmCluster(Path(conf), nodes, None)
    if "cluster" not in _STARTED:
        try:
            _STARTED["cluster"] = _start(tmp_path_factory, pytestconfig)
        except pytest.skip.Exception as skip:
            _STARTED["cluster"] = str(skip)
    if isinstance(_STARTED["cluster"], str):
        pytest.skip(_STARTED["cluster"])
    return _STARTED["cluster"]
