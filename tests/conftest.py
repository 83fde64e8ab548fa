import os
from pathlib import Path

import pytest
import torch

# Two cores are shared by everything in CI: one thread per test process keeps timings stable.
torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TOOLKIT_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip cleanly where it is absent."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"shared data not found at {data}")
    return data


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the bad-input gauntlet's table of inputs and outcomes (tests/test_gauntlet.py)."""
    rows = getattr(config, "_gauntlet_rows", None)
    if not rows:
        return
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    terminalreporter.section("bad-input gauntlet: input -> outcome")
    for entry, case, outcome in sorted(rows):
        terminalreporter.write_line(f"{entry.ljust(width[0])}  {case.ljust(width[1])}  {outcome[:110]}")
