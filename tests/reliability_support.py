"""Helpers for the reliability tests: small clip sets, the CLI in a subprocess, a small tmpfs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
RATE = 16_000


def make_clips(folder: Path, count: int, seconds: tuple[float, float] = (0.3, 0.6), seed: int = 0) -> Path:
    """``count`` noisy-tone 16-bit wav clips in ``folder`` and a ``set.csv`` (path, mos, system) beside them.

    MOS falls with the noise level, so the correlations are not all zero. Returns the CSV's path.
    """
    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,mos,system"]
    for i in range(count):
        n = int(RATE * rng.uniform(*seconds))
        t = np.arange(n) / RATE
        noise = rng.uniform(0.0, 0.3)
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + noise * rng.standard_normal(n)
        sf.write(folder / f"clip{i:04d}.wav", np.clip(wave, -1, 1).astype(np.float32), RATE, subtype="PCM_16")
        rows.append(f"clip{i:04d}.wav,{4.5 - 10 * noise + rng.normal(0, 0.3):.3f},sys{i % 4}")
    (folder / "set.csv").write_text("\n".join(rows) + "\n")
    return folder / "set.csv"


def env(**extra: str) -> dict[str, str]:
    """The environment for a ``python -m toolkit`` subprocess: one thread, this checkout, no W&B network."""
    out = dict(os.environ)
    out.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
                "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    out.update(extra)
    return out


def cli_command(*args: str | os.PathLike) -> list[str]:
    return [sys.executable, "-m", "toolkit", *map(str, args)]


def run_cli(*args: str | os.PathLike, timeout: float = 300, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), cwd=REPO, env=environ or env(), capture_output=True, text=True,
                          timeout=timeout)


def error_line(err: str) -> str:
    """The CLI's ``error: ...`` line, asserting it is the only trace of the failure: one line, the last
    thing on stderr, and no traceback."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err[-3000:]
    return errors[0]


def _mount(target: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``target``; the reason it failed, or ``None``."""
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(target)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


@contextlib.contextmanager
def small_disk(target: Path, size: str = "512k") -> Iterator[Path]:
    """A real small file system (tmpfs) at ``target``, unmounted afterwards; skips where mounting is not allowed."""
    target.mkdir(parents=True, exist_ok=True)
    problem = _mount(target, size)
    if problem is not None:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {problem}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def fill(disk: Path, leave: int = 0) -> None:
    """Fill the file system of ``disk`` so that about ``leave`` bytes (rounded to pages) stay free."""
    page = os.statvfs(disk).f_frsize
    leave = -(-leave // page) * page
    index = len(list(disk.glob("filler-*")))
    with open(disk / f"filler-{index}", "wb") as handle:
        while free_bytes(disk) > leave:
            chunk = min(free_bytes(disk) - leave, 1 << 16)
            try:
                handle.write(b"\0" * chunk)
                handle.flush()
            except OSError:
                break
    assert free_bytes(disk) <= leave


def visible_files(folder: Path) -> list[Path]:
    """Files under ``folder`` a user would take as results (hidden temporary files excluded)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
