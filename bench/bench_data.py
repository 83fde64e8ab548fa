"""Decode + crop + batch throughput of the data pipeline, in audio-seconds per second per CPU core.

Compares reading webdataset shards (FLAC, raw int16, raw float32) with fairseq-style reading of one
16 kHz file per utterance (WAV and FLAC: whole file decoded, then cropped). Everything runs in one
process with one thread, so "per core" is the measured rate; the CPU-time rate (audio seconds per
second of process CPU time) is also given because shared machines make wall time noisy.

Corpus: real speech from ../shared/data/speech (all domains) resampled to 16 kHz mono and
concatenated into utterances of 4-16 s (LibriSpeech-like lengths); synthetic tones + noise when
the shared data is absent (--synthetic forces it). Files are read from local disk after one warm-up
pass (page cache warm), so this measures CPU cost, not the filesystem.

    python bench/bench_data.py [--minutes 20] [--max-sample-size 150000] [--max-tokens 1500000]

Appends a dated table to bench/RESULTS.md (unless --no-record).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import append_results, machine, table  # noqa: E402

from toolkit.audio import load_audio  # noqa: E402
from toolkit.data.datamodule import collate, iterate_batches, pack_lengths  # noqa: E402
from toolkit.data.manifest import build_manifest, find_audio  # noqa: E402
from toolkit.data.shards import write_shards  # noqa: E402
from toolkit.data.synthetic import tone_noise  # noqa: E402

SHARED_SPEECH = REPO.parent / "shared" / "data" / "speech"


def make_corpus(directory: Path, minutes: float, synthetic: bool, seed: int = 0) -> tuple[list[Path], str]:
    """16 kHz mono PCM16 utterances of 4-16 s, written as WAV and FLAC; returns WAV paths and a description."""
    rng = np.random.default_rng(seed)
    wav_dir, flac_dir = directory / "wav", directory / "flac"
    wav_dir.mkdir(parents=True)
    flac_dir.mkdir(parents=True)
    target = minutes * 60 * 16_000
    pieces: Iterator[np.ndarray]
    if not synthetic and SHARED_SPEECH.is_dir():
        sources = [p for p in find_audio([SHARED_SPEECH])]
        random.Random(seed).shuffle(sources)
        pieces = (load_audio(p).samples.numpy() for p in sources)
        kind = f"real speech from {SHARED_SPEECH.relative_to(REPO.parent)} (all domains), concatenated"
    else:
        pieces = (tone_noise(int(rng.uniform(1, 5) * 16_000), 16_000, rng) for _ in iter(int, 1))
        kind = "synthetic tone + noise"
    paths, buffer, total, goal = [], [], 0, int(rng.uniform(4, 16) * 16_000)
    for piece in pieces:
        buffer.append(piece)
        if sum(b.shape[0] for b in buffer) >= goal:
            utterance = np.concatenate(buffer)[:goal]
            name = f"utt{len(paths):05d}"
            sf.write(wav_dir / f"{name}.wav", utterance, 16_000, subtype="PCM_16")
            ints = sf.read(wav_dir / f"{name}.wav", dtype="int16")[0]
            sf.write(flac_dir / f"{name}.flac", ints, 16_000, subtype="PCM_16")
            paths.append(wav_dir / f"{name}.wav")
            total += goal
            buffer, goal = [], int(rng.uniform(4, 16) * 16_000)
            if total >= target:
                break
    return paths, kind


def file_batches(paths: list[Path], max_sample_size: int, max_tokens: int, seed: int) -> Iterator[dict]:
    """fairseq-style: read each file whole, random crop, then the same pooled batching as the loader."""
    rng = random.Random(seed)
    order = list(paths)
    rng.shuffle(order)
    pool, total = [], 0
    for path in order:
        samples, _ = sf.read(str(path), dtype="float32")
        if samples.shape[0] > max_sample_size:
            start = rng.randrange(samples.shape[0] - max_sample_size + 1)
            samples = samples[start : start + max_sample_size]
        pool.append((path.stem, samples))
        total += samples.shape[0]
        if total >= 8 * max_tokens:
            yield from _flush(pool, max_tokens)
            pool, total = [], 0
    yield from _flush(pool, max_tokens)


def _flush(pool, max_tokens):
    for group in pack_lengths([s.shape[0] for _, s in pool], max_tokens):
        yield collate([pool[i] for i in group])


def measure(make_iter: Callable[[int], Iterator[dict]], min_seconds: float) -> tuple[float, float, int]:
    """(audio-s per wall-s, audio-s per CPU-s, passes) after one warm-up pass."""
    for _ in make_iter(-1):
        pass
    audio = 0
    passes = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while True:
        for batch in make_iter(passes):
            audio += int(batch["lengths"].sum())
        passes += 1
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if wall >= min_seconds and passes >= 2:
            break
    seconds = audio / 16_000
    return seconds / wall, seconds / cpu, passes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="corpus size in audio minutes")
    parser.add_argument("--max-sample-size", type=int, default=150_000)
    parser.add_argument("--max-tokens", type=int, default=1_500_000)
    parser.add_argument("--min-seconds", type=float, default=5.0, help="time each method at least this long")
    parser.add_argument("--synthetic", action="store_true", help="synthetic audio even if shared data exists")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        paths, kind = make_corpus(work / "corpus", args.minutes, args.synthetic)
        build_manifest([work / "corpus" / "wav"], work / "m.tsv", workers=1)
        rows = []
        crop, tokens = args.max_sample_size, args.max_tokens
        methods: dict[str, Callable[[int], Iterator[dict]]] = {}
        sizes: dict[str, int] = {}
        for storage in ("flac", "int16", "float32"):
            out = work / f"shards_{storage}"
            write_shards(work / "m.tsv", out, storage=storage, max_count=64, workers=1, max_seconds_per_chunk=30)
            sizes[f"shards {storage}"] = sum(p.stat().st_size for p in out.glob("*.tar"))
            methods[f"shards {storage}"] = lambda epoch, out=out: iter(iterate_batches(
                str(out), max_sample_size=crop, max_tokens=tokens, shuffle_buffer=100, epoch=max(epoch, 0)))
        for fmt in ("wav", "flac"):
            files = [work / "corpus" / fmt / f"{p.stem}.{fmt}" for p in paths]
            sizes[f"files {fmt}"] = sum(p.stat().st_size for p in files)
            methods[f"files {fmt}"] = lambda epoch, files=files: file_batches(files, crop, tokens, epoch)
        total_seconds = sum(sf.info(str(p)).duration for p in paths)
        for name, make_iter in methods.items():
            wall_rate, cpu_rate, passes = measure(make_iter, args.min_seconds)
            rows.append([name, f"{sizes[name] / total_seconds / 1000:.1f}", f"{wall_rate:,.0f}", f"{cpu_rate:,.0f}",
                         passes])
            print(f"{name}: {wall_rate:,.0f} audio-s/s wall, {cpu_rate:,.0f} audio-s per CPU-s", flush=True)
        body = table(["method", "kB per audio-s", "audio-s/s (1 core, wall)", "audio-s per CPU-s", "passes"], rows)
        notes = (f"Corpus: {len(paths)} utterances, {total_seconds / 60:.1f} min, {kind}; "
                 f"crop {crop} samples, max_tokens {tokens}; one process, one thread, num_workers=0; "
                 f"page cache warm; load average at the end {os.getloadavg()[0]:.1f} (shared machine: the "
                 f"CPU-time column is the per-core figure to trust). Target: >= 5,000 audio-s/s per core from shards.")
        print()
        print(machine())
        print(body)
        print(notes)
        if not args.no_record:
            append_results("Data pipeline: decode + crop + batch throughput (bench/bench_data.py)", body, notes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
