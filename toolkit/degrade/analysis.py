"""SRCC between a quality score and the known severity, per degradation type (pure functions).

Scores are *quality-oriented*, as every scorer in :mod:`toolkit.scoring` reports them (higher =
better predicted quality; an uncertainty measure is reported with its sign flipped). The SRCC is
taken against the known quality order, ``-severity``: **+1 means the score falls exactly as the
degradation grows**, 0 means no ranking, and a negative value means it ranks backwards.

For each type, the rows of that type plus the clean rows (severity 0) are used. Two views:

- **within clip** (the headline): for each clean clip, Spearman's rho between the score and the
  severity over that clip's versions (clean + each level), then the mean over clips. Differences
  between sentences cannot inflate or hide it. Its confidence interval is a percentile bootstrap over
  clean clips. A clip whose scores are all equal contributes 0 (it ranks nothing) and is counted.
- **pooled**: one Spearman's rho over all those rows together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CLEAN = "clean"


@dataclass(frozen=True)
class SeverityCorrelation:
    """SRCC of a quality score against ``-severity`` for one degradation type (+1 = perfect ranking)."""

    type: str
    srcc: float  # mean within-clip Spearman rho
    ci_low: float
    ci_high: float
    pooled: float  # Spearman rho over all rows of the type
    clips: int
    rows: int
    constant_clips: int  # clips whose scores were all equal (counted as rho = 0)
    nonfinite: int = 0  # rows of this type (and the clean rows) left out for a NaN/Inf score


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def severity_srcc(
    scores: Sequence[float] | np.ndarray,
    severity: Sequence[int] | np.ndarray,
    clean_ids: Sequence[str],
    types: Sequence[str],
    *,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, SeverityCorrelation]:
    """Per degradation type: SRCC between quality ``scores`` and ``-severity`` (all arrays ``[rows]``).

    ``types[i] == "clean"`` marks a clean row (severity 0), which joins every type's set. Rows with a
    non-finite score are dropped and counted per type (``nonfinite``). Returns ``{type: SeverityCorrelation}`` in first-seen order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    quality = -np.asarray(severity, dtype=np.float64)
    clean_ids = np.asarray(clean_ids, dtype=object)
    types = np.asarray(types, dtype=object)
    if not (scores.shape == quality.shape == clean_ids.shape == types.shape) or scores.ndim != 1:
        raise ValueError(
            f"scores, severity, clean_ids, types must be equal-length 1-D; got {scores.shape}, "
            f"{quality.shape}, {clean_ids.shape}, {types.shape}"
        )
    finite = np.isfinite(scores)
    results: dict[str, SeverityCorrelation] = {}
    for name in dict.fromkeys(t for t in types if t != CLEAN):
        keep = finite & ((types == name) | (types == CLEAN))
        per_clip: list[float] = []
        constant = 0
        for clip in dict.fromkeys(clean_ids[keep & (types == name)]):
            sel = keep & (clean_ids == clip)
            rho = _spearman(scores[sel], quality[sel])
            if np.isnan(rho):
                if np.unique(quality[sel]).size < 2:
                    continue  # one version only: nothing to rank
                constant += 1
                rho = 0.0
            per_clip.append(rho)
        rhos = np.asarray(per_clip)
        mean = float(rhos.mean()) if rhos.size else float("nan")
        low, high = bootstrap_mean_ci(rhos, bootstrap, confidence, seed)
        results[name] = SeverityCorrelation(
            name,
            mean,
            low,
            high,
            _spearman(scores[keep], quality[keep]),
            int(rhos.size),
            int(keep.sum()),
            constant,
            int((~finite & ((types == name) | (types == CLEAN))).sum()),
        )
    return results


def bootstrap_mean_ci(
    values: np.ndarray, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values [n]`` (resampling the n values)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1 or resamples < 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))
