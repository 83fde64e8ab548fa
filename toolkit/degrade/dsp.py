"""Pure signal-processing degradations: arrays in, arrays out, no files, no logging.

Every function takes mono audio ``x`` of shape ``[time]`` (float, nominally in ``[-1, 1]``) and returns
a float32 array of the same length. Randomness comes only from the ``numpy.random.Generator`` passed in,
so a seed fixes the result. Lossy codecs run in memory through ``soundfile`` (bundled libsndfile:
Opus, Vorbis, MP3), never through files or external programs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import soundfile as sf
from scipy import signal

EPS = 1e-12

# Codec name -> (libsndfile format, subtype, bitrate mode or None).
CODECS: dict[str, tuple[str, str, str | None]] = {
    "opus": ("OGG", "OPUS", None),
    "vorbis": ("OGG", "VORBIS", None),
    "mp3": ("MP3", "MPEG_LAYER_III", "CONSTANT"),
}


def power(x: np.ndarray) -> float:
    """Mean square of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x * x)) if x.size else 0.0


def rms(x: np.ndarray) -> float:
    """Root mean square of ``x``."""
    return float(np.sqrt(power(x)))


def snr_db(clean: np.ndarray, noise: np.ndarray) -> float:
    """``10 log10(P(clean) / P(noise))`` in dB, both ``[time]``."""
    return float(10.0 * np.log10((power(clean) + EPS) / (power(noise) + EPS)))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, target_snr_db: float) -> np.ndarray:
    """``clean + g * noise`` with ``g`` chosen so the clean-to-noise power ratio is ``target_snr_db``.

    ``noise`` is cropped or tiled to ``clean``'s length. Power is taken over the whole clip.
    """
    clean = np.asarray(clean, dtype=np.float64)
    noise = _fit_length(np.asarray(noise, dtype=np.float64), clean.size)
    p_noise = power(noise)
    if p_noise <= 0:
        raise ValueError("noise has zero power")
    gain = np.sqrt(power(clean) / (p_noise * 10.0 ** (target_snr_db / 10.0)))
    return (clean + gain * noise).astype(np.float32)


def _fit_length(x: np.ndarray, length: int) -> np.ndarray:
    if x.size == 0:
        raise ValueError("empty signal")
    if x.size < length:
        x = np.tile(x, int(np.ceil(length / x.size)))
    return x[:length]


def white_noise(x: np.ndarray, target_snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise at ``target_snr_db`` (whole-clip power)."""
    return mix_at_snr(x, rng.standard_normal(np.asarray(x).size), target_snr_db)


def babble(length: int, sources: Sequence[np.ndarray], talkers: int, rng: np.random.Generator) -> np.ndarray:
    """Babble noise ``[length]``: the sum of ``talkers`` random crops of ``sources``, each at unit RMS.

    Sources are drawn with replacement (so few sources still give ``talkers`` voices, at different
    offsets); a source shorter than ``length`` is tiled.
    """
    if not sources:
        raise ValueError("babble needs at least one source clip")
    out = np.zeros(length, dtype=np.float64)
    for _ in range(talkers):
        src = np.asarray(sources[int(rng.integers(len(sources)))], dtype=np.float64)
        src = np.tile(src, int(np.ceil((length + 1) / src.size)) + 1)
        start = int(rng.integers(0, src.size - length))
        seg = src[start : start + length]
        out += seg / (rms(seg) + EPS)
    return out


def add_babble(
    x: np.ndarray,
    sources: Sequence[np.ndarray],
    target_snr_db: float,
    rng: np.random.Generator,
    talkers: int = 6,
) -> np.ndarray:
    """Babble built from ``sources`` (other clips), mixed at ``target_snr_db``."""
    return mix_at_snr(x, babble(np.asarray(x).size, sources, talkers, rng), target_snr_db)


def hard_clip(x: np.ndarray, fraction: float) -> np.ndarray:
    """Clip at the magnitude exceeded by ``fraction`` of the samples, so that fraction is clipped.

    The threshold is the ``1 - fraction`` quantile of ``|x|``; the output is not rescaled here.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"clip fraction must be in [0, 1), got {fraction}")
    x = np.asarray(x, dtype=np.float64)
    if fraction == 0.0:
        return x.astype(np.float32)
    threshold = float(np.quantile(np.abs(x), 1.0 - fraction))
    return np.clip(x, -threshold, threshold).astype(np.float32)


def lowpass(x: np.ndarray, cutoff_hz: float, sample_rate: int, order: int = 8) -> np.ndarray:
    """Zero-phase Butterworth low-pass (``order`` per pass, applied forward and backward)."""
    nyquist = sample_rate / 2
    if not 0 < cutoff_hz < nyquist:
        raise ValueError(f"cutoff {cutoff_hz} Hz must be in (0, {nyquist}) Hz")
    sos = signal.butter(order, cutoff_hz, btype="low", fs=sample_rate, output="sos")
    x = np.asarray(x, dtype=np.float64)
    if x.size <= 3 * (2 * len(sos) + 1):  # too short for filtfilt's edge padding
        return signal.sosfilt(sos, x).astype(np.float32)
    return signal.sosfiltfilt(sos, x).astype(np.float32)


def codec_roundtrip(
    x: np.ndarray, sample_rate: int, codec: str, compression_level: float
) -> tuple[np.ndarray, float]:
    """Encode then decode ``x`` in memory with ``codec`` (``opus``, ``vorbis`` or ``mp3``).

    ``compression_level`` is libsndfile's: 0 = best quality / highest bitrate, 1 = smallest file.
    Returns ``(decoded [time], bitrate in kbit/s)``. Decoder delay is removed by cross-correlation
    so the output stays time-aligned with the input.
    """
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")
    if not 0.0 <= compression_level <= 1.0:
        raise ValueError(f"compression level must be in [0, 1], got {compression_level}")
    fmt, subtype, mode = CODECS[codec]
    x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(
        buffer,
        x,
        sample_rate,
        format=fmt,
        subtype=subtype,
        compression_level=compression_level,
        bitrate_mode=mode,
    )
    kbps = len(buffer.getvalue()) * 8 / (x.size / sample_rate) / 1000
    buffer.seek(0)
    decoded, rate = sf.read(buffer, dtype="float32", always_2d=True)
    if rate != sample_rate:  # libsndfile reports the rate it was written at; guard anyway
        raise RuntimeError(f"{codec} decoded at {rate} Hz, expected {sample_rate} Hz")
    y = align_to(decoded.mean(axis=1), x, max_lag=4096)
    return y, kbps


def align_to(y: np.ndarray, reference: np.ndarray, max_lag: int) -> np.ndarray:
    """Shift ``y`` by the lag in ``[0, max_lag]`` that best matches ``reference``; crop/pad to its length."""
    y = np.asarray(y, dtype=np.float32)
    n = reference.size
    padded = np.concatenate([y, np.zeros(max(n + max_lag - y.size, 0), np.float32)])
    corr = signal.correlate(padded[: n + max_lag], reference, mode="valid", method="fft")  # lags 0..max_lag
    lag = int(np.argmax(corr))
    return padded[lag : lag + n].copy()


def mulaw(x: np.ndarray, bits: int, mu: float = 255.0) -> np.ndarray:
    """mu-law companding quantised to ``bits`` bits (8 = G.711-like); fewer bits = coarser."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in [1, 16], got {bits}")
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    compressed = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    steps = 2**bits - 1
    quantised = np.round((compressed + 1.0) / 2.0 * steps) / steps * 2.0 - 1.0
    return (np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(mu)) / mu).astype(np.float32)


def reverb_ir(rt60: float, sample_rate: int, rng: np.random.Generator, drr_rt60: float = 0.3) -> np.ndarray:
    """Synthetic room impulse response ``[taps]``: a unit direct path then exponentially decaying noise.

    The tail decays 60 dB in ``rt60`` seconds and lasts ``rt60`` seconds. Its energy is
    ``rt60 / drr_rt60`` times the direct path's, so the direct-to-reverberant ratio falls as RT60 grows
    (0 dB at ``rt60 == drr_rt60``).
    """
    if rt60 <= 0:
        raise ValueError(f"RT60 must be positive, got {rt60}")
    taps = max(int(round(rt60 * sample_rate)), 2)
    t = np.arange(taps) / sample_rate
    tail = rng.standard_normal(taps) * np.exp(-6.907755 * t / rt60)  # ln(1000): -60 dB at rt60
    tail[0] = 0.0
    tail *= np.sqrt((rt60 / drr_rt60) / (np.sum(tail * tail) + EPS))
    tail[0] = 1.0
    return tail


def reverberate(x: np.ndarray, rt60: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Convolve with :func:`reverb_ir`; keep the input's length (the tail past the end is cut)."""
    x = np.asarray(x, dtype=np.float64)
    return signal.fftconvolve(x, reverb_ir(rt60, sample_rate, rng))[: x.size].astype(np.float32)


def packet_loss(
    x: np.ndarray, loss_rate: float, sample_rate: int, rng: np.random.Generator, frame_ms: float = 20.0
) -> tuple[np.ndarray, np.ndarray]:
    """Zero ``round(loss_rate * frames)`` randomly chosen ``frame_ms`` frames (no concealment).

    Returns ``(y [time], lost [frames] bool)``.
    """
    if not 0.0 <= loss_rate <= 1.0:
        raise ValueError(f"loss rate must be in [0, 1], got {loss_rate}")
    y = np.array(x, dtype=np.float32, copy=True)
    frame = max(int(round(frame_ms * sample_rate / 1000)), 1)
    frames = int(np.ceil(y.size / frame))
    lost = np.zeros(frames, dtype=bool)
    lost[rng.choice(frames, size=int(round(loss_rate * frames)), replace=False)] = True
    for index in np.flatnonzero(lost):
        y[index * frame : (index + 1) * frame] = 0.0
    return y, lost


def match_level(y: np.ndarray, reference: np.ndarray, max_peak: float = 0.99) -> np.ndarray:
    """Scale ``y`` to ``reference``'s RMS (so level alone does not reveal severity), then limit its peak."""
    y = np.asarray(y, dtype=np.float64)
    y = y * (rms(reference) / (rms(y) + EPS)) if rms(y) > 0 else y
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > max_peak:
        y = y * (max_peak / peak)
    return y.astype(np.float32)


def rolloff_hz(x: np.ndarray, sample_rate: int, fraction: float = 0.99) -> float:
    """Frequency below which ``fraction`` of the power lies (Welch spectrum): a bandwidth estimate."""
    nperseg = min(512, max(np.asarray(x).size, 16))
    freqs, spectrum = signal.welch(np.asarray(x, dtype=np.float64), sample_rate, nperseg=nperseg)
    cumulative = np.cumsum(spectrum) / (np.sum(spectrum) + EPS)
    return float(freqs[min(int(np.searchsorted(cumulative, fraction)), freqs.size - 1)])
