"""Audio I/O: every reader in the toolkit goes through :func:`load_audio`.

Decoding uses ``soundfile`` (bundled libsndfile: wav, flac, ogg/vorbis, opus, mp3), never
``torchaudio.load`` (which needs ffmpeg in torchaudio 2.11). Audio comes back as float32 mono at the
requested rate; what was done to it (downmix, resample) is recorded in :attr:`Waveform.notes` so
callers can report it instead of doing it silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from toolkit.errors import AudioError

SAMPLE_RATE = 16_000
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".oga")
# libsndfile container names each extension may hold (the content decides how it is decoded).
_EXTENSION_FORMATS = {
    ".wav": {"WAV", "WAVEX", "RF64", "W64"},
    ".flac": {"FLAC"},
    ".ogg": {"OGG"},
    ".oga": {"OGG"},
    ".opus": {"OGG"},
    ".mp3": {"MP3", "MPEG"},
}


@dataclass(frozen=True)
class AudioInfo:
    """Header facts, read without decoding the samples."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


@dataclass
class Waveform:
    """Decoded audio. ``samples`` is ``[time]`` float32 at ``sample_rate``."""

    samples: torch.Tensor
    sample_rate: int
    source_rate: int
    source_channels: int
    notes: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.samples.numel() / self.sample_rate


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a directory, expected an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "zero-length file (0 bytes)")


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read an audio file's header. Raises :class:`AudioError` naming the file on any problem."""
    path = Path(path)
    _check_exists(path)
    try:
        info = sf.info(str(path))
    except Exception as err:  # libsndfile raises several types; all mean "cannot decode"
        raise AudioError(path, f"cannot read audio header ({_short(err)})") from None
    return AudioInfo(str(path), int(info.samplerate), int(info.channels), int(info.frames), info.format)


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    # soundfile prefixes messages with the path: drop it, the caller names the file.
    return text.split(": ", 1)[-1] if "Error opening" in text else text


def resample(samples: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
    """Band-limited resampling (torchaudio's windowed sinc); identity when the rates match."""
    if source_rate == target_rate:
        return samples
    return AF.resample(samples, source_rate, target_rate)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    *,
    allow_nonfinite: bool = False,
) -> Waveform:
    """Decode ``path`` to float32 mono at ``sample_rate``.

    Multi-channel audio is averaged to mono, other rates are resampled; both are noted in
    ``Waveform.notes``. Raises :class:`AudioError` for a missing, undecodable or empty file, and for
    NaN/Inf samples unless ``allow_nonfinite``.
    """
    path = Path(path)
    _check_exists(path)
    try:
        with sf.SoundFile(str(path)) as handle:
            rate, container = handle.samplerate, handle.format
            data = handle.read(dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(path, f"cannot decode audio ({_short(err)})") from None
    channels = data.shape[1]
    notes: list[str] = []
    expected = _EXTENSION_FORMATS.get(path.suffix.lower())
    if expected is not None and container not in expected:
        notes.append(f"content is {container}, not what the extension {path.suffix} says")
    if data.shape[0] == 0:
        raise AudioError(path, "zero-length audio (0 samples)")
    if not allow_nonfinite and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(path, f"{bad} NaN/Inf samples")
    mono = data.mean(axis=1) if channels > 1 else data[:, 0]
    if channels > 1:
        notes.append(f"downmixed {channels} channels to mono")
    samples = torch.from_numpy(np.ascontiguousarray(mono))
    if rate != sample_rate:
        samples = resample(samples, rate, sample_rate)
        notes.append(f"resampled {rate} Hz to {sample_rate} Hz")
    return Waveform(samples, sample_rate, int(rate), int(channels), notes)


def save_audio(path: str | os.PathLike, samples: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write mono audio atomically (a temporary file, then a rename). Format from the extension."""
    path = Path(path)
    array = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fmt = path.suffix.lstrip(".").upper() or "WAV"
    if fmt == "OPUS":
        fmt, subtype = "OGG", "OPUS"
    elif fmt in {"OGG", "OGA"}:
        fmt, subtype = "OGG", "VORBIS"
    elif fmt == "MP3":
        subtype = "MPEG_LAYER_III"
    elif fmt == "FLAC":
        subtype = "PCM_16"
    else:
        subtype = "FLOAT" if array.dtype.kind == "f" and fmt == "WAV" else None
    try:
        sf.write(str(tmp), array, sample_rate, format=fmt, subtype=subtype)
        os.replace(tmp, path)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
