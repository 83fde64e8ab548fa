"""Length-aware batching shared by the training loader and the scorer."""

from __future__ import annotations

from collections.abc import Sequence


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
