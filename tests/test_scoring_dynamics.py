"""The ``dynamics`` extension family (issue 15, round 5): the frame-to-frame change on cases whose
answer is known by construction, then the family on a real model and real speech."""

import math

import pytest
import torch

from toolkit.models.wav2vec import build_preset
from toolkit.scoring.dynamics import DYNAMICS_MEASURES, frame_step_distance
from toolkit.scoring.extensions import ExtensionScorer, sign_of
from toolkit.scoring.report import measure_sign


def test_frame_step_distance_of_known_sequences():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    still = torch.stack([a] * 5, -1)[None]  # [1, C, F]: the same frame throughout
    flip = torch.stack([a, -a] * 3, -1)[None]  # opposite every frame
    turn = torch.stack([a, b] * 3, -1)[None]  # orthogonal every frame, scale ignored
    assert frame_step_distance(still, torch.tensor([5])).item() == pytest.approx(0.0, abs=1e-7)
    assert frame_step_distance(flip, torch.tensor([6])).item() == pytest.approx(2.0)
    assert frame_step_distance(turn, torch.tensor([6])).item() == pytest.approx(1.0)
    # padding never counts: a still clip of 3 frames padded with frames that flip
    padded = torch.cat([still[..., :3], flip[..., :3]], -1)
    assert frame_step_distance(padded, torch.tensor([3])).item() == pytest.approx(0.0, abs=1e-7)
    # a batch: each clip over its own frames; one frame has no pair
    batch = torch.cat([turn, flip])
    assert frame_step_distance(batch, torch.tensor([6, 4])).tolist() == pytest.approx([1.0, 2.0])
    assert math.isnan(frame_step_distance(turn, torch.tensor([1])).item())


def test_dynamics_measures_are_quality_oriented():
    assert all(sign_of(m) == 1 == measure_sign(m) for m in DYNAMICS_MEASURES)


def test_dynamics_family_on_real_speech_is_its_definition_without_a_bank(speech_clip):
    clip = speech_clip
    torch.manual_seed(0)
    model = build_preset("tiny").eval()
    scorer = ExtensionScorer(model, None, ["dynamics"])
    scores = scorer.score(clip[None], torch.tensor([clip.numel()]), ["a"])
    with torch.no_grad():
        z, c, _, frame_lengths = model.encode(clip[None], torch.tensor([clip.numel()]))
    assert scores["dyn:z.step"].item() == pytest.approx(frame_step_distance(z, frame_lengths).item(), rel=1e-6)
    assert scores["dyn:c.step"].item() == pytest.approx(frame_step_distance(c, frame_lengths).item(), rel=1e-6)
    assert 0.0 < scores["dyn:z.step"].item() < 2.0
    # beside a longer clip, in one batch, the scores do not change (one clip at a time, true length)
    longer = torch.cat([clip, clip.flip(0)])
    both = scorer.score(torch.stack([torch.nn.functional.pad(clip, (0, clip.numel())), longer]),
                        torch.tensor([clip.numel(), longer.numel()]), ["a", "b"])
    assert all(both[m][0].item() == scores[m].item() for m in DYNAMICS_MEASURES)
