"""Shared bits for the benchmarks: machine description, timing, and appending to RESULTS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU only, {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    return f"{device}; torch {torch.__version__}; threads {torch.get_num_threads()}"


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=RESULTS.parent)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def median_time(fn: Callable[[], None], steps: int, warmup: int = 2, sync: bool = False) -> float:
    """Median wall time of ``fn`` over ``steps`` runs after ``warmup`` runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def append_results(title: str, body: str, notes: str = "") -> None:
    """Append one dated section to bench/RESULTS.md (never rewrites earlier entries)."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = f"\n## {title} ({stamp})\n\nMachine: {machine()}. Commit: {commit()}.\n\n{body}\n"
    if notes:
        section += f"\n{notes}\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEvery figure here was measured by a script in bench/; newest last.\n")
    with RESULTS.open("a") as handle:
        handle.write(section)
