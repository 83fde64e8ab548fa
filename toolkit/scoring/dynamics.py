"""Latent dynamics (toolkit extension, not the paper's method): how much the representation changes
from one frame to the next.

Issue 15's round 5 (``docs/results.md``, "Beyond the paper"), fixed before it was computed. The
damage that fools ``p_pos.mean`` (codecs) makes speech smoother in time, so the future gets easier
to predict; these measures ask instead how much new detail each frame brings:

``dyn:z.step``  mean over consecutive frame pairs of ``1 - cos(z_t, z_{t+1})`` (the latent)
``dyn:c.step``  the same for the context ``c``

Higher = more change per frame = better. No reference audio, no codebook, nothing fitted; both come
from the network pass the paper's measures already make.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DYNAMICS_VERSION = 1
DYNAMICS_MEASURES = ("dyn:z.step", "dyn:c.step")


def frame_step_distance(x: Tensor, frame_lengths: Tensor) -> Tensor:
    """``[B]``: for ``x [B, C, F]``, the mean of ``1 - cos(x[b, :, t], x[b, :, t + 1])`` over
    ``t + 1 < frame_lengths[b]`` (padding never counts); NaN for a clip of fewer than 2 frames."""
    cos = torch.nn.functional.cosine_similarity(x[:, :, :-1].float(), x[:, :, 1:].float(), dim=1, eps=1e-8)
    pairs = torch.arange(x.shape[-1] - 1, device=x.device)[None] + 1 < frame_lengths.to(x.device)[:, None]
    count = pairs.sum(1)
    total = torch.where(pairs, 1 - cos, torch.zeros_like(cos)).sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


class Dynamics:
    """The ``dynamics`` family for :class:`~toolkit.scoring.extensions.ExtensionScorer`."""

    measures = list(DYNAMICS_MEASURES)  # deterministic: no draws, no bank

    def fingerprint(self) -> dict:
        return {"family": "dynamics", "version": DYNAMICS_VERSION}

    def compute(self, encoding: tuple[Tensor, Tensor, Tensor, Tensor], key: str) -> dict[str, Tensor]:
        """Quality-oriented ``{measure: [B]}`` from one encoding."""
        z, c, _, frame_lengths = encoding
        return {"dyn:z.step": frame_step_distance(z, frame_lengths).float(),
                "dyn:c.step": frame_step_distance(c, frame_lengths).float()}
