"""Write a manifest into webdataset tar shards of 16 kHz mono audio, with an index beside them.

Every usable row (status ``ok``) of the manifests is decoded, downmixed to mono, resampled to 16 kHz, split into
chunks of at most ``--max-seconds`` and stored losslessly in the chosen format:

* ``int16``   raw little-endian 16-bit PCM (``KEY.s16``), the default: nearly free to decode
              (about 14,000 audio-seconds per CPU-second, bench/RESULTS.md).
* ``flac``    16-bit FLAC (``KEY.flac``): about 0.55x the bytes of int16, but libsndfile decodes
              only about 3,000 audio-seconds per CPU-second. Use it when disk or network is the limit.
* ``float32`` raw little-endian float32 (``KEY.f32``): 4x larger; keeps resampled audio unquantised.

FLAC and int16 store ``round(x * 32768)``, so 16-bit sources at 16 kHz come back bit-exact. Each
sample also holds ``KEY.json`` (source path, content hash, domain, chunk index, first frame, frames).
Keys are ``<first 16 hex of the content hash>-<chunk index>``.

Shards are cut when they reach ``--max-count`` utterances or ``--max-bytes`` bytes. Each shard is
written to a hidden temporary file and renamed when complete, so a shard is complete or absent.
``index.json`` (written last, atomically) lists every shard with its utterance count, seconds,
bytes, SHA-256 and per-utterance lengths, so planning an epoch never decodes audio. Rows are
shuffled (``--seed``) before sharding so that every shard mixes speakers and domains.

Example:
    toolkit shard singing.tsv zh.tsv --output shards/train --storage int16 --max-count 2000 \\
        --max-bytes 500000000 --max-seconds 30 --workers 8
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from toolkit.audio import SAMPLE_RATE, load_audio
from toolkit.errors import DataError, ToolkitError
from toolkit.io import disk_full_error, write_json

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
INDEX_FORMAT = "toolkit-audio-shards"
INDEX_VERSION = 1
SHARD_PATTERN = "shard-%06d.tar"
STORAGE_EXTENSIONS = {"flac": "flac", "int16": "s16", "float32": "f32"}
AUDIO_KEYS = tuple(STORAGE_EXTENSIONS.values())
_PRIVATE = ("_frames", "_domain")  # bookkeeping passed from workers to the writer, not stored


@dataclass
class ShardInfo:
    """One tar shard: ``lengths`` are the utterances' frame counts at 16 kHz, in tar order."""

    name: str
    utterances: int
    seconds: float
    bytes: int
    sha256: str
    lengths: list[int] = field(default_factory=list)
    domains: dict[str, int] = field(default_factory=dict)


@dataclass
class ShardIndex:
    """``index.json``: what is in a folder of shards, readable without decoding any audio."""

    directory: str
    storage: str
    sample_rate: int
    shards: list[ShardInfo]
    max_seconds_per_chunk: float | None = None
    manifest: str = ""
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def utterances(self) -> int:
        return sum(s.utterances for s in self.shards)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.shards)

    def urls(self) -> list[str]:
        return [os.path.join(self.directory, s.name) for s in self.shards]

    def to_dict(self) -> dict:
        return {
            "format": INDEX_FORMAT,
            "format_version": INDEX_VERSION,
            "storage": self.storage,
            "extension": STORAGE_EXTENSIONS[self.storage],
            "sample_rate": self.sample_rate,
            "max_seconds_per_chunk": self.max_seconds_per_chunk,
            "manifest": self.manifest,
            "utterances": self.utterances,
            "seconds": round(self.seconds, 3),
            "shards": [asdict(s) for s in self.shards],
            "skipped": self.skipped,
        }


# ---------------------------------------------------------------------------------------------
# Pure helpers: quantisation, chunking, encoding and decoding of one utterance


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float ``[T]`` in [-1, 1) -> int16 ``round(x * 32768)``, clipped (exact inverse of ``/ 32768``)."""
    return np.clip(np.rint(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def chunk_bounds(frames: int, max_frames: int | None) -> list[tuple[int, int]]:
    """Split ``[0, frames)`` into the fewest near-equal chunks of at most ``max_frames``."""
    if not max_frames or frames <= max_frames:
        return [(0, frames)]
    count = math.ceil(frames / max_frames)
    edges = [round(i * frames / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def encode_audio(samples: np.ndarray, storage: str) -> bytes:
    """Encode float32 mono ``[T]`` for ``storage`` (see module docstring)."""
    if storage == "int16":
        return to_int16(samples).astype("<i2").tobytes()
    if storage == "float32":
        return np.asarray(samples, dtype="<f4").tobytes()
    if storage == "flac":
        buffer = io.BytesIO()
        sf.write(buffer, to_int16(samples), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        return buffer.getvalue()
    raise ValueError(f"unknown storage {storage!r}; choose from {sorted(STORAGE_EXTENSIONS)}")


def audio_frames(data: bytes, extension: str) -> int:
    """Number of frames in an encoded utterance, without decoding it."""
    if extension == "s16":
        return len(data) // 2
    if extension == "f32":
        return len(data) // 4
    if extension == "flac":
        with sf.SoundFile(io.BytesIO(data)) as handle:
            return handle.frames
    raise ValueError(f"unknown audio extension {extension!r}")


def decode_audio(data: bytes, extension: str, start: int = 0, frames: int = -1) -> np.ndarray:
    """Decode ``frames`` samples (all if -1) from ``start`` of an encoded utterance -> float32 ``[T]``.

    Only the requested span is decoded (FLAC seeks), so cropping long utterances is cheap.
    """
    if extension == "s16":
        count = len(data) // 2 - start if frames < 0 else frames
        pcm = np.frombuffer(data, dtype="<i2", count=count, offset=2 * start)
        return pcm.astype(np.float32) * np.float32(1 / 32768)
    if extension == "f32":
        count = len(data) // 4 - start if frames < 0 else frames
        return np.frombuffer(data, dtype="<f4", count=count, offset=4 * start).astype(np.float32)
    if extension == "flac":
        with sf.SoundFile(io.BytesIO(data)) as handle:
            if start:
                handle.seek(start)
            return handle.read(frames, dtype="float32")
    raise ValueError(f"unknown audio extension {extension!r}")


def decode_crop(data: bytes, extension: str, max_frames: int, choose_start=None,
                min_frames: int = 0) -> tuple[int, np.ndarray | None]:
    """Decode at most ``max_frames`` samples of an encoded utterance -> ``(total frames, float32 [T])``.

    ``choose_start(frames, take) -> int`` picks the crop's first frame (default 0). Only the crop is
    decoded, and a FLAC stream is opened once. Utterances shorter than ``min_frames`` are not
    decoded: ``(frames, None)``.
    """
    if extension == "flac":
        with sf.SoundFile(io.BytesIO(data)) as handle:
            frames = handle.frames
            if frames < min_frames:
                return frames, None
            take = min(frames, max_frames)
            start = choose_start(frames, take) if choose_start is not None and frames > take else 0
            if start:
                handle.seek(start)
            samples = handle.read(take, dtype="float32")
    else:
        frames = audio_frames(data, extension)
        if frames < min_frames:
            return frames, None
        take = min(frames, max_frames)
        start = choose_start(frames, take) if choose_start is not None and frames > take else 0
        samples = decode_audio(data, extension, start, take)
    if samples.shape[0] != take:
        raise ValueError(f"decoded {samples.shape[0]} of {take} frames (truncated audio)")
    return frames, samples


# ---------------------------------------------------------------------------------------------
# Worker: decode one manifest row into encoded chunks


def _prepare(args: tuple) -> tuple[str, list[dict] | str]:
    path, sha256, domain, storage, max_frames = args
    try:
        wave = load_audio(path, SAMPLE_RATE)
    except ToolkitError as err:
        return path, err.problem
    samples = wave.samples.numpy()
    extension = STORAGE_EXTENSIONS[storage]
    out = []
    for number, (start, stop) in enumerate(chunk_bounds(samples.shape[0], max_frames)):
        key = f"{sha256[:16] or hashlib.sha256(path.encode()).hexdigest()[:16]}-{number:04d}"
        meta = {"source": path, "sha256": sha256, "domain": domain, "chunk": number, "start": start,
                "frames": stop - start, "sample_rate": SAMPLE_RATE}
        out.append({"__key__": key, extension: encode_audio(samples[start:stop], storage),
                    "json": json.dumps(meta).encode(), "_frames": stop - start, "_domain": domain})
    return path, out


# ---------------------------------------------------------------------------------------------
# Writing


class _ShardSink:
    """Writes samples into ``shard-%06d.tar`` files, cutting by count and bytes, each one atomically."""

    def __init__(self, directory: Path, max_count: int, max_bytes: int) -> None:
        self.directory, self.max_count, self.max_bytes = directory, max_count, max_bytes
        self.shards: list[ShardInfo] = []
        self._writer = None
        self._file = None

    def _open(self) -> None:
        import webdataset as wds

        name = SHARD_PATTERN % len(self.shards)
        self._tmp = self.directory / f".{name}.tmp{os.getpid()}"
        self._file = open(self._tmp, "wb")  # noqa: SIM115 (closed in _close)
        self._writer = wds.TarWriter(self._file, encoder=False, mtime=0)  # int: no PAX header per member
        self._current = ShardInfo(name=name, utterances=0, seconds=0.0, bytes=0, sha256="")
        self._domains: Counter[str] = Counter()

    def write(self, sample: dict) -> None:
        entries = {k: v for k, v in sample.items() if k not in _PRIVATE}
        # tar: a 512-byte header per member, data padded to 512; the archive ends with 1024 zero
        # bytes and is padded to a 10240-byte record.
        size = sum(512 + -(-len(v) // 512) * 512 for k, v in entries.items() if k != "__key__")
        if self._writer is not None and (
            self._current.utterances >= self.max_count
            or -(-(self._current.bytes + size + 1024) // 10240) * 10240 > self.max_bytes
        ):
            self._close()
        if self._writer is None:
            self._open()
        frames = sample["_frames"]
        self._writer.write(entries)
        self._current.utterances += 1
        self._current.bytes += size
        self._current.seconds += frames / SAMPLE_RATE
        self._current.lengths.append(frames)
        self._domains[sample["_domain"]] += 1

    def _close(self) -> None:
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = hashlib.sha256()
        with open(self._tmp, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        self._current.sha256 = digest.hexdigest()
        self._current.bytes = self._tmp.stat().st_size
        self._current.seconds = round(self._current.seconds, 4)
        self._current.domains = dict(self._domains)
        os.replace(self._tmp, self.directory / self._current.name)
        self.shards.append(self._current)
        self._writer = self._file = None

    def finish(self) -> None:
        if self._writer is not None:
            self._close()

    def abort(self) -> None:
        if self._writer is not None:
            try:
                with contextlib.suppress(Exception):
                    self._writer.close()
                self._file.close()
            finally:
                self._tmp.unlink(missing_ok=True)
                self._writer = self._file = None


def write_shards(
    manifest_path: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    max_count: int = 10_000,
    max_bytes: int = 1_000_000_000,
    max_seconds_per_chunk: float | None = 30.0,
    storage: str = "int16",
    workers: int = 1,
    seed: int | None = 0,
    overwrite: bool = False,
) -> ShardIndex:
    """Write the ``ok`` rows of one or more manifests into tar shards in ``output_dir``; return the index.

    ``storage`` is ``int16`` (fastest to read), ``flac`` (smallest) or ``float32``. Rows are shuffled with ``seed`` (keep manifest
    order with ``seed=None``). Rows that cannot be decoded any more are skipped, logged and listed in
    the index's ``skipped``. An existing shard folder is refused unless ``overwrite``.
    """
    from tqdm import tqdm

    from toolkit.data.manifest import read_manifest

    if storage not in STORAGE_EXTENSIONS:
        raise DataError(storage, f"unknown storage; choose from {', '.join(STORAGE_EXTENSIONS)}")
    if max_count < 1 or max_bytes < 1:
        raise DataError("--max-count/--max-bytes", "must be positive")
    manifests = [manifest_path] if isinstance(manifest_path, (str, os.PathLike)) else list(manifest_path)
    rows = [row for path in manifests for row in read_manifest(path, status="ok")]
    if not rows:
        raise DataError(", ".join(map(str, manifests)), "no usable rows (status ok) to shard")
    duplicates = len(rows) - len({row.path for row in rows})
    if duplicates:
        raise DataError(", ".join(map(str, manifests)), f"{duplicates} files appear in more than one manifest")
    if seed is not None:
        random.Random(seed).shuffle(rows)
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    old = sorted(directory.glob("shard-*.tar")) + ([directory / INDEX_NAME] if (directory / INDEX_NAME).exists() else [])
    if old:
        if not overwrite:
            raise DataError(directory, f"already holds {len(old)} shard/index files; pass --overwrite to replace them")
        for path in old:
            path.unlink()

    max_frames = int(max_seconds_per_chunk * SAMPLE_RATE) if max_seconds_per_chunk else None
    tasks = [(row.path, row.sha256, row.domain, storage, max_frames) for row in rows]
    sink = _ShardSink(directory, max_count, max_bytes)
    skipped: list[dict[str, str]] = []
    bar = tqdm(total=len(tasks), desc="shard", unit="file")
    try:
        for path, result in _map_ordered(_prepare, tasks, workers):
            bar.update()
            if isinstance(result, str):
                log.warning("skipped %s: %s", path, result)
                skipped.append({"path": path, "problem": result})
                continue
            for sample in result:
                sink.write(sample)
        sink.finish()
    except BaseException as err:
        writing = directory / sink._current.name if sink._writer is not None else directory
        sink.abort()
        full = disk_full_error(writing, err) if isinstance(err, OSError) else None
        if full is not None:  # a full disk: one line naming the shard, and no partial shard left
            raise full from None
        raise
    finally:
        bar.close()
    index = ShardIndex(str(directory.resolve()), storage, SAMPLE_RATE, sink.shards,
                       max_seconds_per_chunk, ",".join(str(Path(m).resolve()) for m in manifests), skipped)
    write_json(directory / INDEX_NAME, index.to_dict())
    log.info("%s: %d shards, %d utterances, %.2f h (%s), %d files skipped", directory, len(index.shards),
             index.utterances, index.seconds / 3600, storage, len(skipped))
    return index


def _one_thread() -> None:
    """Worker processes resample with torch: one intra-op thread each, or N workers x N threads
    oversubscribe the machine (measured: 25x more CPU time on a busy 2-core machine)."""
    import torch

    torch.set_num_threads(1)


def _map_ordered(fn, tasks: Sequence[tuple], workers: int) -> Iterator[tuple]:
    """``map`` in order with bounded memory: at most ``workers * 8`` results in flight."""
    if workers <= 1:
        for task in tasks:
            yield fn(task)
        return
    block = workers * 8
    with ProcessPoolExecutor(max_workers=workers, initializer=_one_thread) as pool:
        for begin in range(0, len(tasks), block):
            yield from pool.map(fn, tasks[begin : begin + block], chunksize=2)


# ---------------------------------------------------------------------------------------------
# Reading the index


def read_shard_index(path: str | os.PathLike) -> ShardIndex:
    """Read ``index.json`` from a shard folder (or the index file itself)."""
    path = Path(path)
    index_path = path / INDEX_NAME if path.is_dir() else path
    if not index_path.is_file():
        raise DataError(index_path, "shard index not found (write shards with `toolkit shard`)")
    try:
        data = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(index_path, f"unreadable shard index ({err})") from None
    if data.get("format") != INDEX_FORMAT:
        raise DataError(index_path, f"not a toolkit shard index (format {data.get('format')!r})")
    if data.get("format_version", 0) > INDEX_VERSION:
        raise DataError(index_path, f"index format_version {data['format_version']} is newer than this toolkit's")
    shards = [ShardInfo(**s) for s in data["shards"]]
    return ShardIndex(str(index_path.parent.resolve()), data["storage"], data["sample_rate"], shards,
                      data.get("max_seconds_per_chunk"), data.get("manifest", ""), data.get("skipped", []))


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifests", nargs="+", metavar="MANIFEST",
                        help="manifest(s) written by `toolkit manifest` (e.g. one per domain)")
    parser.add_argument("--output", required=True, help="folder for shard-NNNNNN.tar and index.json")
    parser.add_argument("--storage", choices=sorted(STORAGE_EXTENSIONS), default="int16",
                        help="int16: fastest to read (default); flac: about half the bytes, ~5x the decoding CPU")
    parser.add_argument("--max-count", type=int, default=10_000, help="utterances per shard at most")
    parser.add_argument("--max-bytes", type=int, default=1_000_000_000, help="bytes per shard at most")
    parser.add_argument("--max-seconds", type=float, default=30.0,
                        help="split longer utterances into chunks of at most this many seconds (0: never)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="parallel decoders")
    parser.add_argument("--seed", type=int, default=0, help="shuffle rows before sharding (-1: keep manifest order)")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --output")


def run(args: argparse.Namespace) -> int:
    index = write_shards(
        args.manifests, args.output, max_count=args.max_count, max_bytes=args.max_bytes,
        max_seconds_per_chunk=args.max_seconds or None, storage=args.storage, workers=args.workers,
        seed=None if args.seed < 0 else args.seed, overwrite=args.overwrite,
    )
    print(f"{args.output}: {len(index.shards)} shards, {index.utterances} utterances, "
          f"{index.seconds / 3600:.2f} h, {len(index.skipped)} files skipped")
    return 0


__all__ = [
    "INDEX_NAME", "STORAGE_EXTENSIONS", "ShardIndex", "ShardInfo", "audio_frames", "chunk_bounds", "decode_audio", "decode_crop",
    "encode_audio", "read_shard_index", "to_int16", "write_shards",
]
