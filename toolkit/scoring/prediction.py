"""Prediction checks (toolkit extension, not the paper's method): how wav2vec's predictions behave.

Issue 15's round 3 (``docs/results.md``, "Beyond the paper"): four measures fixed before any was
computed, all from the network pass the paper's measures already make (plus one pass over the
time-reversed clip for ``pred:rev_agree``):

``pred:err.mean``     mean cosine distance between the prediction ``W_k c_t`` and the true latent
                      ``z[t + offset + k]`` over valid predictions: the prediction error in latent
                      space, without the scale of ``z``. A distance: reported negated.
``pred:calib``        calibration per prediction step: for each step ``k``, |mean confidence (the
                      winning candidate's softmax probability) - accuracy (the fraction of frames
                      where the true frame wins)|, then the mean over steps. Negatives from the
                      utterance, as the paper's; the mean over draws. Reported negated.
``pred:rev_agree``    Pearson correlation, over latent frames, of the per-target-frame ``p_pos``
                      (mean over the steps that predict the frame) of the forward pass and of the
                      time-reversed pass flipped back to forward time. Higher = better.
``pred:two_sided``    ``-|p_pos.mean - mu| / sigma`` with ``mu``, ``sigma`` of ``p_pos.mean`` over the
                      bank's reference clips: too predictable is as suspect as too unpredictable.

The maths are the pure functions below; :class:`PredictionChecks` wires them to a model and a bank.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from toolkit.models.wav2vec import prediction_mask
from toolkit.scoring.bank import standardise, utterance_draws
from toolkit.scoring.measures import aggregate, quantities

PREDICTION_VERSION = 1
# measure -> sign applied to the raw value (reported scores are quality-oriented)
PREDICTION_SIGNS = {"pred:err.mean": -1, "pred:calib": -1, "pred:rev_agree": 1, "pred:two_sided": 1}
PREDICTION_MEASURES = tuple(PREDICTION_SIGNS)


def prediction_cosine_distance(z: Tensor, predictions: Tensor, frame_lengths: Tensor, offset: int) -> tuple[Tensor, Tensor]:
    """``1 - cos(predictions[b, :, t, k], z[b, :, t + offset + k])`` as ``[B, K, T]``, with its mask.

    ``z [B, C, F]``, ``predictions [B, C, F, K]`` and ``frame_lengths [B]`` as :meth:`Wav2VecModel.encode`
    gives them. Entries outside the mask are 0.
    """
    batch, channels, frames = z.shape
    steps = predictions.shape[-1]
    mask = prediction_mask(frames, steps, offset, frame_lengths.to(z.device))
    context = frames - offset
    pred = predictions.float().permute(0, 3, 2, 1)[:, :, :context]  # [B, K, T, C]
    zt = torch.nn.functional.pad(z.float().transpose(1, 2), (0, 0, 0, steps - 1))  # [B, F+K-1, C]
    targets = torch.stack([zt[:, offset + k : offset + k + context] for k in range(steps)], 1)  # [B, K, T, C]
    cos = torch.nn.functional.cosine_similarity(pred, targets, dim=-1, eps=1e-8)
    return torch.where(mask, 1 - cos, torch.zeros_like(cos)), mask


def step_calibration_error(logits: Tensor, mask: Tensor) -> Tensor:
    """``[B]``: the mean over steps of |mean confidence - accuracy| over each step's valid frames.

    ``logits [B, K, T, 1+N]`` (index 0 the true frame), ``mask [B, K, T]``. Confidence is the largest
    softmax probability, accuracy whether the true frame has the largest logit. Steps without a valid
    frame are left out; a clip with none gets NaN.
    """
    q = quantities(logits, ["p_max", "correct"])
    mask = mask.bool()
    count = mask.sum(2)  # [B, K]
    zero = torch.zeros_like(q["p_max"])
    confidence = torch.where(mask, q["p_max"], zero).sum(2) / count.clamp(min=1)
    accuracy = torch.where(mask, q["correct"], zero).sum(2) / count.clamp(min=1)
    has = count > 0
    gap = torch.where(has, (confidence - accuracy).abs(), torch.zeros_like(confidence))
    value = gap.sum(1) / has.sum(1).clamp(min=1)
    return torch.where(has.any(1), value, torch.full_like(value, math.nan))


def target_profile(per_prediction: Tensor, mask: Tensor, offset: int, frames: int) -> Tensor:
    """``[B, F]``: for each latent frame, the mean of ``per_prediction [B, K, T]`` over the valid
    predictions that target it (``t + offset + k``); NaN for a frame no prediction targets."""
    batch, steps, context = per_prediction.shape
    total = per_prediction.new_zeros(batch, frames)
    count = per_prediction.new_zeros(batch, frames)
    valid = mask.to(per_prediction.dtype)
    for k in range(steps):
        window = slice(offset + k, offset + k + context)
        n = len(range(frames)[window])  # targets past the last frame are masked anyway
        total[:, window] += (per_prediction[:, k] * valid[:, k])[:, :n]
        count[:, window] += valid[:, k, :n]
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


def profile_agreement(forward: Tensor, backward: Tensor) -> Tensor:
    """Pearson correlation of two ``[B, F]`` profiles over the frames where both are finite: ``[B]``.

    NaN where fewer than 3 frames are shared or either profile is constant on them.
    """
    both = torch.isfinite(forward) & torch.isfinite(backward)
    n = both.sum(1).to(forward.dtype)
    zero = torch.zeros_like(forward)
    fx, bx = torch.where(both, forward, zero), torch.where(both, backward, zero)
    mf, mb = fx.sum(1) / n.clamp(min=1), bx.sum(1) / n.clamp(min=1)
    df, db = torch.where(both, fx - mf[:, None], zero), torch.where(both, bx - mb[:, None], zero)
    cov, vf, vb = (df * db).sum(1), (df**2).sum(1), (db**2).sum(1)
    r = cov / (vf * vb).sqrt()
    ok = (n >= 3) & (vf > 0) & (vb > 0)
    return torch.where(ok, r, torch.full_like(r, math.nan))


def two_sided_distance(value: Tensor, mean: float, std: float) -> Tensor:
    """``-|value - mean| / std``: 0 at the reference mean, lower either way. ``std`` must be positive."""
    return -standardise(value, mean, std, "p_pos.mean").abs()


class PredictionChecks:
    """The ``prediction`` family for :class:`~toolkit.scoring.extensions.ExtensionScorer`.

    Negatives are drawn as :class:`~toolkit.scoring.scorer.Wav2VecScorer` draws them (seeded by
    ``(seed, key)``, ``draws`` times); the reversed pass draws from ``(seed, key + "|reversed")``.
    ``bank`` supplies the reference statistics of ``p_pos.mean`` for ``pred:two_sided``.
    """

    measures = list(PREDICTION_MEASURES)
    needs_clip = True  # ExtensionScorer passes the waveform and its network pass (for the reversed clip)

    def __init__(self, model: torch.nn.Module, bank, draws: int = 3, seed: int = 0) -> None:
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        if "p_pos.mean" not in bank.reference:
            raise ValueError(f"bank {bank.sha256[:12]} has no reference statistics of p_pos.mean")
        self.model, self.bank, self.draws, self.seed = model, bank, draws, seed

    def fingerprint(self) -> dict:
        return {"family": "prediction", "version": PREDICTION_VERSION, "draws": self.draws, "seed": self.seed}

    def _over_draws(self, encoding: tuple[Tensor, Tensor, Tensor, Tensor], key: str) -> tuple[Tensor, Tensor, Tensor]:
        """Means over the draws of the per-frame ``p_pos`` profile ``[B, F]``, ``p_pos.mean`` ``[B]`` and
        the per-step calibration error ``[B]`` (raw, before any sign)."""
        frames = encoding[0].shape[-1]
        profile = mean_p = calib = None
        for logits, mask in utterance_draws(self.model, encoding, key, self.draws, self.seed):
            p = quantities(logits, ["p_pos"])["p_pos"]
            prof = target_profile(p, mask, self.model.offset, frames)
            m = aggregate(p, mask.bool(), "mean", "all")
            c = step_calibration_error(logits, mask)
            profile = prof if profile is None else profile + prof
            mean_p = m if mean_p is None else mean_p + m
            calib = c if calib is None else calib + c
        return profile / self.draws, mean_p / self.draws, calib / self.draws

    def compute(self, encoding: tuple[Tensor, Tensor, Tensor, Tensor], key: str, clip: Tensor,
                encode: Callable[[Tensor], tuple[Tensor, Tensor, Tensor, Tensor]]) -> dict[str, Tensor]:
        """Quality-oriented ``{measure: [1]}`` for one clip ``[1, time]`` and its encoding; ``encode`` is
        the scorer's network pass, used once more for the clip played backwards."""
        reversed_encoding = encode(clip.flip(-1))
        z, _, predictions, frame_lengths = encoding
        err, mask = prediction_cosine_distance(z, predictions, frame_lengths, self.model.offset)
        forward, p_pos_mean, calib = self._over_draws(encoding, key)
        backward, _, _ = self._over_draws(reversed_encoding, key + "|reversed")
        mean, std = self.bank.reference["p_pos.mean"]
        raw = {
            "pred:err.mean": aggregate(err, mask, "mean", "all"),
            "pred:calib": calib,
            "pred:rev_agree": profile_agreement(forward, backward.flip(-1)),
        }
        out = {m: (PREDICTION_SIGNS[m] * v).float() for m, v in raw.items()}
        out["pred:two_sided"] = two_sided_distance(p_pos_mean, mean, std).float()
        return {m: out[m] for m in self.measures}
