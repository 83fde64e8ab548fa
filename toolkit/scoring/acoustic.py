"""Trivial acoustic features: the control that any claim of learned uncertainty must beat.

Scored through the same ``score(wavs, lengths)`` contract as the model scorers, one utterance at a
time over its true length (so padding never matters). Features:

``duration``           seconds
``rms_db``             RMS level in dB re full scale
``flatness``           mean over 25 ms frames of spectral flatness (geometric / arithmetic mean power)
``zcr``                zero crossings per sample
``hf_energy_db``       energy above 4 kHz relative to the total, in dB

Signs (reported score = sign * feature) are *conventions* for a control, chosen so that a clean,
loud, tonal signal scores higher: ``+1`` for duration and level, ``-1`` for flatness, zero-crossing
rate and high-frequency energy (noise-like). Compare controls by the size of their correlation and
its interval, not by its sign.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from toolkit.audio import SAMPLE_RATE

FEATURES: dict[str, tuple[int, str]] = {
    "duration": (+1, "duration in seconds"),
    "rms_db": (+1, "RMS level, dB re full scale"),
    "flatness": (-1, "mean spectral flatness of 25 ms frames"),
    "zcr": (-1, "zero crossings per sample"),
    "hf_energy_db": (-1, "energy above 4 kHz relative to the total, dB"),
}
EPS = 1e-10


def acoustic_features(wave: Tensor, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
    """The raw features of one mono waveform ``[time]`` (no sign applied)."""
    x = wave.double()
    n = x.numel()
    rms = math.sqrt(float((x**2).mean())) if n else 0.0
    win = int(0.025 * sample_rate)
    hop = int(0.010 * sample_rate)
    if n < win:
        x = torch.nn.functional.pad(x, (0, win - n))
    spec = torch.stft(
        x, n_fft=win, hop_length=hop, win_length=win, window=torch.hann_window(win, dtype=x.dtype),
        center=False, return_complex=True,
    ).abs() ** 2  # [freq, frames]
    geo = torch.exp(torch.log(spec + EPS).mean(0))
    arith = spec.mean(0) + EPS
    freqs = torch.linspace(0, sample_rate / 2, spec.shape[0], dtype=x.dtype)
    total = float(spec.sum()) + EPS
    high = float(spec[freqs > 4000].sum()) + EPS
    signs = torch.signbit(wave[:n])
    crossings = int((signs[1:] != signs[:-1]).sum()) if n > 1 else 0
    return {
        "duration": n / sample_rate,
        "rms_db": 20 * math.log10(rms + EPS),
        "flatness": float((geo / arith).mean()),
        "zcr": crossings / max(n - 1, 1),
        "hf_energy_db": 10 * math.log10(high / total),
    }


class AcousticScorer:
    """Trivial-feature control with the scorer contract (see the module docstring for signs)."""

    sample_rate = SAMPLE_RATE
    min_samples = 1
    workers = True  # score_files(jobs > 1) may score it in worker processes

    def __init__(self, features: Sequence[str] | None = None, name: str = "acoustic") -> None:
        features = list(features or FEATURES)
        unknown = [f for f in features if f not in FEATURES]
        if unknown:
            raise ValueError(f"unknown acoustic features {unknown}; choose from {', '.join(FEATURES)}")
        self.measures = features
        self.name = name

    def fingerprint(self) -> dict:
        return {"scorer": "acoustic", "features": sorted(self.measures), "version": 1, "sample_rate": self.sample_rate}

    def score(self, wavs: Tensor, lengths: Tensor | None = None, keys: Sequence[str] | None = None) -> dict[str, Tensor]:
        if wavs.ndim != 2:
            raise ValueError(f"wavs must be [batch, time], got {tuple(wavs.shape)}")
        if lengths is None:
            lengths = torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.long)
        rows = [acoustic_features(wavs[b, : int(lengths[b])].cpu(), self.sample_rate) for b in range(wavs.shape[0])]
        return {f: torch.tensor([FEATURES[f][0] * r[f] for r in rows], dtype=torch.float32) for f in self.measures}
