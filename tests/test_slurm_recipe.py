"""A recipe's smoke mode end to end through SLURM: audio folder -> shards -> pretraining -> evaluation.

French, because its shared audio is the smallest (1 MB). Slow (several minutes on 2 busy cores).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


def test_french_recipe_smoke_through_slurm(slurm_cluster: SlurmCluster, shared_data: Path, tmp_path: Path) -> None:  # noqa: F811
    if not (shared_data / "speech" / "fr").is_dir() or not (shared_data / "mos" / "yourtts").is_dir():
        pytest.skip("../shared/data/speech/fr or ../shared/data/mos/yourtts missing")
    work = tmp_path / "smoke"
    env = slurm_cluster.env(PYTHON=sys.executable, SMOKE_WORK=str(work), SMOKE_TIMEOUT="900",
                            TOOLKIT_SHARED=str(shared_data.parent))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    started = time.monotonic()
    done = subprocess.run(["bash", str(REPO / "recipes" / "french" / "run.sh"), "--smoke"], env=env,
                          capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    seconds = time.monotonic() - started
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(work.glob("*/slurm/*.out")))
    # The recipe returns once results.csv exists; its jobs may still be finishing. Wait for them (cancel
    # them if it failed), so that no later test sees them in the queue.
    slurm_cluster.drain(work, cancel=done.returncode != 0)
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}\n{logs}"
    print(f"\nfrench smoke recipe through SLURM: {seconds:.0f} s")
    rows = list(csv.DictReader((work / "results" / "results.csv").open()))
    steps = sorted({int(r["step"]) for r in rows if r["role"] == "checkpoint"})
    assert steps == [10, 20], steps
    assert (work / "run" / "adaptation").is_dir()
    assert "SMOKE MODE" in done.stdout
