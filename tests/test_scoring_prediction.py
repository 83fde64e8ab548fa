"""The ``prediction`` extension family (issue 15, round 3): each measure on a case whose answer is
known by construction, then the family end to end on a real model and real speech."""

import math

import pytest
import torch

from toolkit.models.wav2vec import build_preset
from toolkit.scoring.bank import ReferenceBank
from toolkit.scoring.extensions import ExtensionScorer, sign_of
from toolkit.scoring.prediction import (
    PREDICTION_MEASURES,
    prediction_cosine_distance,
    profile_agreement,
    step_calibration_error,
    target_profile,
    two_sided_distance,
)
from toolkit.scoring.report import measure_sign
from toolkit.scoring.scorer import Wav2VecScorer, state_dict_hash


def test_prediction_error_is_zero_for_perfect_predictions_and_two_for_opposite_ones():
    g = torch.Generator().manual_seed(0)
    channels, frames, steps, offset = 5, 9, 3, 2
    z = torch.randn(1, channels, frames, generator=g)
    lengths = torch.tensor([7])  # the last two frames are padding
    perfect = torch.zeros(1, channels, frames, steps)
    for k in range(steps):
        for t in range(frames - offset - k):
            perfect[0, :, t, k] = 3.0 * z[0, :, t + offset + k]  # the scale of a prediction does not matter
    dist, mask = prediction_cosine_distance(z, perfect, lengths, offset)
    assert dist.shape == mask.shape == (1, steps, frames - offset)
    # valid: target t + offset + k inside the 7 real frames
    expected_mask = torch.tensor([[[t + offset + k < 7 for t in range(frames - offset)] for k in range(steps)]])
    assert torch.equal(mask, expected_mask)
    assert dist[mask].abs().max() < 1e-6
    dist, _ = prediction_cosine_distance(z, -perfect, lengths, offset)
    assert torch.allclose(dist[mask], torch.full_like(dist[mask], 2.0), atol=1e-6)
    assert torch.equal(dist[~mask], torch.zeros_like(dist[~mask]))


def test_prediction_mask_is_the_models_contrastive_mask():
    model = build_preset("tiny").eval()
    wav = torch.randn(2, 6000)
    lengths = torch.tensor([6000, 4200])
    with torch.no_grad():
        z, _, predictions, frame_lengths = model.encode(wav, lengths)
        negatives = model.sample_negatives(frame_lengths, z.shape[-1], None, "uniform")
        _, model_mask = model.contrastive_logits(z, predictions, frame_lengths, negatives)
    _, mask = prediction_cosine_distance(z, predictions, frame_lengths, model.offset)
    assert torch.equal(mask, model_mask)


def test_step_calibration_error_of_known_logits():
    n = 10  # distractors
    # step 0: the true frame wins by far (confidence 1, accuracy 1): error 0
    # step 1: a distractor wins by far (confidence 1, accuracy 0): error 1
    # step 2: all candidates tie but the true frame is a hair ahead (confidence 1/11, accuracy 1)
    logits = torch.zeros(1, 3, 4, 1 + n)
    logits[0, 0, :, 0] = 50.0
    logits[0, 1, :, 1] = 50.0
    logits[0, 2, :, 0] = 1e-4
    mask = torch.ones(1, 3, 4, dtype=torch.bool)
    expected = (0 + 1 + (1 - 1 / (1 + n))) / 3
    assert step_calibration_error(logits, mask).item() == pytest.approx(expected, abs=1e-4)
    # a step without a valid frame is left out; masked frames do not count
    mask[0, 1] = False
    logits[0, 0, 3, 0], logits[0, 0, 3, 2] = 0.0, 50.0  # a confident miss ...
    mask[0, 0, 3] = False  # ... that is masked out
    assert step_calibration_error(logits, mask).item() == pytest.approx((0 + (1 - 1 / (1 + n))) / 2, abs=1e-4)
    assert math.isnan(step_calibration_error(logits, torch.zeros_like(mask)).item())


def test_target_profile_averages_the_predictions_of_each_frame():
    # K=2 steps, T=3 context frames, offset 1, F=4 frames: step k from frame t targets t + 1 + k
    steps, context, offset, frames = 2, 3, 1, 4
    values = torch.tensor([[[10.0 * k + t for t in range(context)] for k in range(steps)]])
    mask = torch.tensor([[[True, True, True], [True, True, False]]])  # target 4 is outside the clip
    profile = target_profile(values, mask, offset, frames)
    assert math.isnan(profile[0, 0].item())  # frame 0 is never a target
    assert profile[0, 1:].tolist() == [0.0, (1 + 10) / 2, (2 + 11) / 2]


def test_profile_agreement_of_known_profiles():
    f = torch.tensor([[1.0, 2.0, 4.0, 3.0, math.nan, 0.0]])
    assert profile_agreement(f, f).item() == pytest.approx(1.0)
    assert profile_agreement(f, -2 * f + 1).item() == pytest.approx(-1.0)
    b = torch.tensor([[math.nan, 2.0, 4.0, 3.0, 7.0, 0.0]])  # only frames finite in both count
    assert profile_agreement(f, b).item() == pytest.approx(1.0)
    assert math.isnan(profile_agreement(f, torch.ones_like(f)).item())  # constant: undefined
    assert math.isnan(profile_agreement(f[:, :2], f[:, :2]).item())  # fewer than 3 frames


def test_two_sided_distance_is_zero_at_the_reference_and_falls_either_way():
    v = torch.tensor([0.5, 0.7, 0.3, 0.9])
    assert two_sided_distance(v, 0.5, 0.2).tolist() == pytest.approx([0.0, -1.0, -1.0, -2.0])
    with pytest.raises(ValueError, match="spread"):
        two_sided_distance(v, 0.5, 0.0)


def test_signs_of_the_prediction_measures():
    assert {m: sign_of(m) for m in PREDICTION_MEASURES} == {
        "pred:err.mean": -1, "pred:calib": -1, "pred:rev_agree": 1, "pred:two_sided": 1}
    assert all(measure_sign(m) == sign_of(m) for m in PREDICTION_MEASURES)


def test_prediction_family_on_real_speech_agrees_with_the_paper_scorer_and_its_own_definitions(speech_clip):
    clip = speech_clip
    torch.manual_seed(0)
    model = build_preset("tiny").eval()
    wav, lengths = clip[None], torch.tensor([clip.numel()])
    mean, std = 0.3, 0.05
    bank = ReferenceBank(state_dict_hash(model), [], {}, torch.zeros(0, 1), torch.eye(4), torch.eye(4),
                         {"p_pos.mean": [mean, std], "typ:z.mean": [0.0, 1.0]})
    scorer = ExtensionScorer(model, bank, ["prediction"], draws=2, seed=0)
    scores = scorer.score(wav, lengths, ["a"])
    assert set(scores) == set(PREDICTION_MEASURES)
    # two-sided predictability uses the paper scorer's p_pos.mean, bit for bit (same draws)
    p_pos = Wav2VecScorer(model, ["p_pos.mean"], draws=2, seed=0).score(wav, lengths, ["a"])["p_pos.mean"].item()
    assert scores["pred:two_sided"].item() == pytest.approx(-abs(p_pos - mean) / std, rel=1e-5)
    # the prediction error and the agreement are what their definitions give on this model's encoding
    with torch.no_grad():
        z, _, predictions, frame_lengths = model.encode(wav, lengths)
    dist, mask = prediction_cosine_distance(z, predictions, frame_lengths, model.offset)
    assert scores["pred:err.mean"].item() == pytest.approx(-(dist[mask].mean().item()), rel=1e-5)
    assert -1.0 <= scores["pred:rev_agree"].item() <= 1.0
    assert 0.0 <= -scores["pred:calib"].item() <= 1.0
    # one clip scored twice, or beside another clip, gets the same scores (seeded by key, one at a time)
    batch = torch.stack([clip, clip.flip(0)])
    both = scorer.score(batch, torch.tensor([clip.numel()] * 2), ["a", "b"])
    assert all(both[m][0].item() == scores[m].item() for m in PREDICTION_MEASURES)
