"""Correlation metrics (pure functions over arrays): SRCC, LCC, Kendall tau, bootstrap intervals, MSE.

Utterance level compares each clip's score with its MOS. System level first averages scores and MOS
per system, then correlates the means. Confidence intervals are percentile bootstrap intervals with
a fixed seed: utterances are resampled for utterance level, systems for system level.

    >>> summary = correlate(scores, mos, systems, n_boot=1000, seed=0)
    >>> summary["utterance"]["srcc"], summary["utterance"]["srcc_ci"]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _stats():
    # Imported on first use: scoring worker processes import this package but never correlate, and
    # scipy.stats costs them most of a second each at start-up.
    from scipy import stats

    return stats


def _as_arrays(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"expected two 1-D arrays of equal length, got {x.shape} and {y.shape}")
    return x, y


def _degenerate(x: np.ndarray, y: np.ndarray) -> bool:
    return x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0


def srcc(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (ties get average ranks). NaN for fewer than 3 points or a constant."""
    x, y = _as_arrays(x, y)
    return math.nan if _degenerate(x, y) else float(_stats().spearmanr(x, y).statistic)


def lcc(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson linear correlation. NaN for fewer than 3 points or a constant."""
    x, y = _as_arrays(x, y)
    return math.nan if _degenerate(x, y) else float(_stats().pearsonr(x, y).statistic)


def ktau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall tau-b. NaN for fewer than 3 points or a constant."""
    x, y = _as_arrays(x, y)
    return math.nan if _degenerate(x, y) else float(_stats().kendalltau(x, y).statistic)


def _centred(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``b`` minus their means, and the rows' sums of squares (one side of a Pearson)."""
    b = b - b.mean(1, keepdims=True)
    return b, (b**2).sum(1)


def _rowwise_pearson(a: np.ndarray, b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (given :func:`_centred`)."""
    a, a_squares = _centred(a)
    b, b_squares = b
    denom = np.sqrt(a_squares * b_squares)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(1) / denom, np.nan)


def resample_ranks(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``scipy.stats.rankdata(x[idx], axis=1)`` (average ranks for ties) by counting instead of
    sorting each resample: a resample holds copies of ``x``'s values, so a value's rank follows from
    how many copies of each smaller value it drew. The ranks are integers and halves, so exact."""
    values, codes = np.unique(x, return_inverse=True)  # codes: position of each x among its sorted values
    n_boot, width = idx.shape[0], values.size
    drawn = codes.reshape(-1)[idx]  # [n_boot, n]
    offsets = (np.arange(n_boot) * width)[:, None]
    counts = np.bincount((drawn + offsets).ravel(), minlength=n_boot * width).reshape(n_boot, width)
    below = np.cumsum(counts, axis=1) - counts
    return np.take_along_axis(below + (counts + 1) / 2.0, drawn, axis=1)


_RESAMPLED: dict = {}  # (y bytes, n_boot, seed) -> (idx, y[idx] and its ranks, centred); the last few only


def _resampled(y: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, tuple, tuple]:
    """The bootstrap indices for ``len(y)`` points under ``seed``, and ``y`` resampled and its ranks
    per resample (:func:`_centred`, for :func:`_rowwise_pearson`). Every measure of a dataset is
    correlated with the same MOS (per clip, and per system) under the same seed, so the last few
    answers are kept: ranking the MOS resamples again for each measure was a third of the
    evaluator's bootstrap time."""
    key = (y.tobytes(), n_boot, seed)
    if key not in _RESAMPLED:
        idx = np.random.default_rng(seed).integers(0, y.size, size=(n_boot, y.size))
        while len(_RESAMPLED) >= 4:
            _RESAMPLED.pop(next(iter(_RESAMPLED)))
        _RESAMPLED[key] = (idx, _centred(y[idx]), _centred(resample_ranks(y, idx)))
    return _RESAMPLED[key]


def bootstrap_ci(
    x: Sequence[float],
    y: Sequence[float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals ``{"srcc": (lo, hi), "lcc": (lo, hi)}`` over resampled pairs.

    Vectorised: every resample is ranked at once (:func:`resample_ranks`). Degenerate resamples (a constant) are left out.
    """
    x, y = _as_arrays(x, y)
    if x.size < 3 or n_boot < 1:
        return {"srcc": (math.nan, math.nan), "lcc": (math.nan, math.nan)}
    idx, by, by_ranks = _resampled(y, n_boot, seed)
    bx = x[idx]
    lcc_b = _rowwise_pearson(bx, by)
    srcc_b = _rowwise_pearson(resample_ranks(x, idx), by_ranks)
    alpha = (1 - level) / 2

    def interval(v: np.ndarray) -> tuple[float, float]:
        v = v[np.isfinite(v)]
        if v.size == 0:
            return (math.nan, math.nan)
        return (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha)))

    return {"srcc": interval(srcc_b), "lcc": interval(lcc_b)}


def paired_srcc_difference(
    a: Sequence[float],
    b: Sequence[float],
    y: Sequence[float],
    groups: Sequence[str] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """``SRCC(a, y) - SRCC(b, y)`` for two scorers of the same clips, with a paired bootstrap interval.

    Both scorers are correlated on the same resample each time, so what the clips share cancels, and
    a difference can be clear while the two unpaired intervals overlap. ``groups`` names each clip's
    cluster (the clean recording a degraded clip was made from, the speaker, ...): whole clusters are
    resampled, because clips of one cluster are not independent. Without ``groups`` each clip is its
    own cluster. Returns ``{"diff", "lo", "hi", "groups"}``; resamples where either side is
    degenerate are left out.
    """
    a, y_ = _as_arrays(a, y)
    b, _ = _as_arrays(b, y)
    labels = np.arange(a.size) if groups is None else np.asarray(groups)
    if labels.shape != a.shape:
        raise ValueError(f"got {labels.size} group labels for {a.size} clips")
    names, inverse = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(names.size)]
    diff = srcc(a, y_) - srcc(b, y_)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot if names.size > 1 else 0):
        sel = np.concatenate([members[g] for g in rng.integers(0, names.size, names.size)])
        draws.append(srcc(a[sel], y_[sel]) - srcc(b[sel], y_[sel]))
    v = np.asarray(draws)
    v = v[np.isfinite(v)]
    alpha = (1 - level) / 2
    lo, hi = (np.quantile(v, alpha), np.quantile(v, 1 - alpha)) if v.size else (math.nan, math.nan)
    return {"diff": float(diff), "lo": float(lo), "hi": float(hi), "groups": int(names.size)}


def fit_linear(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``y ~ a * x + b``; returns ``(a, b)`` (``a = 0`` when ``x`` is constant)."""
    x, y = _as_arrays(x, y)
    if x.size == 0:
        return (0.0, math.nan)
    if np.ptp(x) == 0:
        return (0.0, float(y.mean()))
    a, b = np.polyfit(x, y, 1)
    return float(a), float(b)


def mse_linear(x: Sequence[float], y: Sequence[float]) -> float:
    """MSE between ``y`` (MOS) and the best linear map of ``x`` onto the MOS scale.

    The map is fitted on the same points, so this is the smallest MSE any affine rescaling of the
    zero-shot score can reach (an optimistic figure, comparable across measures).
    """
    x, y = _as_arrays(x, y)
    if x.size == 0:
        return math.nan
    a, b = fit_linear(x, y)
    return float(np.mean((a * x + b - y) ** 2))


def system_means(
    scores: Sequence[float], mos: Sequence[float], systems: Sequence[str], min_utterances: int = 1
) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Per-system mean score and mean MOS; systems with fewer than ``min_utterances`` clips are dropped.

    Returns ``(system names, mean scores, mean MOS, dropped system names)``.
    """
    scores, mos = _as_arrays(scores, mos)
    if len(systems) != scores.size:
        raise ValueError(f"got {len(systems)} system labels for {scores.size} scores")
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(systems):
        groups.setdefault(s, []).append(i)
    names = sorted(s for s, ix in groups.items() if len(ix) >= min_utterances)
    dropped = sorted(s for s, ix in groups.items() if len(ix) < min_utterances)
    ms = np.array([scores[groups[s]].mean() for s in names])
    mm = np.array([mos[groups[s]].mean() for s in names])
    return names, ms, mm, dropped


def level_summary(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> dict:
    """Every metric for one level: n, srcc, lcc, ktau (with p-values), intervals, MSE after a linear map."""
    x, y = _as_arrays(x, y)
    ci = bootstrap_ci(x, y, n_boot=n_boot, seed=seed)
    spearman = None if _degenerate(x, y) else _stats().spearmanr(x, y)  # what srcc() computes, with its p
    return {
        "n": int(x.size),
        "srcc": math.nan if spearman is None else float(spearman.statistic),
        "srcc_lo": ci["srcc"][0],
        "srcc_hi": ci["srcc"][1],
        "srcc_p": math.nan if spearman is None else float(spearman.pvalue),
        "lcc": lcc(x, y),
        "lcc_lo": ci["lcc"][0],
        "lcc_hi": ci["lcc"][1],
        "ktau": ktau(x, y),
        "mse_linear": mse_linear(x, y),
    }


def correlate(
    scores: Sequence[float],
    mos: Sequence[float],
    systems: Sequence[str] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    min_system_utterances: int = 2,
) -> dict[str, dict]:
    """Utterance- and (when ``systems`` is given) system-level metrics.

    Systems with fewer than ``min_system_utterances`` clips are left out of the system level and
    listed in ``result["system"]["dropped_systems"]``.
    """
    x, y = _as_arrays(scores, mos)
    finite = np.isfinite(x) & np.isfinite(y)
    result = {"utterance": level_summary(x[finite], y[finite], n_boot, seed)}
    result["utterance"]["dropped_nonfinite"] = int((~finite).sum())
    if systems is not None:
        kept_systems = [s for s, f in zip(systems, finite) if f]
        _, ms, mm, dropped = system_means(x[finite], y[finite], kept_systems, min_system_utterances)
        result["system"] = level_summary(ms, mm, n_boot, seed)
        result["system"]["dropped_systems"] = dropped
    return result
