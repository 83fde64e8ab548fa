"""The embedded default model ships loadable, self-describing and documented."""

from pathlib import Path

import torch

from toolkit.demo import DEFAULT_MODEL_DIR, find_default_checkpoint
from toolkit.models.checkpoint import load_checkpoint
from toolkit.models.wav2vec import preset_config


def test_default_model_loads_and_describes_itself():
    path = find_default_checkpoint()
    assert path == DEFAULT_MODEL_DIR / "model.pt"
    assert path.stat().st_size < 20 * 2**20  # the limit for shipped weights
    model, info = load_checkpoint(path)
    assert info["source"] == "toolkit" and info["step"] > 0
    assert model.config == preset_config("small")
    raw = torch.load(path, weights_only=True)
    assert raw["extra"]["real_minutes"] > 0 and raw["extra"]["synthetic_minutes"] == 0
    card = (Path(DEFAULT_MODEL_DIR) / "MODEL_CARD.md").read_text()
    assert f"{info['step']:,} steps" in card or f"{info['step']} steps" in card
    with torch.no_grad():
        out = model(torch.randn(1, 16000) * 0.1)
    assert torch.isfinite(out.logits).all()
