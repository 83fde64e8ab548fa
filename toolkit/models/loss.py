"""The contrastive objective (pure functions over ``logits [B, K, T, 1+N]`` and ``mask [B, K, T]``).

fairseq's ``wav2vec`` criterion, BCE mode (the default for wav2vec_large): every candidate is an
independent binary decision, the true future frame labelled 1 and each negative labelled 0, and
``binary_cross_entropy_with_logits`` is **summed** over all of them. fairseq then divides the
gradient by ``sample_size`` = the number of positives (valid predictions), and reports
``loss / sample_size / ln 2`` (bits). ``balanced_classes`` weights each negative by ``1 / N``.

InfoNCE (``infonce=True`` in fairseq): cross-entropy of the positive against the softmax over
``1 + N`` candidates, summed; ``sample_size`` is again the number of predictions.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

LossKind = Literal["bce", "infonce"]


def contrastive_loss_terms(logits: Tensor, kind: LossKind = "bce", balanced: bool = False) -> Tensor:
    """Per-prediction loss ``[B, K, T]`` in nats (float32), before masking."""
    logits = logits.float()
    if kind == "infonce":
        return torch.logsumexp(logits, dim=-1) - logits[..., 0]
    if kind != "bce":
        raise ValueError(f"loss kind must be 'bce' or 'infonce', got {kind!r}")
    # BCE with label 1 for index 0 and 0 for the rest: softplus(-x_pos) + sum softplus(x_neg).
    pos = F.softplus(-logits[..., 0])
    neg = F.softplus(logits[..., 1:].contiguous())  # a strided slice takes softplus's scalar path: ~10x slower
    if balanced:
        neg = neg / neg.shape[-1]
    return pos + neg.sum(dim=-1)


def contrastive_loss(
    logits: Tensor, mask: Tensor, kind: LossKind = "bce", balanced: bool = False
) -> tuple[Tensor, Tensor]:
    """``(loss_sum, sample_size)`` over valid predictions, as fairseq computes them.

    Optimise ``loss_sum / sample_size``; both are returned so that distributed training can
    normalise by the global number of predictions, like fairseq.
    """
    terms = contrastive_loss_terms(logits, kind, balanced)
    maskf = mask.to(terms.dtype)
    return (terms * maskf).sum(), maskf.sum()


def contrastive_accuracy(logits: Tensor, mask: Tensor) -> Tensor:
    """Per-step top-1 accuracy ``[K]``: the positive has the largest logit (ties count as wrong)."""
    pos = logits[..., 0]
    best_neg = logits[..., 1:].max(dim=-1).values
    correct = ((pos > best_neg) & mask).sum(dim=(0, 2)).float()
    return correct / mask.sum(dim=(0, 2)).clamp(min=1).float()
