"""Small synthetic audio corpora for tests and benchmarks (labelled synthetic; never real speech)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from toolkit.audio import SAMPLE_RATE


def tone_noise(frames: int, sample_rate: int, rng: np.random.Generator, channels: int = 1) -> np.ndarray:
    """Float32 ``[frames]`` (or ``[frames, channels]``): a random-pitch tone plus noise, peak about 0.5."""
    t = np.arange(frames) / sample_rate
    base = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.1 * rng.standard_normal(frames)
    if channels == 1:
        return base.astype(np.float32)
    return np.stack([base * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1).astype(np.float32)


def write_pcm16_corpus(directory: str | os.PathLike, count: int, *, seed: int = 0, min_seconds: float = 0.5,
                       max_seconds: float = 6.0, sample_rate: int = SAMPLE_RATE, extension: str = "wav") -> list[Path]:
    """``count`` mono 16-bit files at ``sample_rate`` with random durations; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        frames = int(rng.uniform(min_seconds, max_seconds) * sample_rate)
        path = directory / f"utt{i:05d}.{extension}"
        sf.write(str(path), tone_noise(frames, sample_rate, rng), sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths
