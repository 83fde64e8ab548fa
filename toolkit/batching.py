"""Length-aware batching shared by the training loader and the scorer: which items go together
(:func:`pack_by_padded_size`) and how they become one zero-padded tensor (:func:`pad_right`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def pack_by_padded_size(lengths: Sequence[int], max_padded: int, *, longest_first: bool = False) -> list[list[int]]:
    """Greedily group indices, sorted by length, so that ``len(batch) * max(length) <= max_padded``.

    This is fairseq's ``max_tokens`` rule for right-padded batches. An item longer than the budget
    forms a batch of its own. ``longest_first`` orders the batches from the longest items down.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=longest_first)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        padded = max(lengths[current[0]], lengths[i]) if current else lengths[i]
        if current and (len(current) + 1) * padded > max_padded:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_right(waves: Sequence[torch.Tensor | np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D waveforms as ``(float32 [B, max_len] right-padded with zeros, int64 lengths [B])``."""
    tensors = [torch.as_tensor(w) for w in waves]
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
    out = torch.zeros(len(tensors), int(lengths.max()) if tensors else 0, dtype=torch.float32)
    for row, t in enumerate(tensors):
        out[row, : t.shape[0]] = t
    return out, lengths
