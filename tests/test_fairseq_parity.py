"""Parity with fairseq's own wav2vec (v1) code (fairseq-fixed 0.12.3.1).

A randomly initialised fairseq ``Wav2VecModel`` is imported, and ``z``, ``c``, the step
projections and the contrastive logits (same negative draw) must agree to 1e-5. The same after an
export back to fairseq's format. CI installs fairseq, so these tests run there.
"""

from __future__ import annotations

import argparse
import logging

import pytest
import torch

fairseq_wav2vec = pytest.importorskip("fairseq.models.wav2vec.wav2vec", reason="fairseq not installed")
logging.getLogger("fairseq").setLevel(logging.WARNING)

from toolkit.errors import CheckpointError  # noqa: E402
from toolkit.models.checkpoint import load_checkpoint, model_from_fairseq  # noqa: E402
from toolkit.models.convert import export_fairseq, import_fairseq  # noqa: E402
from toolkit.models.wav2vec import LARGE_CONTEXT, LARGE_ENCODER  # noqa: E402

ATOL = 1e-5

TINY = {
    "conv_feature_layers": "[(32, 10, 5), (32, 8, 4), (32, 4, 2), (32, 4, 2), (32, 4, 2), (32, 1, 1), (32, 1, 1)]",
    "conv_aggregator_layers": "[(32, 2, 1), (32, 3, 1), (48, 4, 1), (48, 5, 1)]",  # 32->48 adds a residual projection
}
LARGE = {
    "conv_feature_layers": str(list(LARGE_ENCODER)),
    "conv_aggregator_layers": str(list(LARGE_CONTEXT)),
}


def fairseq_model(layers: dict, seed: int = 0, **extra):
    torch.manual_seed(seed)
    cfg = fairseq_wav2vec.Wav2VecConfig(
        **layers,
        infonce=False,  # the dataclass default is an unresolved '${criterion.infonce}' string
        log_compression=True,
        skip_connections_agg=True,
        residual_scale=0.5,
        **extra,
    )
    model = fairseq_wav2vec.Wav2VecModel(cfg).eval()
    # Random affine group-norm parameters too, so the mapping of every tensor is checked.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("2.weight", "3.weight")) and p.ndim == 1:
                p.uniform_(0.5, 1.5)
            elif p.ndim == 1:
                p.uniform_(-0.1, 0.1)
    return model, cfg


def fairseq_obj(model, cfg, style: str) -> dict:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fields = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__ if not k.startswith("vq_temp")}
    if style == "args":  # fairseq <= 0.9 (how wav2vec_large.pt was saved)
        return {"args": argparse.Namespace(arch="wav2vec", **fields), "model": state, "optimizer_history": [{"num_updates": 7}]}
    fields["_name"] = "wav2vec"
    return {"args": None, "cfg": {"model": fields, "criterion": {"_name": "wav2vec", "infonce": False}}, "model": state}


def fairseq_outputs(model, wav: torch.Tensor, seed: int):
    with torch.no_grad():
        z = model.feature_extractor(wav)
        c = model.feature_aggregator(z)
        proj = model.wav2vec_predictions.project_to_steps(c.unsqueeze(-1))
        torch.manual_seed(seed)
        out = model(wav)
    return z, c, proj, out["cpc_logits"], out["cpc_targets"]


def flatten_like_fairseq(logits: torch.Tensor, offset: int, frames: int) -> torch.Tensor:
    """Our [B, K, T, 1+N] in fairseq's flat order: per step, [1+N, B, frames - offset - k]."""
    parts = []
    for k in range(logits.shape[1]):
        valid = frames - offset - k
        if valid <= 0:
            break
        parts.append(logits[:, k, :valid].permute(2, 0, 1).reshape(-1))
    return torch.cat(parts)


def assert_parity(fs_model, ours, wav: torch.Tensor, seed: int = 123) -> None:
    z, c, proj, fs_logits, fs_labels = fairseq_outputs(fs_model, wav, seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = ours(wav, negatives="fairseq")
    torch.testing.assert_close(out.z, z, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(out.c, c, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(out.predictions, proj, atol=ATOL, rtol=1e-5)
    ours_flat = flatten_like_fairseq(out.logits, ours.offset, z.shape[-1])
    assert ours_flat.shape == fs_logits.shape
    torch.testing.assert_close(ours_flat, fs_logits, atol=ATOL * 10, rtol=1e-5)
    # fairseq labels the positives 1: their count equals our number of valid predictions.
    assert int(fs_labels.sum()) == int(out.mask.sum())


@pytest.mark.parametrize("style", ["args", "cfg"])
def test_tiny_import_matches_fairseq(style, tmp_path):
    fs, cfg = fairseq_model(TINY)
    path = tmp_path / "fairseq.pt"
    torch.save(fairseq_obj(fs, cfg, style), path)
    model, info = load_checkpoint(path)
    assert info["source"] == "fairseq"
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in fs.parameters())
    assert_parity(fs, model, torch.randn(2, 8000))


def test_large_import_matches_fairseq(tmp_path):
    fs, cfg = fairseq_model(LARGE, seed=1)
    assert sum(p.numel() for p in fs.parameters()) == 32_537_088
    model, _ = model_from_fairseq(fairseq_obj(fs, cfg, "args"))
    assert sum(p.numel() for p in model.parameters()) == 32_537_088
    assert model.offset == 3 == fs.wav2vec_predictions.offset
    assert_parity(fs, model, torch.randn(1, 6000) * 0.1)


def test_export_round_trip_loads_in_fairseq(tmp_path):
    from fairseq import checkpoint_utils

    fs, cfg = fairseq_model(TINY, seed=2)
    src = tmp_path / "src.pt"
    torch.save(fairseq_obj(fs, cfg, "cfg"), src)
    model, toolkit_ckpt = import_fairseq(src, tmp_path / "toolkit.pt")
    exported = export_fairseq(toolkit_ckpt, tmp_path / "exported.pt")

    state = checkpoint_utils.load_checkpoint_to_cpu(str(exported))
    fs_back = fairseq_wav2vec.Wav2VecModel.build_model(state["cfg"].model, task=None)
    fs_back.load_state_dict(state["model"], strict=True)
    fs_back.eval()
    assert_parity(fs_back, model, torch.randn(2, 7000))
    # And the re-imported export is the same model again.
    again, _ = load_checkpoint(exported)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_projected_features_variants_match(tmp_path):
    for project in ("same", "new"):
        fs, cfg = fairseq_model(
            {"conv_feature_layers": TINY["conv_feature_layers"], "conv_aggregator_layers": "[(32, 2, 1), (32, 3, 1)]"},
            seed=3,
            project_features=project,
        )
        model, _ = model_from_fairseq(fairseq_obj(fs, cfg, "cfg"))
        wav = torch.randn(1, 6000)
        torch.manual_seed(5)
        with torch.no_grad():
            fs_logits = fs(wav)["cpc_logits"]
        torch.manual_seed(5)
        with torch.no_grad():
            out = model(wav, negatives="fairseq")
        torch.testing.assert_close(flatten_like_fairseq(out.logits, model.offset, out.z.shape[-1]), fs_logits, atol=1e-4, rtol=1e-5)


def test_infonce_training_exports_as_infonce_and_fairseq_computes_the_same_loss(tmp_path):
    """A model pretrained with InfoNCE records it; the export makes fairseq's model InfoNCE too."""
    import pytorch_lightning as pl
    from fairseq import checkpoint_utils
    from torch.utils.data import DataLoader

    from toolkit.cli import main
    from toolkit.models.loss import contrastive_loss
    from toolkit.training.module import Wav2VecPretraining

    torch.manual_seed(0)
    data = [{"audio": torch.randn(2, 8000) * 0.1, "lengths": torch.tensor([8000, 8000]), "keys": ["a", "b"]}] * 2
    module = Wav2VecPretraining(preset="tiny", loss="infonce", lr=1e-3, warmup_updates=1, max_updates=10)
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(data, batch_size=None))
    ckpt = tmp_path / "infonce.ckpt"
    trainer.save_checkpoint(ckpt)
    assert load_checkpoint(ckpt)[1]["training"] == {"loss": "infonce", "balanced": False}

    exported = tmp_path / "fairseq.pt"
    assert main(["export-fairseq", str(ckpt), "--output", str(exported)]) == 0
    state = checkpoint_utils.load_checkpoint_to_cpu(str(exported))
    assert state["cfg"].criterion.infonce is True and state["cfg"].model.infonce is True
    fs = fairseq_wav2vec.Wav2VecModel.build_model(state["cfg"].model, task=None).eval()
    fs.load_state_dict(state["model"], strict=True)
    assert fs.wav2vec_predictions.infonce is True

    # fairseq's InfoNCE loss on its own outputs equals ours, with the same negatives.
    ours = load_checkpoint(ckpt)[0]
    wav = torch.randn(2, 7000) * 0.1
    torch.manual_seed(7)
    with torch.no_grad():
        out = fs(wav)
        fs_loss = torch.nn.functional.cross_entropy(out["cpc_logits"], out["cpc_targets"], reduction="sum")
    torch.manual_seed(7)
    with torch.no_grad():
        mine = ours(wav, negatives="fairseq")
    loss_sum, size = contrastive_loss(mine.logits, mine.mask, "infonce")
    assert out["cpc_logits"].shape[0] == int(size)
    torch.testing.assert_close(loss_sum, fs_loss, atol=1e-3, rtol=1e-5)

    # Re-importing the export keeps the loss; a conflicting --loss is refused.
    assert load_checkpoint(exported)[1]["training"]["loss"] == "infonce"
    with pytest.raises(CheckpointError, match="infonce loss, not bce"):
        export_fairseq(ckpt, tmp_path / "wrong.pt", loss="bce")
