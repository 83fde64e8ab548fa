"""The ``probe`` extension family (issue 15, round 4): each probe and measure on a case whose answer
is known by construction, then the family end to end on a real model and real speech."""

import math

import pytest
import torch

from toolkit.models.wav2vec import build_preset
from toolkit.scoring.bank import ReferenceBank
from toolkit.scoring.extensions import ExtensionScorer, sign_of
from toolkit.scoring.probe import (
    PROBE_MEASURES,
    PROBE_SNR_DB,
    Probes,
    add_white_noise,
    band_limit,
    probe_scores,
)
from toolkit.scoring.report import measure_sign
from toolkit.scoring.scorer import Wav2VecScorer, state_dict_hash


def tone(hz: float, seconds: float = 1.0, rate: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return torch.sin(2 * math.pi * hz * t)[None]


def test_band_limit_keeps_what_is_below_4_khz_and_removes_what_is_above():
    low, high = tone(1000.0), tone(6000.0)
    inner = slice(800, -800)  # away from the resampler's edges
    kept, removed = band_limit(low), band_limit(high)
    assert kept.shape == low.shape and removed.shape == high.shape  # the length is kept exactly
    assert (kept - low)[..., inner].abs().max() < 0.02
    assert removed[..., inner].pow(2).mean() < 1e-4 * high[..., inner].pow(2).mean()
    odd = torch.randn(1, 16001)
    assert band_limit(odd).shape == odd.shape


def test_white_noise_sits_at_the_asked_snr_and_is_seeded():
    clip = tone(440.0, seconds=4.0) * 0.3
    noisy = add_white_noise(clip, PROBE_SNR_DB, torch.Generator().manual_seed(1))
    snr = 10 * math.log10(clip.pow(2).mean().item() / (noisy - clip).pow(2).mean().item())
    assert snr == pytest.approx(PROBE_SNR_DB, abs=0.1)
    again = add_white_noise(clip, PROBE_SNR_DB, torch.Generator().manual_seed(1))
    other = add_white_noise(clip, PROBE_SNR_DB, torch.Generator().manual_seed(2))
    assert torch.equal(noisy, again) and not torch.equal(noisy, other)
    silent = torch.zeros(1, 1000)
    assert torch.equal(add_white_noise(silent, PROBE_SNR_DB, torch.Generator().manual_seed(1)), silent)


def test_probe_scores_of_known_values():
    got = probe_scores(torch.tensor([0.9]), torch.tensor([0.6]), torch.tensor([0.7]))
    assert {m: round(v.item(), 6) for m, v in got.items()} == {
        "probe:lp.delta": 0.3, "probe:noise.delta": 0.2, "probe:lp.plus": 1.2, "probe:both.plus": 1.4}
    assert list(got) == list(PROBE_MEASURES)


def test_probe_measures_are_quality_oriented():
    assert all(sign_of(m) == 1 == measure_sign(m) for m in PROBE_MEASURES)


def empty_bank(model) -> ReferenceBank:
    return ReferenceBank(state_dict_hash(model), [], {}, torch.zeros(0, 1), torch.eye(4), torch.eye(4),
                         {"p_pos.mean": [0.3, 0.05], "typ:z.mean": [0.0, 1.0]})


def test_identity_probes_give_zero_deltas_and_the_paper_scorers_p_pos(speech_clip):
    clip = speech_clip
    torch.manual_seed(0)
    model = build_preset("tiny").eval()
    wav, lengths = clip[None], torch.tensor([clip.numel()])
    scorer = ExtensionScorer(model, empty_bank(model), ["probe"], draws=2, seed=0)
    family = scorer.families[0]
    family.band_limit, family.noise = (lambda w: w.clone()), (lambda w, key: w.clone())
    scores = scorer.score(wav, lengths, ["a"])
    # the probed clips are the clip: same pass, same draws (common random numbers), so no change at all
    assert scores["probe:lp.delta"].item() == 0.0 and scores["probe:noise.delta"].item() == 0.0
    p_pos = Wav2VecScorer(model, ["p_pos.mean"], draws=2, seed=0).score(wav, lengths, ["a"])["p_pos.mean"].item()
    assert scores["probe:lp.plus"].item() == pytest.approx(p_pos, rel=1e-6)
    assert scores["probe:both.plus"].item() == pytest.approx(p_pos, rel=1e-6)


def test_probe_family_on_real_speech_is_its_definition_and_independent_of_the_batch(speech_clip):
    clip = speech_clip
    torch.manual_seed(0)
    model = build_preset("tiny").eval()
    wav, lengths = clip[None], torch.tensor([clip.numel()])
    scorer = ExtensionScorer(model, empty_bank(model), ["probe"], draws=2, seed=0)
    scores = scorer.score(wav, lengths, ["a"])
    assert set(scores) == set(PROBE_MEASURES) and all(math.isfinite(v.item()) for v in scores.values())
    # P(LP(x)) is the paper scorer's p_pos.mean of the band-limited clip scored under the clip's key
    paper = Wav2VecScorer(model, ["p_pos.mean"], draws=2, seed=0)
    p_clip = paper.score(wav, lengths, ["a"])["p_pos.mean"].item()
    p_lp = paper.score(band_limit(wav), lengths, ["a"])["p_pos.mean"].item()
    assert scores["probe:lp.delta"].item() == pytest.approx(p_clip - p_lp, rel=1e-5, abs=1e-6)
    noisy = Probes(model, draws=2, seed=0).noise(wav, "a")
    p_noisy = paper.score(noisy, lengths, ["a"])["p_pos.mean"].item()
    assert scores["probe:noise.delta"].item() == pytest.approx(p_clip - p_noisy, rel=1e-5, abs=1e-6)
    # one clip scored twice, or beside another clip, gets the same scores (seeded by key, one at a time)
    both = scorer.score(torch.stack([clip, clip.flip(0)]), torch.tensor([clip.numel()] * 2), ["a", "b"])
    assert all(both[m][0].item() == scores[m].item() for m in PROBE_MEASURES)
    assert scorer.fingerprint()["families"][0]["family"] == "probe"


def test_probes_need_no_bank_and_other_families_say_so():
    model = build_preset("tiny").eval()
    scorer = ExtensionScorer(model, None, ["probe"], draws=1)
    assert scorer.fingerprint()["bank_sha256"] is None
    with pytest.raises(ValueError, match="combo need a reference bank"):
        ExtensionScorer(model, None, ["probe", "combo"], draws=1)


def test_evaluate_scores_bankless_families_for_a_checkpoint_without_a_codebook(reference_speech, tmp_path):
    from toolkit.scoring.datasets import MosDataset, MosItem
    from toolkit.scoring.evaluate import evaluate

    files = reference_speech[:3]
    torch.manual_seed(5)
    model = build_preset("tiny").eval()  # no codebook ships for these weights, and no --bank is given
    items = [MosItem(f"u{i}", p, float(i + 1), None) for i, p in enumerate(files)]
    result = evaluate([("m", model)], [MosDataset("ref", "csv", tmp_path, items)], ["p_pos.mean"],
                      controls=["random-init"], output_dir=tmp_path / "out", draws=1, n_boot=10, wandb_mode="disabled",
                      plots=False, progress=False, echo=None, extensions=["probe", "dynamics"])
    assert {r["scorer"] for r in result.rows} == {"m", "random-init", "m+beyond", "random-init+beyond"}
    m = result.scores[("m+beyond", "ref")]
    assert set(m["u0"]) == {*PROBE_MEASURES, "dyn:z.step", "dyn:c.step"}
    p_pos = result.scores[("m", "ref")]["u0"]["p_pos.mean"]
    # lp.plus is the paper scorer's p_pos.mean plus the band-limit delta (same seeded draws)
    assert m["u0"]["probe:lp.plus"] == pytest.approx(p_pos + m["u0"]["probe:lp.delta"], rel=1e-5, abs=1e-6)
