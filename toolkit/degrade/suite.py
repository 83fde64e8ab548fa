"""The graded degradation suite: which degradations, at which levels, and the files and manifest.

Each degradation type has a mild and a severe parameter value; ``levels`` evenly spaced values
between them (linear, geometric or integer spacing) become severities ``1..levels`` (0 is the clean
clip). Every version is rescaled to its clean clip's RMS level, so loudness alone does not reveal the
severity, then limited to a peak of 0.99.

The manifest (``manifest.csv``) has one row per written file::

    path,clean_id,type,param,level,severity,mos,system,source

- ``path``: relative to the manifest's folder (FLAC, 16 kHz, mono, 16 bit).
- ``type``: ``clean`` (severity 0, one row per clean clip) or a degradation name.
- ``param``/``level``: the physical parameter and its value (for example ``snr_db``, ``10``).
- ``severity``: 0 = clean, then 1, 2, ... increasingly degraded, within each type.
- ``mos``: a *pseudo*-MOS, ``5 - 4 * severity / levels`` (clean 5, most severe 1), so that generic
  ``path,mos[,system]`` readers can load the suite; it is a known ordering, not a listening test.
- ``system``: ``clean`` or ``<type>-<severity>`` (one "system" per condition).
- ``source``: the clean input file.
"""

from __future__ import annotations

import csv
import logging
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from toolkit.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, load_audio, save_audio
from toolkit.degrade import dsp
from toolkit.errors import AudioError, DataError, ToolkitError
from toolkit.io import atomic_write, write_json

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "clean_id", "type", "param", "level", "severity", "mos", "system", "source")
CLEAN = "clean"
DEFAULT_LEVELS = 5
BABBLE_TALKERS = 6


@dataclass(frozen=True)
class Degradation:
    """One degradation type: a parameter swept from ``mild`` to ``severe``."""

    name: str
    param: str
    mild: float
    severe: float
    spacing: str  # "linear" | "geometric" | "integer" | "choices"
    description: str
    choices: tuple[float, ...] = ()  # for "choices": the allowed values, mild to severe

    def grid(self, levels: int) -> list[float]:
        """``levels`` parameter values, mild to severe (integer spacing drops duplicates)."""
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        if levels == 1:
            return [float(self.severe)]
        if self.spacing == "choices":
            picks = np.round(np.linspace(0, len(self.choices) - 1, levels)).astype(int)
            return [float(self.choices[i]) for i in dict.fromkeys(picks.tolist())]
        if self.spacing == "geometric":
            values = np.geomspace(self.mild, self.severe, levels)
        else:
            values = np.linspace(self.mild, self.severe, levels)
        if self.spacing == "integer":
            return [float(v) for v in dict.fromkeys(int(round(v)) for v in values)]
        return [float(round(v, 6)) for v in values]


DEGRADATIONS: dict[str, Degradation] = {
    d.name: d
    for d in (
        Degradation(
            "noise", "snr_db", 30.0, 0.0, "linear", "additive white Gaussian noise at decreasing SNR"
        ),
        Degradation(
            "babble", "snr_db", 30.0, 0.0, "linear", f"babble of {BABBLE_TALKERS} crops of other clips"
        ),
        Degradation(
            "clip",
            "clipped_fraction",
            0.01,
            0.5,
            "geometric",
            "hard clipping of a growing fraction of samples",
        ),
        Degradation(
            "bandlimit", "cutoff_hz", 4000.0, 400.0, "geometric", "8th-order zero-phase Butterworth low-pass"
        ),
        Degradation(
            "opus", "kbps", 48.0, 6.0, "geometric", "Opus (libsndfile) at decreasing nominal bitrate"
        ),
        Degradation(
            "vorbis", "compression_level", 0.2, 1.0, "linear", "Ogg Vorbis (libsndfile) at decreasing quality"
        ),
        Degradation(
            "mp3",
            "kbps",
            64.0,
            8.0,
            "choices",
            "MP3 CBR (libsndfile/LAME) at decreasing bitrate",
            choices=(64.0, 56.0, 48.0, 40.0, 32.0, 24.0, 16.0, 8.0),  # MPEG-2 layer III rates
        ),
        Degradation("mulaw", "bits", 8.0, 2.0, "integer", "mu-law companding quantised to fewer bits"),
        Degradation(
            "reverb", "rt60_s", 0.15, 2.0, "geometric", "exponentially decaying noise impulse response"
        ),
        Degradation("packetloss", "loss_rate", 0.02, 0.5, "geometric", "20 ms frames zeroed at random"),
    )
}
ALIASES = {"codec": ("opus", "vorbis", "mp3")}


def parse_types(spec: str | Sequence[str] | None) -> list[str]:
    """``"noise,codec"`` or a list -> known type names in suite order (``codec`` = opus, vorbis, mp3)."""
    if spec is None:
        return list(DEGRADATIONS)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen: set[str] = set()
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        if item in ALIASES:
            chosen.update(ALIASES[item])
        elif item in DEGRADATIONS:
            chosen.add(item)
        else:
            known = ", ".join([*DEGRADATIONS, *ALIASES])
            raise ToolkitError("--types", f"unknown degradation {item!r}; choose from {known}")
    if not chosen:
        raise ToolkitError("--types", "no degradation types given")
    return [name for name in DEGRADATIONS if name in chosen]


def _opus_level(kbps: float) -> float:
    # libsndfile maps compression level linearly from 256 kbit/s (0) to 6 kbit/s (1) for Opus.
    return float(np.clip((256.0 - kbps) / 250.0, 0.0, 1.0))


def _mp3_level(kbps: float) -> float:
    # libsndfile maps compression level linearly from 160 kbit/s (0) to 8 kbit/s (1) for MPEG-2 layer III;
    # it rejects exactly 1.0, and 0.99 already gives 8 kbit/s.
    return float(np.clip((160.0 - kbps) / 152.0, 0.0, 0.99))


def apply_degradation(
    name: str,
    x: np.ndarray,
    value: float,
    rng: np.random.Generator,
    *,
    sample_rate: int = SAMPLE_RATE,
    babble_sources: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """Apply degradation ``name`` at parameter ``value`` to ``x [time]``, then match ``x``'s level."""
    x = np.asarray(x, dtype=np.float32)
    if name == "noise":
        y = dsp.white_noise(x, value, rng)
    elif name == "babble":
        y = dsp.add_babble(x, babble_sources, value, rng, talkers=BABBLE_TALKERS)
    elif name == "clip":
        y = dsp.hard_clip(x, value)
    elif name == "bandlimit":
        y = dsp.lowpass(x, value, sample_rate)
    elif name == "opus":
        y, _ = dsp.codec_roundtrip(x, sample_rate, "opus", _opus_level(value))
    elif name == "vorbis":
        y, _ = dsp.codec_roundtrip(x, sample_rate, "vorbis", value)
    elif name == "mp3":
        y, _ = dsp.codec_roundtrip(x, sample_rate, "mp3", _mp3_level(value))
    elif name == "mulaw":
        y = dsp.mulaw(x, int(value))
    elif name == "reverb":
        y = dsp.reverberate(x, value, sample_rate, rng)
    elif name == "packetloss":
        y, _ = dsp.packet_loss(x, value, sample_rate, rng)
    else:
        raise ValueError(f"unknown degradation {name!r}")
    return dsp.match_level(y, x)


def codec_settings(name: str, value: float) -> tuple[str, float]:
    """``(codec, libsndfile compression level)`` used for codec type ``name`` at parameter ``value``."""
    if name == "opus":
        return "opus", _opus_level(value)
    if name == "mp3":
        return "mp3", _mp3_level(value)
    if name == "vorbis":
        return "vorbis", float(value)
    raise ValueError(f"{name!r} is not a codec degradation")


def clip_rng(seed: int, clean_id: str, name: str, severity: int) -> np.random.Generator:
    """The generator for one (clip, type, severity): fixed by the seed, independent of the clip order."""
    key = [seed, zlib.crc32(clean_id.encode()), zlib.crc32(name.encode()), severity]
    return np.random.default_rng(key)


@dataclass(frozen=True)
class ManifestRow:
    path: str
    clean_id: str
    type: str
    param: str
    level: float | None
    severity: int
    mos: float
    system: str
    source: str


@dataclass
class DegradeResult:
    """What :func:`degrade_files` wrote: the manifest, its rows and the inputs it skipped."""

    output_dir: str
    manifest: str
    rows: list[ManifestRow]
    clean_clips: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def collect_audio(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand folders (recursively, sorted) and files into audio paths. Raises on a missing path or none found."""
    found: list[Path] = []
    inputs = list(inputs)
    if not inputs:
        raise DataError(None, "no input given: pass clean audio files or folders")
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise AudioError(path, "file not found")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not files:
                raise DataError(path, f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
            found.extend(files)
        else:
            found.append(path)
    return found


def _clean_ids(paths: Sequence[Path]) -> list[str]:
    ids: list[str] = []
    seen: dict[str, int] = {}
    for path in paths:
        base = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in path.stem) or "clip"
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.append(base if count == 0 else f"{base}_{count + 1}")
    return ids


def pseudo_mos(severity: int, levels: int) -> float:
    """Pseudo-MOS for the generic CSV reader: 5 for clean, down to 1 at the most severe level."""
    return 5.0 if levels == 0 else round(5.0 - 4.0 * severity / levels, 4)


def degrade_files(
    inputs: Iterable[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    types: str | Sequence[str] | None = None,
    levels: int = DEFAULT_LEVELS,
    seed: int = 0,
    strict: bool = False,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> DegradeResult:
    """Write graded versions of every clean clip under ``output_dir`` and a ``manifest.csv``.

    An unusable input (undecodable, zero-length, NaN, silent) is skipped, counted and logged, unless
    ``strict`` (then it raises :class:`AudioError`). If no input is usable, raises :class:`DataError`.
    """
    names = parse_types(types)
    if levels < 1:
        raise ToolkitError("--levels", f"need at least 1 level, got {levels}")
    paths = collect_audio(inputs)
    out = Path(output_dir)
    clips: list[tuple[str, Path, np.ndarray]] = []
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    for clean_id, path in zip(_clean_ids(paths), paths):
        try:
            wav = load_audio(path, SAMPLE_RATE)
            x = wav.samples.numpy().astype(np.float32)
            if not np.any(x):
                raise AudioError(path, "silent audio (all samples are zero)")
        except AudioError as err:
            if strict:
                raise
            log.warning("skipping %s", err)
            skipped.append((str(path), err.problem))
            continue
        for note in wav.notes:
            notes.append(f"{path}: {note}")
        clips.append((clean_id, path, x))
    if not clips:
        raise DataError(out, f"none of the {len(paths)} input files could be used ({len(skipped)} skipped)")
    if "babble" in names and len(clips) < 2:
        names.remove("babble")
        notes.append("babble skipped: it is built from other clips and only one clean clip was given")
        log.warning(notes[-1])
    grids = {name: DEGRADATIONS[name].grid(levels) for name in names}
    rows: list[ManifestRow] = []
    iterator: Iterable = clips if progress is None else progress(clips)
    for index, (clean_id, path, x) in enumerate(iterator):
        folder = out / "audio" / clean_id
        folder.mkdir(parents=True, exist_ok=True)
        clean_path = folder / "clean.flac"
        save_audio(clean_path, dsp.match_level(x, x), SAMPLE_RATE)
        rows.append(ManifestRow(_rel(clean_path, out), clean_id, CLEAN, "", None, 0, 5.0, CLEAN, str(path)))
        others = [c[2] for j, c in enumerate(clips) if j != index]
        for name in names:
            spec = DEGRADATIONS[name]
            grid = grids[name]
            for severity, value in enumerate(grid, start=1):
                rng = clip_rng(seed, clean_id, name, severity)
                y = apply_degradation(name, x, value, rng, babble_sources=others)
                target = folder / f"{name}_{severity}.flac"
                save_audio(target, y, SAMPLE_RATE)
                rows.append(
                    ManifestRow(
                        _rel(target, out),
                        clean_id,
                        name,
                        spec.param,
                        value,
                        severity,
                        pseudo_mos(severity, len(grid)),
                        f"{name}-{severity}",
                        str(path),
                    )
                )
    manifest = out / "manifest.csv"
    write_manifest(manifest, rows)
    write_json(
        out / "degrade.json",
        {
            "seed": seed,
            "levels": levels,
            "sample_rate": SAMPLE_RATE,
            "types": {n: {**asdict(DEGRADATIONS[n]), "values": grids[n]} for n in names},
            "clean_clips": len(clips),
            "files": len(rows),
            "skipped": [{"path": p, "problem": why} for p, why in skipped],
            "notes": notes,
            "manifest_columns": list(MANIFEST_COLUMNS),
        },
    )
    log.info(
        "wrote %d files for %d clean clips to %s (%d inputs skipped)",
        len(rows),
        len(clips),
        out,
        len(skipped),
    )
    return DegradeResult(str(out), str(manifest), rows, len(clips), skipped, notes)


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def write_manifest(path: str | os.PathLike, rows: Sequence[ManifestRow]) -> None:
    """Write ``rows`` as the suite's CSV (columns :data:`MANIFEST_COLUMNS`)."""
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        for r in rows:
            level = "" if r.level is None else f"{r.level:g}"
            writer.writerow(
                [r.path, r.clean_id, r.type, r.param, level, r.severity, f"{r.mos:g}", r.system, r.source]
            )


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Read a suite manifest; ``path`` values come back absolute (resolved against the CSV's folder)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "degradation manifest not found")
    base = path.parent
    rows: list[ManifestRow] = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("path", "clean_id", "type", "severity") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(path, f"not a degradation manifest: missing column(s) {', '.join(missing)}")
        for line, rec in enumerate(reader, start=2):
            try:
                severity = int(rec["severity"])
                level = float(rec["level"]) if rec.get("level") else None
                mos = float(rec["mos"]) if rec.get("mos") else float("nan")
            except ValueError:
                raise DataError(path, f"line {line}: non-numeric severity, level or mos") from None
            rows.append(
                ManifestRow(
                    str((base / rec["path"]).resolve()),
                    rec["clean_id"],
                    rec["type"],
                    rec.get("param", ""),
                    level,
                    severity,
                    mos,
                    rec.get("system", ""),
                    rec.get("source", ""),
                )
            )
    if not rows:
        raise DataError(path, "degradation manifest has no rows")
    return rows


def rows_by_utt_id(path: str | os.PathLike) -> dict[str, ManifestRow]:
    """The manifest's rows keyed by the ``utt_id`` that ``toolkit evaluate --dataset csv:PATH`` gives
    each clip (its path relative to the manifest, without the extension), to join scores files with
    each clip's clean recording, type and severity."""
    base = Path(path).parent.resolve()
    return {Path(os.path.relpath(r.path, base)).with_suffix("").as_posix(): r for r in read_manifest(path)}
