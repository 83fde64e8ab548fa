"""Latent typicality (toolkit extension, not the paper's method): how far each frame is from clean speech.

The idea of VQScore (Fu et al., ICLR 2024) applied to wav2vec's own latents: learn a codebook of
``K`` centroids by spherical k-means on the latents ``z`` (and contexts ``c``) of clean real speech,
then score a clip by the cosine distance of each frame to its nearest centroid,

    d(t) = 1 - max_j cos(x_t, mu_j)          in [0, 2] (0: the frame is a codebook entry)

aggregated over the clip's valid frames by ``mean``, ``max`` and ``std``. Distances are
uncertainty-like (far from clean speech = worse), so every reported score is ``-aggregate(d)``:
higher = more typical = better predicted quality.

Measures: ``typ:z.mean``, ``typ:z.max``, ``typ:z.std``, ``typ:c.mean``, ``typ:c.max``, ``typ:c.std``.
The codebook lives in a :class:`~toolkit.scoring.bank.ReferenceBank`; the family :class:`Typicality`
is scored through :class:`~toolkit.scoring.extensions.ExtensionScorer`.

    >>> centroids = spherical_kmeans(frames, k=128, seed=0)        # frames [M, C]
    >>> d = nearest_distance(z.transpose(1, 2), centroids)          # [B, F]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

SPACES = ("z", "c")
AGGREGATIONS = ("mean", "max", "std")
TYPICALITY_MEASURES = tuple(f"typ:{space}.{agg}" for space in SPACES for agg in AGGREGATIONS)
TYPICALITY_VERSION = 1


def _unit(x: Tensor, eps: float = 1e-8) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=eps)


def spherical_kmeans(x: Tensor, k: int, *, iterations: int = 30, seed: int = 0) -> Tensor:
    """Unit-norm centroids ``[k, C]`` of the rows of ``x [M, C]`` under cosine similarity.

    k-means++ seeding from a ``torch.Generator(seed)``, then Lloyd iterations (assign each row to
    its most similar centroid, re-normalise the mean of each cluster) until the assignment stops
    changing or ``iterations`` is reached. An empty cluster is re-seeded with the row that is least
    similar to its centroid. Deterministic for a given ``x`` and ``seed``.
    """
    if x.ndim != 2:
        raise ValueError(f"x must be [rows, channels], got {tuple(x.shape)}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be in 1..{x.shape[0]} (the number of rows), got {k}")
    x = _unit(x.float())
    g = torch.Generator().manual_seed(seed)
    first = int(torch.randint(x.shape[0], (1,), generator=g))
    chosen = [first]
    best = x @ x[first]  # similarity to the nearest chosen centroid
    for _ in range(1, k):
        weight = (1 - best).clamp(min=0) ** 2
        if float(weight.sum()) <= 0:
            nxt = int(torch.randint(x.shape[0], (1,), generator=g))
        else:
            nxt = int(torch.multinomial(weight, 1, generator=g))
        chosen.append(nxt)
        best = torch.maximum(best, x @ x[nxt])
    centroids = x[chosen].clone()
    assign = None
    for _ in range(iterations):
        sim = x @ centroids.T  # [M, k]
        top, new = sim.max(1)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        for j in (counts == 0).nonzero().flatten().tolist():
            worst = int(top.argmin())
            sums[j] = x[worst]
            top[worst] = 2.0  # do not pick the same row twice
        centroids = _unit(sums)
    return centroids


def nearest_distance(x: Tensor, centroids: Tensor) -> Tensor:
    """``1 - max_j cos(x[..., :], centroids[j])`` for ``x [..., C]`` and ``centroids [K, C]``: ``[...]``."""
    if x.shape[-1] != centroids.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} channels, the codebook {centroids.shape[-1]}")
    return 1 - (_unit(x.float()) @ _unit(centroids.float()).T).amax(-1)


def aggregate_frames(d: Tensor, frame_lengths: Tensor) -> dict[str, Tensor]:
    """Mean, max and (population) std of ``d [B, F]`` over each row's first ``frame_lengths[b]`` frames."""
    valid = torch.arange(d.shape[1], device=d.device)[None, :] < frame_lengths.to(d.device)[:, None]
    count = valid.sum(1).clamp(min=1)
    zero = torch.zeros_like(d)
    mean = torch.where(valid, d, zero).sum(1) / count
    dev = torch.where(valid, d - mean[:, None], zero)
    return {
        "mean": mean,
        "max": torch.where(valid, d, torch.full_like(d, -torch.inf)).amax(1),
        "std": ((dev**2).sum(1) / count).sqrt(),
    }


def typicality_measures(
    z: Tensor, c: Tensor, frame_lengths: Tensor, centroids_z: Tensor, centroids_c: Tensor
) -> dict[str, Tensor]:
    """Quality-oriented typicality scores ``{typ:SPACE.AGG: [B]}`` (``-aggregate(distance)``).

    ``z [B, C, F]`` and ``c [B, C_ctx, F]`` as :meth:`Wav2VecModel.encode` returns them.
    """
    out: dict[str, Tensor] = {}
    for space, x, centroids in (("z", z, centroids_z), ("c", c, centroids_c)):
        d = nearest_distance(x.transpose(1, 2), centroids)  # [B, F]
        for agg, value in aggregate_frames(d, frame_lengths).items():
            out[f"typ:{space}.{agg}"] = -value
    return out


class Typicality:
    """The ``typicality`` family for :class:`~toolkit.scoring.extensions.ExtensionScorer`.

    ``bank`` is a :class:`~toolkit.scoring.bank.ReferenceBank` built with the scoring model's weights.
    """

    def __init__(self, bank, measures: Sequence[str] | None = None) -> None:
        self.bank = bank
        self.measures = list(measures or TYPICALITY_MEASURES)
        unknown = [m for m in self.measures if m not in TYPICALITY_MEASURES]
        if unknown:
            raise ValueError(f"unknown typicality measures {unknown}; choose from {', '.join(TYPICALITY_MEASURES)}")

    def fingerprint(self) -> dict:
        return {"family": "typicality", "version": TYPICALITY_VERSION, "measures": sorted(self.measures)}

    def compute(self, encoding: tuple[Tensor, Tensor, Tensor, Tensor], key: str) -> dict[str, Tensor]:
        """``{measure: [1]}`` for one clip's ``model.encode`` output ``(z, c, predictions, frame_lengths)``."""
        z, c, _, frame_lengths = encoding
        values = typicality_measures(z, c, frame_lengths, self.bank.centroids_z.to(z.device), self.bank.centroids_c.to(z.device))
        return {m: values[m] for m in self.measures}
