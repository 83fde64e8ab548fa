"""Uncertainty of a wav2vec 2.0 CTC ASR model, for comparison with the wav2vec (v1) measures.

The model is torchaudio's :class:`~torchaudio.models.Wav2Vec2Model` with a CTC head
(``aux_num_out``). For each frame the CTC output is a softmax over the vocabulary; its entropy is the
frame's uncertainty. "Handicapping" turns inference-time dropout on at probability ``p`` (every
``nn.Dropout`` and the attention dropout; layer drop stays off) and runs ``K`` stochastic passes:

``ctc_entropy.mean|max|std``   entropy per frame, averaged over the passes, then aggregated over frames
``ctc_pred_entropy.mean``      entropy of the pass-averaged posterior (total predictive uncertainty)
``ctc_mutual_info.mean``       predictive minus expected entropy (disagreement between passes, BALD)

All have sign ``-1`` (reported score = minus the value, so higher = better predicted quality).

Weights are never downloaded. Load a local fairseq checkpoint (:func:`load_fairseq_wav2vec2`, needs
fairseq), a local Hugging Face folder (:func:`load_huggingface_wav2vec2`, needs transformers), or a
torchaudio state dict saved with :func:`save_wav2vec2`.

Passes are seeded (``seed + pass``) from a forked RNG. With dropout the masks are drawn per batch,
so handicapped scores depend on batching; with ``p = 0`` scores are deterministic (and batching only
matters through the model's own padding handling: torchaudio's ``group_norm`` feature extractor of
base models normalises over the padded length).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from toolkit.audio import SAMPLE_RATE
from toolkit.errors import CheckpointError
from toolkit.scoring.scorer import autocast_context, check_batch, resolve_device, state_dict_hash

MEASURES: dict[str, str] = {
    "ctc_entropy.mean": "mean over frames of the CTC posterior entropy (averaged over passes)",
    "ctc_entropy.max": "max over frames of the CTC posterior entropy (averaged over passes)",
    "ctc_entropy.std": "std over frames of the CTC posterior entropy (averaged over passes)",
    "ctc_pred_entropy.mean": "mean over frames of the entropy of the pass-averaged posterior",
    "ctc_mutual_info.mean": "mean over frames of predictive minus expected entropy (pass disagreement)",
}


def set_handicap(model: nn.Module, p: float) -> int:
    """Put the model in eval mode, then enable dropout at probability ``p`` in every dropout site.

    Returns the number of dropout sites changed. ``p = 0`` leaves a fully deterministic model.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    model.eval()
    sites = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
            module.train(p > 0)
            sites += 1
        elif type(module).__name__ == "SelfAttention" and hasattr(module, "dropout"):
            module.dropout = p  # torchaudio's attention dropout is a float used when training
            module.train(p > 0)
            sites += 1
    return sites


def ctc_frame_stats(logits_passes: Tensor, frame_lengths: Tensor) -> dict[str, Tensor]:
    """Raw measures ``{name: [B]}`` from logits ``[P, B, F, V]`` (P passes) and valid ``frame_lengths [B]``."""
    logp = torch.log_softmax(logits_passes.float(), dim=-1)
    p = logp.exp()
    entropy = -(p * logp).sum(-1).mean(0)  # [B, F] expected entropy over passes
    mean_p = p.mean(0)
    pred_entropy = -(mean_p * torch.log(mean_p.clamp_min(1e-30))).sum(-1)  # [B, F]
    frames = logits_passes.shape[2]
    mask = torch.arange(frames, device=frame_lengths.device)[None, :] < frame_lengths[:, None]
    count = mask.sum(1).clamp(min=1)

    def mean(x: Tensor) -> Tensor:
        return torch.where(mask, x, 0).sum(1) / count

    m = mean(entropy)
    std = (torch.where(mask, (entropy - m[:, None]) ** 2, 0).sum(1) / count).sqrt()
    out = {
        "ctc_entropy.mean": m,
        "ctc_entropy.max": torch.where(mask, entropy, -math.inf).amax(1),
        "ctc_entropy.std": std,
        "ctc_pred_entropy.mean": mean(pred_entropy),
        "ctc_mutual_info.mean": mean(pred_entropy - entropy),
    }
    empty = mask.sum(1) == 0
    return {k: torch.where(empty, math.nan, v) for k, v in out.items()}


class Wav2Vec2CTCScorer:
    """CTC-entropy scores of a torchaudio wav2vec2 CTC model, with optional dropout handicap."""

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model: nn.Module,
        measures: Sequence[str] | None = None,
        dropout: float = 0.0,
        passes: int = 1,
        seed: int = 0,
        device: str | torch.device | None = "cpu",
        dtype: str | None = None,
        name: str = "wav2vec2-ctc",
    ) -> None:
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        aux = getattr(model, "aux", None)
        if aux is None:
            raise ValueError("the wav2vec2 model has no CTC head (build it with aux_num_out)")
        self.measures = list(measures or MEASURES)
        unknown = [m for m in self.measures if m not in MEASURES]
        if unknown:
            raise ValueError(f"unknown wav2vec2 measures {unknown}; choose from {', '.join(MEASURES)}")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.dropout, self.passes, self.seed, self.dtype, self.name = dropout, passes, seed, dtype, name
        self.sites = set_handicap(self.model, dropout)
        self.min_samples = _min_samples(self.model)
        self._hash: str | None = None

    def fingerprint(self) -> dict:
        if self._hash is None:
            self._hash = state_dict_hash(self.model)
        return {
            "scorer": "wav2vec2-ctc", "weights_sha256": self._hash, "dropout": self.dropout,
            "passes": self.passes, "seed": self.seed, "dtype": self.dtype or "float32",
            "measures": sorted(self.measures), "version": 1,
        }

    @torch.inference_mode()
    def score(self, wavs: Tensor, lengths: Tensor | None = None, keys: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Quality-oriented scores ``{measure: [B]}`` (minus the uncertainty) for ``wavs [B, time]``."""
        lengths, _ = check_batch(wavs, lengths, keys)
        wavs, lengths = wavs.to(self.device, torch.float32), lengths.to(self.device)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        passes, frame_lengths = [], None
        with torch.random.fork_rng(devices=devices):
            for k in range(self.passes):
                torch.manual_seed(self.seed + k)
                with autocast_context(self.device, self.dtype):
                    logits, frame_lengths = self.model(wavs, lengths)
                passes.append(logits.float())
        if frame_lengths is None:
            frame_lengths = torch.full((wavs.shape[0],), passes[0].shape[1], device=self.device)
        stats = ctc_frame_stats(torch.stack(passes), frame_lengths)
        return {m: -stats[m].cpu() for m in self.measures}


def _min_samples(model: nn.Module) -> int:
    """Receptive field of the convolutional feature extractor (one output frame)."""
    layers = getattr(getattr(model, "feature_extractor", None), "conv_layers", None)
    if layers is None:
        return 400
    from toolkit.models.components import receptive_field

    return receptive_field([(layer.conv.kernel_size[0], layer.conv.stride[0]) for layer in layers])[0]


# --------------------------------------------------------------------------------------------------
# Loading local weights (never downloads)


def save_wav2vec2(path: str | os.PathLike, model: nn.Module, config: dict) -> None:
    """Save a torchaudio wav2vec2 model with the keyword arguments of ``torchaudio.models.wav2vec2_model``."""
    from toolkit.io import write_torch

    write_torch(path, {"format": "toolkit-wav2vec2", "config": dict(config), "state_dict": model.state_dict()})


def load_wav2vec2(path: str | os.PathLike) -> nn.Module:
    """A model saved by :func:`save_wav2vec2`, a local fairseq checkpoint, or a local HF folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        return load_huggingface_wav2vec2(path)
    from toolkit.models.checkpoint import safe_torch_load

    data = safe_torch_load(path)  # a missing, corrupt or unsafe file is a CheckpointError naming it
    if isinstance(data, dict) and data.get("format") == "toolkit-wav2vec2":
        from torchaudio.models import wav2vec2_model

        try:
            model = wav2vec2_model(**data["config"])
            model.load_state_dict(data["state_dict"])
        except (KeyError, TypeError, RuntimeError) as err:
            raise CheckpointError(path, f"damaged toolkit wav2vec2 checkpoint ({type(err).__name__}: {err})") from None
        return model
    if isinstance(data, dict) and "model" in data and ("cfg" in data or "args" in data):
        return load_fairseq_wav2vec2(path)
    keys = ", ".join(sorted(map(str, data))[:6]) if isinstance(data, dict) else type(data).__name__
    raise CheckpointError(path, f"not a wav2vec 2.0 checkpoint (top-level keys: {keys})")


def load_fairseq_wav2vec2(path: str | os.PathLike) -> nn.Module:
    """A local fairseq wav2vec 2.0 CTC checkpoint, converted with torchaudio's ``import_fairseq_model``."""
    from toolkit.models.checkpoint import safe_torch_load

    # fairseq's own torch.load has no allow-list, and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 turns it into
    # a plain unpickler: vet the file with ours first, so a pickle that would run code is refused here.
    safe_torch_load(path)
    try:
        from fairseq import checkpoint_utils
    except Exception as err:  # fairseq may be missing or fail to import on this Python
        raise CheckpointError(path, f"reading a fairseq checkpoint needs fairseq ({type(err).__name__}: {err})") from None
    from torchaudio.models.wav2vec2.utils import import_fairseq_model

    try:
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(path)])
        return import_fairseq_model(models[0].eval())
    except Exception as err:
        raise CheckpointError(path, f"not a fairseq wav2vec 2.0 checkpoint ({type(err).__name__}: {err})") from None


def load_huggingface_wav2vec2(folder: str | os.PathLike) -> nn.Module:
    """A local Hugging Face ``Wav2Vec2ForCTC`` folder (``local_files_only``), via ``import_huggingface_model``."""
    try:
        from transformers import Wav2Vec2ForCTC
    except Exception as err:
        raise CheckpointError(folder, f"reading a Hugging Face model needs transformers ({err})") from None
    from torchaudio.models.wav2vec2.utils import import_huggingface_model

    try:
        original = Wav2Vec2ForCTC.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:
        raise CheckpointError(folder, f"cannot load a local Wav2Vec2ForCTC ({type(err).__name__}: {err})") from None
    return import_huggingface_model(original.eval())
