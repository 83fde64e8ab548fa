import math

import pytest
import torch

from toolkit.batching import pad_right
from toolkit.scoring.acoustic import FEATURES, AcousticScorer, acoustic_features

RATE = 16000


def _tone(freq, seconds=1.0, amp=0.5):
    t = torch.arange(int(seconds * RATE)) / RATE
    return amp * torch.sin(2 * math.pi * freq * t)


def test_features_of_known_signals():
    tone = acoustic_features(_tone(1000))
    assert tone["duration"] == pytest.approx(1.0)
    assert tone["rms_db"] == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.05)
    assert tone["zcr"] == pytest.approx(2000 / RATE, rel=0.01)  # two crossings per period
    noise = acoustic_features(0.1 * torch.randn(RATE, generator=torch.Generator().manual_seed(0)))
    assert noise["flatness"] > 0.4 > 10 * tone["flatness"]
    assert noise["hf_energy_db"] > -4  # white noise: about half the energy above 4 kHz
    assert acoustic_features(_tone(6000))["hf_energy_db"] > -0.1 > -30 > tone["hf_energy_db"]


def test_scorer_contract_signs_and_padding_invariance():
    waves = [_tone(500, 0.5), 0.05 * torch.randn(12000)]
    wavs, lengths = pad_right(waves)
    scorer = AcousticScorer()
    batched = scorer.score(wavs, lengths)
    assert set(batched) == set(FEATURES)
    for i, w in enumerate(waves):
        alone = scorer.score(w[None])
        raw = acoustic_features(w)
        for f, (sign, _) in FEATURES.items():
            assert batched[f][i].item() == pytest.approx(alone[f][0].item(), rel=1e-6)
            assert batched[f][i].item() == pytest.approx(sign * raw[f], rel=1e-5)
    with pytest.raises(ValueError, match="unknown acoustic features"):
        AcousticScorer(["loudness"])
