import math

import pytest
import torch

from toolkit.models.loss import contrastive_loss
from toolkit.scoring.measures import MEASURES, aggregate, compute_measures, oriented, select_measures


def test_uniform_logits_give_maximal_entropy_and_chance_probabilities():
    logits = torch.zeros(2, 3, 5, 11)
    mask = torch.ones(2, 3, 5, dtype=torch.bool)
    v = compute_measures(logits, mask)
    assert torch.allclose(v["entropy.mean"], torch.full((2,), math.log(11)))
    assert torch.allclose(v["p_pos.mean"], torch.full((2,), 1 / 11))
    assert torch.allclose(v["p_max.mean"], torch.full((2,), 1 / 11))
    assert torch.allclose(v["sig_pos.mean"], torch.full((2,), 0.5))
    assert torch.allclose(v["bin_entropy.mean"], torch.full((2,), math.log(2)))
    assert torch.allclose(v["entropy.std"], torch.zeros(2), atol=1e-6)
    assert torch.allclose(v["correct.mean"], torch.zeros(2))  # ties count as wrong


def test_confident_correct_prediction_has_low_entropy_and_full_accuracy():
    logits = torch.full((1, 2, 4, 5), -20.0)
    logits[..., 0] = 20.0
    v = compute_measures(logits, torch.ones(1, 2, 4, dtype=torch.bool))
    assert v["entropy.mean"].item() < 1e-6
    assert v["p_pos.mean"].item() == pytest.approx(1.0)
    assert v["correct.mean"].item() == 1.0
    assert v["loss_bce"].item() < 1e-6


def test_masked_predictions_are_ignored():
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 6, 4)
    mask = torch.ones(1, 2, 6, dtype=torch.bool)
    mask[0, :, 4:] = False
    garbage = logits.clone()
    garbage[0, :, 4:] = 1e4 * torch.randn(2, 2, 4)
    a, b = compute_measures(logits, mask), compute_measures(garbage, mask)
    for name in MEASURES:
        assert torch.allclose(a[name], b[name]), name


def test_axes_match_hand_computation():
    x = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 8.0, 0.0]]])  # [B=1, K=2, T=3]
    mask = torch.tensor([[[True, True, True], [True, True, False]]])
    assert aggregate(x, mask, "mean", "all").item() == pytest.approx(18 / 5)
    assert aggregate(x, mask, "max", "all").item() == 8.0
    # max over frames per step: (3, 8) -> mean 5.5; max over steps per frame: (4, 8, 3) -> 5
    assert aggregate(x, mask, "max", "frames").item() == pytest.approx(5.5)
    assert aggregate(x, mask, "max", "steps").item() == pytest.approx(5.0)
    # population std over frames per step: std(1,2,3)=0.8165, std(4,8)=2 -> mean 1.40825
    assert aggregate(x, mask, "std", "frames").item() == pytest.approx((math.sqrt(2 / 3) + 2) / 2, rel=1e-5)
    # std over steps per frame: std(1,4)=1.5, std(2,8)=3, std(3)=0 -> 1.5
    assert aggregate(x, mask, "std", "steps").item() == pytest.approx(1.5)


def test_utterance_without_valid_prediction_is_nan():
    v = compute_measures(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, dtype=torch.bool), ["entropy.mean", "p_pos.max"])
    assert math.isnan(v["entropy.mean"].item()) and math.isnan(v["p_pos.max"].item())


def test_loss_measure_matches_fairseq_loss_per_utterance():
    torch.manual_seed(1)
    logits = torch.randn(3, 4, 7, 11)
    mask = torch.rand(3, 4, 7) > 0.3
    v = compute_measures(logits, mask, ["loss_bce", "loss_infonce"])
    for b in range(3):
        for kind in ("bce", "infonce"):
            total, n = contrastive_loss(logits[b : b + 1], mask[b : b + 1], kind)
            assert v[f"loss_{kind}"][b].item() == pytest.approx((total / n).item(), rel=1e-5)


def test_orientation_makes_higher_mean_better():
    assert MEASURES["entropy.mean"].sign == -1 and MEASURES["p_pos.mean"].sign == 1
    assert all(m.sign == -1 for m in MEASURES.values() if m.aggregation == "std")
    o = oriented({"entropy.mean": torch.tensor([2.0]), "p_pos.mean": torch.tensor([0.3])})
    assert o["entropy.mean"].item() == -2.0 and o["p_pos.mean"].item() == pytest.approx(0.3)


def test_select_measures_patterns_and_errors():
    assert select_measures(None) == list(MEASURES)
    chosen = select_measures(["entropy.*", "loss_bce", "entropy.mean"])
    assert chosen[0] == "entropy.mean" and "loss_bce" in chosen and len(chosen) == len(set(chosen))
    assert all(c.startswith("entropy.") or c == "loss_bce" for c in chosen)
    with pytest.raises(ValueError, match="unknown measure 'entropyy'"):
        select_measures(["entropyy"])
    for m in MEASURES.values():
        assert m.description and m.domain and m.sign in (-1, 1)
