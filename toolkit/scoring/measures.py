"""Uncertainty measures: pure functions from contrastive logits to one value per utterance.

Input is what :class:`~toolkit.models.wav2vec.Wav2VecModel` gives: ``logits [B, K, T, 1+N]`` (index 0
is the true future frame, ``1..N`` the distractors) and ``mask [B, K, T]`` (valid predictions).

Every measure is a *quantity* per prediction ``(k, t)``, then an *aggregation* over an *axis*:

quantities (per step ``k`` and context frame ``t``)
    ``entropy``      entropy (nats) of the softmax over the ``1+N`` candidates
    ``p_pos``        softmax probability of the true positive
    ``p_max``        largest softmax probability (confidence, whichever candidate wins)
    ``sig_pos``      sigmoid of the positive's logit: fairseq's binary (BCE) view, P(positive is real)
    ``bin_entropy``  mean over the ``1+N`` candidates of the Bernoulli entropy of ``sigmoid(logit)``:
                     the binary view's uncertainty
    ``correct``      1 where the positive has the largest logit (top-1 accuracy)

aggregations and axes
    ``mean``                     mean over all valid ``(k, t)``
    ``max`` / ``std``            over all valid ``(k, t)``
    ``max_frames`` / ``std_frames``  over frames within each step, then the mean over steps
    ``max_steps`` / ``std_steps``    over steps for each frame, then the mean over frames

plus the per-utterance contrastive loss itself, ``loss_bce`` (fairseq's default criterion: summed BCE
over candidates, mean over valid predictions) and ``loss_infonce`` (cross-entropy of the positive).

Sign convention. The method's hypothesis is that *high uncertainty means low quality*. Every measure
carries ``sign``; a scorer reports ``sign * value`` so that **a higher score always means higher
predicted quality**, and a positive correlation with MOS means the measure ranks as the hypothesis
predicts. Uncertainty-like quantities (``entropy``, ``bin_entropy``, losses) and every ``std`` have
sign ``-1``; confidence-like ones (``p_pos``, ``p_max``, ``sig_pos``, ``correct``) have ``+1``. The
sign of the ``std`` measures is a convention (more erratic uncertainty = worse), not a finding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from toolkit.models.loss import contrastive_loss_terms


@dataclass(frozen=True)
class Measure:
    """One registered measure. ``value = aggregate(quantity)``; the reported score is ``sign * value``."""

    name: str
    quantity: str
    aggregation: str  # mean | max | std | loss
    axis: str  # all | frames | steps
    sign: int
    domain: str  # softmax over 1+N | sigmoid per candidate | argmax | loss
    description: str


QUANTITIES: dict[str, tuple[int, str, str]] = {
    # name: (sign of mean/max, softmax domain, description)
    "entropy": (-1, "softmax over 1+N candidates", "entropy (nats) of the candidate softmax"),
    "p_pos": (+1, "softmax over 1+N candidates", "softmax probability of the true positive"),
    "p_max": (+1, "softmax over 1+N candidates", "largest softmax probability"),
    "sig_pos": (+1, "sigmoid per candidate (fairseq BCE view)", "sigmoid of the positive's logit"),
    "bin_entropy": (-1, "sigmoid per candidate (fairseq BCE view)", "mean Bernoulli entropy of the candidates"),
    "correct": (+1, "argmax over 1+N candidates", "1 when the positive has the largest logit"),
}
AGGREGATIONS: tuple[tuple[str, str, str], ...] = (
    # suffix, aggregation, axis
    ("mean", "mean", "all"),
    ("max", "max", "all"),
    ("std", "std", "all"),
    ("max_frames", "max", "frames"),
    ("std_frames", "std", "frames"),
    ("max_steps", "max", "steps"),
    ("std_steps", "std", "steps"),
)


def _build_registry() -> dict[str, Measure]:
    registry: dict[str, Measure] = {}
    for quantity, (sign, domain, text) in QUANTITIES.items():
        for suffix, agg, axis in AGGREGATIONS:
            if quantity == "correct" and agg != "mean":
                continue  # max/std of a 0/1 indicator say little
            name = f"{quantity}.{suffix}"
            axis_text = {
                "all": "over all valid (step, frame) predictions",
                "frames": "over frames within each step, then averaged over steps",
                "steps": "over steps for each frame, then averaged over frames",
            }[axis]
            registry[name] = Measure(
                name, quantity, agg, axis, sign if agg != "std" else -1, domain, f"{agg} of the {text}, {axis_text}"
            )
    registry["loss_bce"] = Measure(
        "loss_bce", "loss_bce", "loss", "all", -1, "sigmoid per candidate (fairseq BCE view)",
        "fairseq's BCE loss (summed over candidates), mean over valid predictions",
    )
    registry["loss_infonce"] = Measure(
        "loss_infonce", "loss_infonce", "loss", "all", -1, "softmax over 1+N candidates",
        "InfoNCE cross-entropy of the positive, mean over valid predictions",
    )
    return registry


MEASURES: dict[str, Measure] = _build_registry()
HEADLINE = ("entropy.mean", "p_pos.mean", "p_max.mean", "sig_pos.mean", "loss_bce", "correct.mean")


def select_measures(patterns: Iterable[str] | None) -> list[str]:
    """Resolve names or shell-style patterns (``entropy.*``) to registered measure names, in order.

    ``None``, ``[]`` or ``["all"]`` select every measure. Raises ``ValueError`` for a pattern that
    matches nothing, listing the valid names.
    """
    import fnmatch

    patterns = list(patterns or [])
    if not patterns or patterns == ["all"]:
        return list(MEASURES)
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in MEASURES if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ValueError(f"unknown measure {pattern!r}; choose from: {', '.join(MEASURES)}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def quantities(logits: Tensor, needed: Iterable[str]) -> dict[str, Tensor]:
    """Per-prediction quantities ``[B, K, T]`` (float32) for the names in ``needed``."""
    logits = logits.float()
    needed = set(needed)
    out: dict[str, Tensor] = {}
    if needed & {"entropy", "p_pos", "p_max"}:
        # torch.log_softmax over a last axis of 1+N = 11 is four times slower than this on CPU
        logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        p = logp.exp()
        if "entropy" in needed:
            out["entropy"] = -(p * logp).sum(-1)
        if "p_pos" in needed:
            out["p_pos"] = p[..., 0]
        if "p_max" in needed:
            out["p_max"] = p.max(-1).values
    if "sig_pos" in needed:
        out["sig_pos"] = torch.sigmoid(logits[..., 0])
    if "bin_entropy" in needed:
        # H(sigmoid(x)) = softplus(x) - x * sigmoid(x), stable for large |x|.
        out["bin_entropy"] = (F.softplus(logits) - logits * torch.sigmoid(logits)).mean(-1)
    if "correct" in needed:
        out["correct"] = (logits[..., 0] > logits[..., 1:].max(-1).values).float()
    if "loss_bce" in needed:
        out["loss_bce"] = contrastive_loss_terms(logits, "bce")
    if "loss_infonce" in needed:
        out["loss_infonce"] = contrastive_loss_terms(logits, "infonce")
    return out


def _masked_mean(x: Tensor, mask: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    count = mask.sum(dims)
    total = torch.where(mask, x, torch.zeros_like(x)).sum(dims)
    return total / count.clamp(min=1), count


def _masked_max(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    return torch.where(mask, x, torch.full_like(x, -math.inf)).amax(dim)


def _masked_std(x: Tensor, mask: Tensor, dims: tuple[int, ...]) -> Tensor:
    mean, count = _masked_mean(x, mask, dims)
    shape = list(mean.shape)
    for d in sorted(dims):
        shape.insert(d, 1)
    dev = torch.where(mask, x - mean.view(shape), torch.zeros_like(x))
    return ((dev**2).sum(dims) / count.clamp(min=1)).sqrt()  # population std


def aggregate(x: Tensor, mask: Tensor, aggregation: str, axis: str) -> Tensor:
    """Reduce ``x [B, K, T]`` over valid entries of ``mask [B, K, T]`` to ``[B]``.

    ``axis="frames"`` reduces over ``T`` per step, then averages over the steps that have at least
    one valid frame; ``axis="steps"`` reduces over ``K`` per frame, then averages over frames.
    An utterance with no valid prediction gets NaN.
    """
    has_any = mask.flatten(1).any(1)
    if aggregation in ("mean", "loss"):
        value, _ = _masked_mean(x, mask, (1, 2))
    elif axis == "all":
        flat_x, flat_m = x.flatten(1), mask.flatten(1)
        value = _masked_max(flat_x, flat_m, 1) if aggregation == "max" else _masked_std(flat_x, flat_m, (1,))
    elif axis in ("frames", "steps"):
        dim = 2 if axis == "frames" else 1
        part_valid = mask.any(dim)  # [B, K] or [B, T]
        if aggregation == "max":
            part = _masked_max(x, mask, dim)
        elif aggregation == "std":
            part = _masked_std(x, mask, (dim,))
        else:
            raise ValueError(f"unknown aggregation {aggregation!r}")
        part = torch.where(part_valid, part, torch.zeros_like(part))
        value = part.sum(1) / part_valid.sum(1).clamp(min=1)
    else:
        raise ValueError(f"unknown axis {axis!r}")
    return torch.where(has_any, value, torch.full_like(value, math.nan))


def compute_measures(logits: Tensor, mask: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """Raw measure values ``{name: [B]}`` (float32, *before* the sign) for one negative draw.

    ``logits [B, K, T, 1+N]``, ``mask [B, K, T]`` bool. ``names`` default to every registered measure.
    """
    if logits.ndim != 4 or mask.shape != logits.shape[:3]:
        raise ValueError(f"expected logits [B,K,T,1+N] and mask [B,K,T], got {tuple(logits.shape)} and {tuple(mask.shape)}")
    names = list(names) if names is not None else list(MEASURES)
    unknown = [n for n in names if n not in MEASURES]
    if unknown:
        raise ValueError(f"unknown measures {unknown}")
    q = quantities(logits, {MEASURES[n].quantity for n in names})
    mask = mask.bool()
    return {n: aggregate(q[MEASURES[n].quantity], mask, MEASURES[n].aggregation, MEASURES[n].axis) for n in names}


def oriented(values: dict[str, Tensor]) -> dict[str, Tensor]:
    """Apply each measure's sign: the result is *higher = better predicted quality*."""
    return {n: v * MEASURES[n].sign for n, v in values.items()}
