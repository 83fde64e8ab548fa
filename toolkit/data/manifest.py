"""Scan audio folders into a manifest: one row per file with duration, rate, channels, hash and domain.

Every file is decoded once (in parallel) so that unreadable, too short, silent and NaN/Inf files are
found now rather than in the middle of training. Files whose content hash appears in an evaluation
set are excluded (the leakage guard) and every overlap is logged by name. Nothing is dropped
silently: every file gets a row, and the ``status`` column says whether it is usable (``ok``).

The manifest is a TSV file with a header row (columns: path, duration, sample_rate, channels,
frames, sha256, domain, status, size, mtime, note). ``sha256`` hashes the *decoded samples*, so the
same recording stored as WAV and as FLAC gets the same hash. An interrupted scan keeps its finished
rows in ``OUTPUT.partial``; ``--resume`` continues from there (and from an existing OUTPUT),
re-reading only files that are new or changed (size or mtime).

Example:
    toolkit manifest /data/singing /data/more-singing --domain singing \\
        --exclude-eval-set /data/svcc2023 --workers 8 --output singing.tsv
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from toolkit.audio import AUDIO_EXTENSIONS
from toolkit.errors import DataError
from toolkit.io import atomic_write, disk_full_error

log = logging.getLogger(__name__)

COLUMNS = ("path", "duration", "sample_rate", "channels", "frames", "sha256", "domain", "status", "size", "mtime", "note")
STATUSES = ("ok", "unreadable", "too_short", "silent", "nonfinite", "excluded", "duplicate")
DEFAULT_MIN_DURATION = 0.1  # seconds; shorter than wav2vec's receptive field plus a few predictions
BLOCK_FRAMES = 1 << 20  # decode in blocks: memory stays bounded for hour-long files
DEFAULT_SILENCE = 1e-4  # peak |x| at or below this (about -80 dBFS, 3 LSB of 16-bit) counts as silent


@dataclass
class ManifestRow:
    """One audio file. ``duration`` in seconds at the file's own ``sample_rate``."""

    path: str
    duration: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    frames: int = 0
    sha256: str = ""
    domain: str = ""
    status: str = "ok"
    size: int = 0
    mtime: float = 0.0
    note: str = ""

    def to_line(self) -> str:
        values = [str(getattr(self, name)).replace("\t", " ").replace("\n", " ") for name in COLUMNS]
        return "\t".join(values) + "\n"


@dataclass
class ManifestReport:
    """What a scan found. ``files[status]`` lists the paths with each non-ok status."""

    output: str
    total: int = 0
    ok: int = 0
    hours: float = 0.0
    resumed: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{self.ok}/{self.total} files usable ({self.hours:.2f} h)"]
        parts += [f"{n} {status}" for status, n in sorted(self.counts.items()) if status != "ok" and n]
        if self.resumed:
            parts.append(f"{self.resumed} rows reused from a previous run")
        return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Pure helpers


@dataclass
class AudioSummary:
    """What the scanner needs from decoded samples, accumulated block by block (bounded memory)."""

    channels: int
    frames: int = 0
    nonfinite: int = 0
    peak: float = 0.0
    digest: Any = field(default=None, repr=False)  # hashlib sha256 object

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256(f"{self.channels}ch;".encode())

    def update(self, block: np.ndarray) -> None:
        """Add decoded float32 samples ``[frames, channels]``."""
        block = np.ascontiguousarray(block, dtype=np.float32)
        self.digest.update(block.tobytes())
        self.frames += block.shape[0]
        finite = np.isfinite(block)
        if not finite.all():
            self.nonfinite += int((~finite).sum())
            block = np.where(finite, block, 0.0)
        if block.size:
            self.peak = max(self.peak, float(np.abs(block).max()))

    def sha256(self) -> str:
        digest = self.digest.copy()
        digest.update(f";{self.frames}".encode())
        return digest.hexdigest()


def audio_hash(samples: np.ndarray) -> str:
    """SHA-256 of decoded float32 samples ``[frames, channels]``: a format-independent content hash
    (the same 16-bit recording as WAV and as FLAC hashes the same)."""
    samples = samples.reshape(samples.shape[0], -1)
    summary = AudioSummary(samples.shape[1])
    summary.update(samples)
    return summary.sha256()


def classify(summary: AudioSummary, sample_rate: int, *, min_duration: float, silence: float) -> tuple[str, str]:
    """Status of decoded audio: ``(status, note)`` with status in STATUSES."""
    if summary.frames == 0:
        return "too_short", "0 samples"
    if summary.nonfinite:
        return "nonfinite", f"{summary.nonfinite} NaN/Inf samples"
    if summary.frames / sample_rate < min_duration:
        return "too_short", f"{summary.frames / sample_rate:.3f} s < {min_duration} s"
    if summary.peak <= silence:
        return "silent", f"peak {summary.peak:.2e} <= {silence:.0e}"
    return "ok", ""


def find_audio(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Audio files (by extension) under each input folder, or the input files themselves; sorted."""
    found: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for root, _, names in os.walk(path, followlinks=True):
                for name in names:
                    if name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith("."):
                        found.add(Path(root, name).resolve())
        elif path.is_file():
            found.add(path.resolve())
        else:
            raise DataError(path, "no such file or folder")
    return sorted(found)


# ---------------------------------------------------------------------------------------------
# Probing one file (runs in worker processes)


def probe_file(path: str, domain: str = "", min_duration: float = DEFAULT_MIN_DURATION,
               silence: float = DEFAULT_SILENCE) -> ManifestRow:
    """Decode one file and describe it. Never raises for bad audio: the status says what is wrong."""
    row = ManifestRow(path=path, domain=domain)
    try:
        stat = os.stat(path)
        row.size, row.mtime = int(stat.st_size), float(stat.st_mtime)
    except OSError as err:
        row.status, row.note = "unreadable", f"cannot stat ({err.strerror})"
        return row
    if row.size == 0:
        row.status, row.note = "unreadable", "zero-length file (0 bytes)"
        return row
    try:
        with sf.SoundFile(path) as handle:
            rate = handle.samplerate
            summary = AudioSummary(handle.channels)
            while True:
                block = handle.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                summary.update(block)
    except Exception as err:  # libsndfile raises several types; all mean "cannot decode"
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        row.status, row.note = "unreadable", f"cannot decode ({text.split(': ', 1)[-1]})"
        return row
    row.sample_rate, row.channels, row.frames = int(rate), int(summary.channels), int(summary.frames)
    row.duration = round(row.frames / row.sample_rate, 6)
    row.sha256 = summary.sha256()
    row.status, row.note = classify(summary, rate, min_duration=min_duration, silence=silence)
    return row


def _probe_star(args: tuple) -> ManifestRow:
    return probe_file(*args)


# ---------------------------------------------------------------------------------------------
# Reading and writing manifests


def _parse_row(values: list[str]) -> ManifestRow:
    if len(values) != len(COLUMNS):
        raise ValueError(f"expected {len(COLUMNS)} columns, got {len(values)}")
    raw = dict(zip(COLUMNS, values))
    types = {f.name: f.type for f in fields(ManifestRow)}
    row = ManifestRow(path=raw["path"])
    for name in COLUMNS[1:]:
        kind = types[name]
        value = raw[name]
        setattr(row, name, float(value) if kind == "float" else int(value) if kind == "int" else value)
    if row.status not in STATUSES:
        raise ValueError(f"unknown status {row.status!r}")
    return row


def _read_rows(path: Path, *, tolerant: bool) -> list[ManifestRow]:
    rows: list[ManifestRow] = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            if tolerant:
                return rows
            raise DataError(path, "empty manifest (no header row)")
        if tuple(header) != COLUMNS:
            raise DataError(path, f"not a toolkit manifest: header {header[:4]}... expected {list(COLUMNS[:4])}...")
        for number, values in enumerate(reader, start=2):
            try:
                rows.append(_parse_row(values))
            except (ValueError, TypeError) as err:
                if tolerant:  # a half-written last line of an interrupted run
                    log.debug("%s:%d: ignoring unparsable row (%s)", path, number, err)
                    continue
                raise DataError(path, f"line {number}: {err}") from None
    return rows


def read_manifest(path: str | os.PathLike, *, status: str | None = None) -> list[ManifestRow]:
    """Rows of a manifest written by :func:`build_manifest`; only those with ``status`` if given."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "manifest not found")
    rows = _read_rows(path, tolerant=False)
    return [row for row in rows if status is None or row.status == status]


def write_manifest(path: str | os.PathLike, rows: Iterable[ManifestRow]) -> None:
    """Write rows atomically (complete file or nothing)."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write("\t".join(COLUMNS) + "\n")
        for row in rows:
            handle.write(row.to_line())


def load_exclude_hashes(items: Iterable[str | os.PathLike] | set[str] | None, *, workers: int = 1) -> set[str]:
    """Hashes to exclude: from a set of hex strings, manifests, text files of hashes or audio folders."""
    if items is None:
        return set()
    if isinstance(items, (set, frozenset)):
        return {str(h) for h in items}
    hashes: set[str] = set()
    for item in items:
        path = Path(item)
        if path.is_dir() or (path.is_file() and path.name.lower().endswith(AUDIO_EXTENSIONS)):
            files = [str(p) for p in find_audio([path])]
            for row in _probe_many(files, "", workers, DEFAULT_MIN_DURATION, DEFAULT_SILENCE, desc=f"hash {path.name}"):
                if row.sha256:
                    hashes.add(row.sha256)
        elif path.is_file():
            with open(path, encoding="utf-8") as handle:
                first = handle.readline().rstrip("\n").split("\t")
            if tuple(first) == COLUMNS:
                hashes.update(row.sha256 for row in _read_rows(path, tolerant=False) if row.sha256)
            else:
                with open(path, encoding="utf-8") as handle:
                    hashes.update(line.split()[0] for line in handle if line.strip() and not line.startswith("#"))
        else:
            raise DataError(path, "evaluation set not found (expected a folder, a manifest or a file of hashes)")
    return hashes


def _probe_many(files: Sequence[str], domain: str, workers: int, min_duration: float, silence: float,
                desc: str = "scan") -> Iterator[ManifestRow]:
    from tqdm import tqdm

    tasks = [(f, domain, min_duration, silence) for f in files]
    bar = tqdm(total=len(tasks), desc=desc, unit="file", disable=len(tasks) < 2, leave=False)
    try:
        if workers <= 1 or len(tasks) < 2:
            for task in tasks:
                yield _probe_star(task)
                bar.update()
        else:
            block = workers * 256  # submit in blocks: bounded memory for millions of files
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for begin in range(0, len(tasks), block):
                    for row in pool.map(_probe_star, tasks[begin : begin + block], chunksize=16):
                        yield row
                        bar.update()
    finally:
        bar.close()


def build_manifest(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    domain: str | None = None,
    workers: int = 1,
    exclude_hashes: set[str] | str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    resume: bool = False,
    min_duration: float = DEFAULT_MIN_DURATION,
    silence: float = DEFAULT_SILENCE,
) -> ManifestReport:
    """Scan ``inputs`` (folders or files) into the TSV manifest ``output``.

    ``domain`` labels every row (default: the name of the input folder each file came from, or
    of a file's parent folder).
    ``exclude_hashes`` is a set of content hashes or path(s) accepted by :func:`load_exclude_hashes`;
    matching files get status ``excluded`` and are logged. Files whose content repeats an earlier
    row get status ``duplicate``. With ``resume``, rows from ``output`` and ``output.partial`` are
    reused for files whose size and mtime did not change. Returns the counts per status.
    """
    output = Path(output)
    partial = output.with_name(output.name + ".partial")
    if isinstance(exclude_hashes, (str, os.PathLike)):
        exclude_hashes = [exclude_hashes]
    excluded = load_exclude_hashes(exclude_hashes, workers=workers)

    labels: dict[str, str] = {}
    for item in inputs:
        resolved = Path(item).resolve()
        label = domain if domain is not None else (resolved.name if resolved.is_dir() else resolved.parent.name)
        for path in find_audio([item]):
            labels.setdefault(str(path), label)
    if not labels:
        raise DataError(", ".join(map(str, inputs)), "no audio files found (extensions: " + " ".join(AUDIO_EXTENSIONS) + ")")

    previous: dict[str, ManifestRow] = {}
    if resume:
        for source in (output, partial):
            if source.is_file():
                for row in _read_rows(source, tolerant=True):
                    previous[row.path] = row
    done: dict[str, ManifestRow] = {}
    for path, label in labels.items():
        row = previous.get(path)
        if row is None:
            continue
        try:
            stat = os.stat(path)
        except OSError:
            continue
        if int(stat.st_size) == row.size and float(stat.st_mtime) == row.mtime and row.domain == label:
            done[path] = row
    todo = [p for p in labels if p not in done]
    log.info("%d audio files (%d to scan, %d reused)", len(labels), len(todo), len(done))

    # Keep finished rows in OUTPUT.partial so that an interrupted scan can resume.
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(partial, "w", encoding="utf-8") as handle:
            handle.write("\t".join(COLUMNS) + "\n")
            for row in done.values():
                handle.write(row.to_line())
            handle.flush()
            by_domain: dict[str, list[str]] = {}
            for path in todo:
                by_domain.setdefault(labels[path], []).append(path)
            for label, files in by_domain.items():
                for count, row in enumerate(_probe_many(files, label, workers, min_duration, silence, desc=f"scan {label}")):
                    done[row.path] = row
                    handle.write(row.to_line())
                    if count % 64 == 0:
                        handle.flush()
    except OSError as err:  # a full disk while keeping the resume file: one line, no traceback
        raise disk_full_error(partial, err) or err from None

    rows = [done[path] for path in sorted(done)]
    _apply_guards(rows, excluded)
    write_manifest(output, rows)
    partial.unlink(missing_ok=True)
    report = make_report(output, rows, resumed=len(labels) - len(todo))
    _log_report(report)
    return report


def _apply_guards(rows: list[ManifestRow], excluded: set[str]) -> None:
    """Mark leakage (hash in an evaluation set) and duplicate content, in place (first path wins)."""
    seen: dict[str, str] = {}
    for row in rows:
        if row.status in ("excluded", "duplicate"):  # recompute on resume
            row.status, row.note = "ok", ""
        if not row.sha256 or row.status != "ok":
            continue  # only usable rows can leak or duplicate
        if row.sha256 in excluded:
            row.status, row.note = "excluded", "content hash found in an evaluation set"
        elif row.sha256 in seen:
            row.status, row.note = "duplicate", f"same content as {seen[row.sha256]}"
        if row.status == "ok":
            seen.setdefault(row.sha256, row.path)


def make_report(output: str | os.PathLike, rows: Sequence[ManifestRow], resumed: int = 0) -> ManifestReport:
    counts = Counter(row.status for row in rows)
    files: dict[str, list[str]] = {}
    for row in rows:
        if row.status != "ok":
            files.setdefault(row.status, []).append(row.path)
    hours = sum(row.duration for row in rows if row.status == "ok") / 3600
    return ManifestReport(str(output), len(rows), counts.get("ok", 0), hours, resumed, dict(counts), files)


def _log_report(report: ManifestReport) -> None:
    for status, paths in sorted(report.files.items()):
        for path in paths:
            log.warning("%s: %s", status, path)
    log.info("%s: %s", report.output, report.summary())


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="FOLDER", help="audio folders (recursive) or files")
    parser.add_argument("--output", required=True, help="manifest to write (TSV)")
    parser.add_argument("--domain", default=None, help="domain label for every row (default: input folder name)")
    parser.add_argument("--exclude-eval-set", nargs="+", default=None, metavar="PATH",
                        help="evaluation audio folders, manifests or hash lists: files with the same content are excluded")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="parallel decoders")
    parser.add_argument("--resume", action="store_true", help="reuse rows of an interrupted or earlier run")
    parser.add_argument("--min-duration", type=float, default=DEFAULT_MIN_DURATION, help="seconds; shorter is too_short")
    parser.add_argument("--silence", type=float, default=DEFAULT_SILENCE, help="peak |x| at or below this is silent")


def run(args: argparse.Namespace) -> int:
    report = build_manifest(
        args.inputs, args.output, domain=args.domain, workers=args.workers,
        exclude_hashes=args.exclude_eval_set, resume=args.resume,
        min_duration=args.min_duration, silence=args.silence,
    )
    print(f"{report.output}: {report.summary()}")
    return 0 if report.ok else 1


__all__ = [
    "COLUMNS", "AudioSummary", "ManifestReport", "ManifestRow", "audio_hash", "build_manifest", "classify", "find_audio",
    "load_exclude_hashes", "make_report", "probe_file", "read_manifest", "write_manifest",
]
