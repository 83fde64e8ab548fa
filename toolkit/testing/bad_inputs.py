"""Makers of bad inputs, for the reliability gauntlet and for users' own tests.

Each maker writes one file (or folder) under ``root`` and returns its path. Everything is
synthesised here: no audio is copied from anywhere.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from toolkit.audio import SAMPLE_RATE

SR = SAMPLE_RATE


def tone(seconds: float = 1.0, rate: int = SR, channels: int = 1, amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    """Speech-like test signal: a gliding harmonic tone with a little noise, ``[time, channels]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    x = amplitude * x / np.abs(x).max() + 0.01 * rng.standard_normal(len(t))
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def _write(path: Path, data: np.ndarray, rate: int = SR, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, **kwargs)
    return path


def zero_length(root: Path) -> Path:
    return _write(root / "zero_length.wav", np.zeros((0, 1), np.float32))


def zero_bytes(root: Path) -> Path:
    path = root / "zero_bytes.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def too_short(root: Path) -> Path:
    return _write(root / "too_short.wav", tone(0.02))  # 320 samples < the 465-sample receptive field


def nan_samples(root: Path) -> Path:
    x = tone(1.0)
    x[100:200] = np.nan
    return _write(root / "nan.wav", x, subtype="FLOAT")


def inf_samples(root: Path) -> Path:
    x = tone(1.0)
    x[300] = np.inf
    return _write(root / "inf.wav", x, subtype="FLOAT")


def silent(root: Path) -> Path:
    return _write(root / "silent.wav", np.zeros((SR, 1), np.float32))


def clipped(root: Path) -> Path:
    return _write(root / "clipped.wav", np.clip(tone(1.0, amplitude=4.0), -1.0, 1.0))


def rate_8k(root: Path) -> Path:
    return _write(root / "rate_8k.wav", tone(1.0, rate=8_000), rate=8_000)


def rate_44k(root: Path) -> Path:
    return _write(root / "rate_44k.flac", tone(1.0, rate=44_100), rate=44_100)


def rate_48k(root: Path) -> Path:
    return _write(root / "rate_48k.wav", tone(1.0, rate=48_000), rate=48_000)


def six_channels(root: Path) -> Path:
    return _write(root / "six_channels.wav", tone(1.0, channels=6))


def mp3_named_wav(root: Path) -> Path:
    """MP3 bytes under a ``.wav`` name (libsndfile detects the real format from the content)."""
    buffer = io.BytesIO()
    sf.write(buffer, tone(1.0), SR, format="MP3", subtype="MPEG_LAYER_III")
    path = root / "actually_mp3.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def truncated_flac(root: Path) -> Path:
    buffer = io.BytesIO()
    sf.write(buffer, tone(2.0), SR, format="FLAC")
    path = root / "truncated.flac"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[:200])
    return path


def corrupt(root: Path) -> Path:
    path = root / "corrupt.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + np.random.default_rng(0).bytes(300))
    return path


def unicode_path(root: Path) -> Path:
    """A good file at a path with spaces and non-ASCII characters."""
    return _write(root / "dossier été" / "voix ü 1.wav", tone(1.0))


def empty_folder(root: Path) -> Path:
    path = root / "empty folder"
    path.mkdir(parents=True, exist_ok=True)
    return path


def missing_path(root: Path) -> Path:
    return root / "does" / "not exist.wav"


def truncated_tar(root: Path) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for i in range(3):
            payload = io.BytesIO()
            sf.write(payload, tone(1.0, seed=i), SR, format="FLAC")
            info = tarfile.TarInfo(f"utt{i:03d}.flac")
            info.size = len(payload.getvalue())
            tar.addfile(info, io.BytesIO(payload.getvalue()))
    path = root / "shard-truncated.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


AUDIO_MAKERS: dict[str, Callable[[Path], Path]] = {
    "zero-length audio": zero_length,
    "zero-byte file": zero_bytes,
    "shorter than receptive field": too_short,
    "NaN samples": nan_samples,
    "Inf samples": inf_samples,
    "all-silent audio": silent,
    "clipping at full scale": clipped,
    "8 kHz": rate_8k,
    "44.1 kHz": rate_44k,
    "48 kHz": rate_48k,
    "6 channels": six_channels,
    "mp3 bytes named .wav": mp3_named_wav,
    "truncated flac": truncated_flac,
    "corrupt file": corrupt,
    "spaces + non-ASCII path": unicode_path,
}
