import os
import random
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

# Two cores are shared by everything in CI: one thread per test process keeps timings stable.
torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TOOLKIT_SHARED", REPO.parent / "shared"))


@pytest.fixture(autouse=True)
def isolated_global_state(request):
    """Every test starts from the same global state, whatever ran before it in the suite.

    The global RNGs (torch, numpy, random) are seeded from the test's id, so a test's unseeded
    draws are the same alone and in any suite order; grad mode is on; the default dtype and the
    environment are restored afterwards.
    """
    seed = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    dtype, environ = torch.get_default_dtype(), dict(os.environ)
    with torch.enable_grad():
        yield
    torch.set_default_dtype(dtype)
    for key in set(os.environ) - set(environ):
        del os.environ[key]
    os.environ.update(environ)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip cleanly where it is absent."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"shared data not found at {data}")
    return data


@pytest.fixture(scope="session")
def reference_speech(shared_data) -> list[Path]:
    """The real English clips of ``../shared/data/speech/en/librispeech-clips``, sorted; skip where absent."""
    folder = shared_data / "speech" / "en" / "librispeech-clips"
    files = sorted(p for p in folder.glob("*") if p.suffix in (".flac", ".wav", ".ogg"))
    if not files:
        pytest.skip(f"shared reference speech not found at {folder}")
    return files


@pytest.fixture(scope="session")
def speech_clip(reference_speech) -> torch.Tensor:
    """The first 1.5 s of the first reference clip: 16 kHz mono float32 ``[time]``."""
    from toolkit.audio import load_audio

    return load_audio(reference_speech[0]).samples[:24000]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the bad-input gauntlet's table of inputs and outcomes (tests/test_gauntlet.py)."""
    rows = getattr(config, "_gauntlet_rows", None)
    if not rows:
        return
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    terminalreporter.section("bad-input gauntlet: input -> outcome")
    for entry, case, outcome in sorted(rows):
        terminalreporter.write_line(f"{entry.ljust(width[0])}  {case.ljust(width[1])}  {outcome[:110]}")
