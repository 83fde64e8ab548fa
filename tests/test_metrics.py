import math

import numpy as np
import pytest
from scipy import stats

from toolkit.scoring.metrics import (
    bootstrap_ci,
    correlate,
    fit_linear,
    ktau,
    lcc,
    mse_linear,
    paired_srcc_difference,
    srcc,
    system_means,
)


def test_point_metrics_match_known_values():
    x = [1, 2, 3, 4, 5]
    assert srcc(x, [2, 4, 6, 8, 100]) == pytest.approx(1.0)
    assert srcc(x, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert lcc(x, [2, 4, 6, 8, 10]) == pytest.approx(1.0)
    assert lcc(x, [2, 4, 6, 8, 100]) < 0.8
    assert ktau(x, [1, 3, 2, 4, 5]) == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert srcc(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)


def test_degenerate_inputs_give_nan_not_errors():
    assert math.isnan(srcc([1, 2], [1, 2]))
    assert math.isnan(lcc([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="equal length"):
        srcc([1, 2, 3], [1, 2])


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = 0.5 * x + rng.normal(size=200)
    ci = bootstrap_ci(x, y, n_boot=500, seed=3)
    assert ci == bootstrap_ci(x, y, n_boot=500, seed=3)
    assert ci != bootstrap_ci(x, y, n_boot=500, seed=4)
    lo, hi = ci["srcc"]
    assert lo < srcc(x, y) < hi and 0.1 < hi - lo < 0.4
    lo, hi = ci["lcc"]
    assert lo < lcc(x, y) < hi
    # a perfect ranking has a degenerate interval at 1
    assert bootstrap_ci(x, 2 * x + 1, n_boot=100)["srcc"] == pytest.approx((1.0, 1.0))


def test_independent_data_interval_covers_zero():
    rng = np.random.default_rng(2)
    ci = bootstrap_ci(rng.normal(size=300), rng.normal(size=300), n_boot=400)
    assert ci["srcc"][0] < 0 < ci["srcc"][1]


def test_linear_mapping_and_mse():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    assert fit_linear(x, 2 * x + 1) == pytest.approx((2.0, 1.0))
    assert mse_linear(x, 2 * x + 1) == pytest.approx(0.0, abs=1e-12)
    y = np.array([1.0, 3.0, 2.0, 4.0])
    a, b = fit_linear(x, y)
    assert mse_linear(x, y) == pytest.approx(np.mean((a * x + b - y) ** 2))
    assert fit_linear([1, 1, 1], [1, 2, 3]) == (0.0, 2.0)


def test_system_level_means_and_dropped_singletons():
    scores = [1, 2, 3, 10, 11, 5]
    mos = [1, 1, 1, 4, 4, 2]
    systems = ["a", "a", "a", "b", "b", "c"]
    names, ms, mm, dropped = system_means(scores, mos, systems, min_utterances=2)
    assert names == ["a", "b"] and dropped == ["c"]
    assert ms.tolist() == [2.0, 10.5] and mm.tolist() == [1.0, 4.0]
    res = correlate(scores, mos, systems, n_boot=50)
    assert res["system"]["n"] == 2 and res["system"]["dropped_systems"] == ["c"]
    assert math.isnan(res["system"]["srcc"])  # 2 systems: too few to correlate
    assert res["utterance"]["n"] == 6 and res["utterance"]["srcc"] > 0.8


def test_nonfinite_scores_are_dropped_and_counted():
    res = correlate([1, 2, float("nan"), 4, 5], [1, 2, 3, 4, 5], n_boot=20)
    assert res["utterance"]["n"] == 4 and res["utterance"]["dropped_nonfinite"] == 1
    assert "system" not in res


def test_resample_ranks_are_scipy_average_ranks_exactly():
    """Ranks by counting equal scipy's sort-based ranks bit for bit, ties (integer MOS) included."""
    from toolkit.scoring.metrics import resample_ranks

    rng = np.random.default_rng(3)
    for trial in range(20):
        n = int(rng.integers(3, 300))
        x = rng.integers(1, 6, n).astype(float) if trial % 2 else rng.normal(size=n)
        idx = rng.integers(0, n, size=(100, n))
        assert np.array_equal(resample_ranks(x, idx), stats.rankdata(x[idx], axis=1))


def test_bootstrap_intervals_do_not_depend_on_what_was_correlated_before():
    """The MOS resamples are kept between calls: an interval is the same computed first or after others."""
    from toolkit.scoring import metrics

    rng = np.random.default_rng(4)
    mos = rng.integers(1, 6, 120).astype(float)
    a, b = rng.normal(size=120), rng.normal(size=120)
    metrics._RESAMPLED.clear()
    first = metrics.bootstrap_ci(b, mos, n_boot=300, seed=1)
    for other in (a, mos[:60], a[:60]):  # other MOS vectors in between
        metrics.bootstrap_ci(other, mos[: other.size], n_boot=300, seed=1)
    assert metrics.bootstrap_ci(b, mos, n_boot=300, seed=1) == first
    assert metrics.bootstrap_ci(b, mos, n_boot=300, seed=2) != first  # the seed still matters


def test_paired_difference_of_a_scorer_with_itself_is_exactly_zero():
    rng = np.random.default_rng(1)
    y = rng.normal(size=40)
    a = y + rng.normal(size=40)
    out = paired_srcc_difference(a, a, y, n_boot=200)
    assert (out["diff"], out["lo"], out["hi"], out["groups"]) == (0.0, 0.0, 0.0, 40)


def test_paired_difference_sees_a_better_scorer_and_brackets_the_estimate():
    rng = np.random.default_rng(2)
    y = rng.normal(size=200)
    good, poor = y + 0.3 * rng.normal(size=200), y + 2.0 * rng.normal(size=200)
    out = paired_srcc_difference(good, poor, y, n_boot=500)
    expected = stats.spearmanr(good, y).statistic - stats.spearmanr(poor, y).statistic
    assert out["diff"] == pytest.approx(expected, abs=1e-12)
    assert 0 < out["lo"] < out["diff"] < out["hi"]
    swapped = paired_srcc_difference(poor, good, y, n_boot=500)
    assert swapped["diff"] == pytest.approx(-out["diff"], abs=1e-12)


def test_paired_difference_resamples_whole_clusters():
    # Every clip copied 3 times, the copies forming one cluster: resampling clusters draws each
    # clip's copies together, and SRCC over a multiset in which every point appears 3 times as often
    # equals SRCC over the multiset itself (ranks are a linear map of the originals). So the
    # clustered interval must equal the one-clip-per-cluster interval of the original data exactly;
    # resampling copies one by one would give a narrower interval.
    rng = np.random.default_rng(3)
    y = rng.normal(size=25)
    a, b = y + rng.normal(size=25), y + 1.5 * rng.normal(size=25)
    base = paired_srcc_difference(a, b, y, n_boot=300, seed=7)
    rep = np.repeat
    clustered = paired_srcc_difference(rep(a, 3), rep(b, 3), rep(y, 3), rep(np.arange(25), 3), n_boot=300, seed=7)
    assert clustered["groups"] == 25
    for key in ("diff", "lo", "hi"):
        assert clustered[key] == pytest.approx(base[key], abs=1e-9)
    per_copy = paired_srcc_difference(rep(a, 3), rep(b, 3), rep(y, 3), n_boot=300, seed=7)
    assert per_copy["hi"] - per_copy["lo"] < 0.8 * (base["hi"] - base["lo"])


def test_paired_difference_rejects_mismatched_groups():
    with pytest.raises(ValueError, match="group labels"):
        paired_srcc_difference([1, 2, 3], [3, 2, 1], [1, 2, 3], ["g"])
