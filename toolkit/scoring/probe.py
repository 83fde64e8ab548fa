"""Re-degradation probes (toolkit extension, not the paper's method).

Issue 15's round 4 (``docs/results.md``, "Beyond the paper"), fixed before any was computed. The
no-reference "re-blur" principle of image quality (Crete et al., 2007): degrade a clip once more
with a fixed, known operation and see how much that changes it. A clip that has already lost what
the operation removes changes little; a clean clip changes a lot. The change is read through the
paper's own quantity, ``P(x)`` = ``p_pos.mean`` with negatives from the utterance, averaged over the
same seeded draws as :class:`~toolkit.scoring.scorer.Wav2VecScorer`. A probed clip keeps the clip's
length, so it gets the same negative indices (common random numbers: the draws cancel in a delta).

Probes: ``LP(x)``, a band limit at 4 kHz (resampled to 8 kHz and back); ``N(x)``, white Gaussian
noise at 20 dB SNR relative to the clip's own power, seeded by ``(seed, key)``.

``probe:lp.delta``     ``P(x) - P(LP(x))``
``probe:noise.delta``  ``P(x) - P(N(x))``
``probe:lp.plus``      ``P(x) + (P(x) - P(LP(x)))``: the paper's level plus the band-limit probe
``probe:both.plus``    ``P(x) + (P(x) - P(LP(x))) + (P(x) - P(N(x)))``

All are higher = better; equal weights in the same units, nothing fitted.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchaudio
from torch import Tensor

from toolkit.audio import SAMPLE_RATE
from toolkit.scoring.bank import utterance_measures
from toolkit.scoring.scorer import key_seed

PROBE_VERSION = 1
PROBE_MEASURES = ("probe:lp.delta", "probe:noise.delta", "probe:lp.plus", "probe:both.plus")
BAND_LIMIT_RATE = 8000  # LP(x): through this sample rate and back, so nothing above 4 kHz is left
PROBE_SNR_DB = 20.0  # N(x): white noise this far below the clip's own power

Encoding = tuple[Tensor, Tensor, Tensor, Tensor]


def band_limit(wav: Tensor, sample_rate: int = SAMPLE_RATE, through_rate: int = BAND_LIMIT_RATE) -> Tensor:
    """``wav [..., time]`` resampled to ``through_rate`` and back: the same length, nothing left above
    ``through_rate / 2``."""
    down = torchaudio.functional.resample(wav, sample_rate, through_rate)
    up = torchaudio.functional.resample(down, through_rate, sample_rate)
    n = wav.shape[-1]
    return up[..., :n] if up.shape[-1] >= n else torch.nn.functional.pad(up, (0, n - up.shape[-1]))


def add_white_noise(wav: Tensor, snr_db: float, generator: torch.Generator) -> Tensor:
    """``wav [..., time]`` plus white Gaussian noise whose power is ``snr_db`` below the mean power of
    ``wav`` (over all of it). A silent clip stays silent."""
    power = wav.float().pow(2).mean()
    noise = torch.randn(wav.shape, generator=generator, dtype=torch.float32).to(wav.device)
    return wav + noise * (power / 10 ** (snr_db / 10)).sqrt().to(wav.dtype)


def probe_scores(p_clip: Tensor, p_band_limited: Tensor, p_noisy: Tensor) -> dict[str, Tensor]:
    """The four probe measures from ``P(x)``, ``P(LP(x))`` and ``P(N(x))`` (each ``[B]``)."""
    lp_delta, noise_delta = p_clip - p_band_limited, p_clip - p_noisy
    return {"probe:lp.delta": lp_delta, "probe:noise.delta": noise_delta,
            "probe:lp.plus": p_clip + lp_delta, "probe:both.plus": p_clip + lp_delta + noise_delta}


class Probes:
    """The ``probe`` family for :class:`~toolkit.scoring.extensions.ExtensionScorer`: two more network
    passes per clip, over ``LP(x)`` and ``N(x)``. ``band_limit`` and ``noise(wav, key)`` may be
    replaced (a test makes them the identity, so every delta must be exactly 0)."""

    measures = list(PROBE_MEASURES)
    needs_clip = True  # ExtensionScorer passes the waveform and its network pass

    def __init__(self, model: torch.nn.Module, bank=None, draws: int = 3, seed: int = 0,
                 band_limit: Callable[[Tensor], Tensor] = band_limit,
                 noise: Callable[[Tensor, str], Tensor] | None = None) -> None:
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        self.model, self.draws, self.seed = model, draws, seed
        self.band_limit = band_limit
        self.noise = noise or self._seeded_noise

    def _seeded_noise(self, wav: Tensor, key: str) -> Tensor:
        return add_white_noise(wav, PROBE_SNR_DB, torch.Generator().manual_seed(key_seed(self.seed, key + "|probe-noise")))

    def fingerprint(self) -> dict:
        return {"family": "probe", "version": PROBE_VERSION, "draws": self.draws, "seed": self.seed,
                "band_limit_rate": BAND_LIMIT_RATE, "snr_db": PROBE_SNR_DB}

    def _p_pos(self, encoding: Encoding, key: str) -> Tensor:
        return utterance_measures(self.model, encoding, key, ["p_pos.mean"], self.draws, self.seed)["p_pos.mean"]

    def compute(self, encoding: Encoding, key: str, clip: Tensor, encode: Callable[[Tensor], Encoding]) -> dict[str, Tensor]:
        """Quality-oriented ``{measure: [1]}`` for one clip ``[1, time]`` and its encoding; ``encode``
        is the scorer's network pass. The probed clips draw with the clip's own key."""
        p_clip = self._p_pos(encoding, key)
        p_lp = self._p_pos(encode(self.band_limit(clip)), key)
        p_noisy = self._p_pos(encode(self.noise(clip, key)), key)
        return {m: v.float() for m, v in probe_scores(p_clip, p_lp, p_noisy).items()}
