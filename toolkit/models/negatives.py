"""Negative sampling for the contrastive task.

Indices are returned as ``[batch, frame, negatives]``: for target frame ``s`` of utterance ``b``,
``idx[b, s, n]`` is the frame whose latent is the n-th distractor. Negatives belong to the *target*
frame, so every prediction step that predicts frame ``s`` sees the same distractors (this is also
what fairseq does).

Two modes:

``"uniform"`` (the toolkit's default)
    Uniform over the utterance's own *valid* frames, never the anchor itself. Padding is never drawn,
    so a padded batch gives the same negatives as one-at-a-time scoring when each utterance has its
    own generator.

``"fairseq"``
    Bit-for-bit what fairseq's ``Wav2VecPredictionsModel.sample_negatives`` draws (with the same
    generator state). It draws from ``[0, padded_length)``, padding included. It makes two draws
    and throws the first away. And its anchor exclusion is applied in a ``t``-major layout, while
    the indices are then read as ``n``-major. As a result, the anchor is *not* excluded: a negative
    can be the positive frame itself, and a different frame is skipped instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def sample_uniform(
    frame_lengths: Tensor, max_frames: int, num_negatives: int, generator: GeneratorArg = None
) -> Tensor:
    """Distractors uniform over each utterance's valid frames, excluding the anchor.

    ``generator`` may be one generator for the batch (vectorised draw), or one per utterance (the
    draw of utterance ``b`` depends only on its own length and generator: batching-invariant).
    Returns int64 ``[batch, max_frames, num_negatives]`` on ``frame_lengths.device``.
    """
    device = frame_lengths.device
    batch = frame_lengths.shape[0]
    if generator is not None and not isinstance(generator, torch.Generator):
        generators = list(generator)
        if len(generators) != batch:
            raise ValueError(f"got {len(generators)} generators for a batch of {batch}")
        out = torch.zeros(batch, max_frames, num_negatives, dtype=torch.long)
        for b, g in enumerate(generators):
            n = int(frame_lengths[b])
            if n > 0:
                out[b, :n] = _draw(torch.rand(n, num_negatives, generator=g, device=g.device).cpu(), n)
        return out.to(device)
    gen_device = generator.device if generator is not None else device
    u = torch.rand(batch, max_frames, num_negatives, generator=generator, device=gen_device).to(device)
    scale = (frame_lengths - 1).clamp(min=0).to(u.dtype)[:, None, None]
    idx = (u * scale).long()  # [0, len - 2]
    anchor = torch.arange(max_frames, device=device)[None, :, None]
    return idx + (idx >= anchor).long()  # skip the anchor: [0, len - 1] \ {t}


def _draw(u: Tensor, n: int) -> Tensor:
    idx = (u * max(n - 1, 0)).long()
    anchor = torch.arange(n)[:, None]
    return idx + (idx >= anchor).long()


def sample_fairseq(
    batch: int, max_frames: int, num_negatives: int, generator: torch.Generator | None = None
) -> Tensor:
    """fairseq's draw, reproduced exactly (including its quirks; see the module docstring)."""
    high = max_frames
    if high <= 1:
        raise ValueError(f"fairseq negative sampling needs at least 2 frames, got {high}")
    size = (batch, num_negatives * max_frames)
    torch.randint(0, high, size, generator=generator)  # fairseq draws once and discards it
    idx = torch.randint(0, high - 1, size, generator=generator)
    t_major = torch.arange(max_frames).unsqueeze(-1).expand(-1, num_negatives).flatten()
    idx[idx >= t_major] += 1
    # fairseq then reads the flat draw as [negatives, frame] (n-major).
    return idx.view(batch, num_negatives, max_frames).transpose(1, 2).contiguous()
