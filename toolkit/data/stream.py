"""One rank's stream of audio batches from webdataset shards (see :mod:`toolkit.data.datamodule`
for the epoch semantics), and the pure planning helpers it uses: shard assignment, length packing,
batch-size estimates for resampled epochs.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import IterableDataset

from toolkit.batching import pack_by_padded_size, pad_right
from toolkit.data.shards import AUDIO_KEYS, INDEX_NAME, ShardIndex, decode_crop, read_shard_index
from toolkit.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class LoaderStats:
    """What one iterator (one worker) skipped. Workers log these; ``num_workers=0`` keeps them here."""

    shards: int = 0
    samples: int = 0
    batches: int = 0
    corrupt_shards: list[str] = field(default_factory=list)
    corrupt_samples: int = 0
    too_short: int = 0


@dataclass
class ShardSource:
    """Shard URLs plus the index when there is one (for epoch planning without decoding)."""

    urls: list[str]
    index: ShardIndex | None = None

    @property
    def lengths(self) -> list[int]:
        return [n for shard in self.index.shards for n in shard.lengths] if self.index else []


def resolve_shards(spec: str) -> ShardSource:
    """A folder with ``index.json`` (or just ``*.tar`` files), an ``index.json`` path, or a brace
    pattern of tar files (``/data/shard-{000000..000099}.tar``)."""
    path = Path(spec)
    if path.is_dir() and not (path / INDEX_NAME).exists():
        tars = sorted(str(p) for p in path.glob("*.tar"))
        if not tars:
            raise DataError(spec, f"no {INDEX_NAME} and no .tar shards in this folder")
        log.warning("%s: no %s; reading its %d .tar files without an index", spec, INDEX_NAME, len(tars))
        return ShardSource(tars, None)
    if path.is_dir() or path.name == INDEX_NAME:
        index = read_shard_index(path)
        if not index.shards:
            raise DataError(spec, "shard index lists no shards")
        return ShardSource(index.urls(), index)
    import webdataset as wds

    urls = list(wds.shardlists.expand_urls(spec))
    missing = [u for u in urls if not os.path.exists(u)]
    if not urls or len(missing) == len(urls):
        raise DataError(spec, "no shards found (expected a shard folder with index.json or a brace pattern)")
    index = None
    if (Path(urls[0]).parent / INDEX_NAME).is_file():
        full = read_shard_index(Path(urls[0]).parent)
        keep = {os.path.basename(u) for u in urls}
        full.shards = [s for s in full.shards if s.name in keep]
        index = full
    return ShardSource(urls, index)


# ---------------------------------------------------------------------------------------------
# Pure planning helpers


def assign_shards(urls: list[str], *, rank: int, world_size: int, worker: int, num_workers: int,
                  seed: int, epoch: int, shuffle: bool) -> list[str]:
    """The shards one (rank, worker) reads in a non-resampled epoch: a disjoint round-robin deal
    of a permutation that depends only on ``(seed, epoch)``, so all ranks agree without talking."""
    order = list(urls)
    if shuffle:
        random.Random(f"shards:{seed}:{epoch}").shuffle(order)
    return order[rank::world_size][worker::num_workers]


def leave_sigterm_to_main(_worker_id: int) -> None:
    """DataLoader workers ignore SIGTERM. SLURM's ``scancel`` (and ``kill`` of a process group) signals
    every process: a worker that died first would crash the trainer before it could checkpoint."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def pack_lengths(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Greedy packing of positions (sorted by length) into batches with ``B * max(len) <= max_tokens``."""
    return pack_by_padded_size(lengths, max_tokens)


def estimate_batch_size(lengths: list[int], *, max_sample_size: int, min_sample_size: int, max_tokens: int,
                        pool_batches: int = 8, seed: int = 0, max_items: int = 200_000) -> float:
    """Mean utterances per batch for these utterance lengths, simulating the loader's pooling."""
    rng = random.Random(seed)
    items = [min(n, max_sample_size) for n in lengths if n >= max(min_sample_size, 1)]
    if not items:
        return 1.0
    if len(items) > max_items:
        items = rng.sample(items, max_items)
    rng.shuffle(items)
    batches = 0
    pool: list[int] = []
    pool_limit = pool_batches * max_tokens
    total = 0
    for n in items:
        pool.append(n)
        total += n
        if total >= pool_limit:
            batches += len(pack_lengths(pool, max_tokens))
            pool, total = [], 0
    if pool:
        batches += len(pack_lengths(pool, max_tokens))
    return len(items) / max(batches, 1)


def collate(samples: list[tuple[str, np.ndarray]]) -> dict:
    """``[(key, float32 [T_i])]`` -> ``{"audio": [B, max T_i] zero-padded, "lengths": [B], "keys"}``."""
    audio, lengths = pad_right([s for _, s in samples])
    return {"audio": audio, "lengths": lengths, "keys": [k for k, _ in samples], "dummy": False}


# ---------------------------------------------------------------------------------------------
# The iterable dataset


class ShardStream(IterableDataset):
    """Batches from shards for one rank; splits further across DataLoader workers by itself.

    ``rank`` and ``world_size`` are given explicitly (workers cannot ask torch.distributed).
    ``batches_per_worker`` (resampled mode) cuts each worker's infinite stream. ``epoch`` changes
    the shard order, shuffles and crops; set it before each pass (the loader wrappers do).
    """

    def __init__(
        self,
        urls: list[str],
        *,
        rank: int = 0,
        world_size: int = 1,
        max_sample_size: int = 150_000,
        min_sample_size: int = 0,
        max_tokens: int = 1_500_000,
        shuffle_buffer: int = 500,
        shuffle: bool = True,
        random_crop: bool = True,
        resampled: bool = False,
        batches_per_worker: int | None = None,
        seed: int = 0,
        epoch: int = 0,
        on_corrupt: Literal["skip", "error"] = "skip",
        pool_batches: int = 8,
    ) -> None:
        super().__init__()
        if not urls:
            raise DataError(None, "no shards to read")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if max_sample_size > max_tokens:
            raise ValueError(f"max_sample_size {max_sample_size} > max_tokens {max_tokens}: no batch could hold it")
        if on_corrupt not in ("skip", "error"):
            raise ValueError(f"on_corrupt must be 'skip' or 'error', got {on_corrupt!r}")
        if resampled and batches_per_worker is None:
            raise ValueError("resampled streams are infinite: give batches_per_worker")
        self.urls = list(urls)
        self.rank, self.world_size = rank, world_size
        self.max_sample_size, self.min_sample_size, self.max_tokens = max_sample_size, min_sample_size, max_tokens
        self.shuffle_buffer, self.shuffle, self.random_crop = shuffle_buffer, shuffle, random_crop
        self.resampled, self.batches_per_worker = resampled, batches_per_worker
        self.seed, self.epoch, self.on_corrupt, self.pool_batches = seed, epoch, on_corrupt, pool_batches
        self.stats = LoaderStats()

    # -- stages -----------------------------------------------------------------------------

    def _my_shards(self, worker: int, num_workers: int) -> Iterator[str]:
        if self.resampled:
            rng = random.Random(f"resample:{self.seed}:{self.epoch}:{self.rank}:{worker}")
            candidates = list(self.urls)
            while True:
                if self.stats.corrupt_shards:
                    bad = set(self.stats.corrupt_shards)
                    candidates = [u for u in candidates if u not in bad]
                if not candidates:  # drawing forever from damaged shards would hang
                    raise DataError(self.urls[0] if len(self.urls) == 1 else None,
                                    f"all {len(self.urls)} shards are corrupt: {', '.join(self.stats.corrupt_shards[:3])}")
                yield candidates[rng.randrange(len(candidates))]
        else:
            yield from assign_shards(self.urls, rank=self.rank, world_size=self.world_size, worker=worker,
                                 num_workers=num_workers, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle)

    def _corrupt(self, url: str, problem: str) -> None:
        if self.on_corrupt == "error":
            raise DataError(url, problem)
        if url not in self.stats.corrupt_shards:
            self.stats.corrupt_shards.append(url)
        log.warning("skipping rest of corrupt shard %s: %s", url, problem)

    def _read_shard(self, url: str) -> Iterator[tuple[str, str, bytes, str]]:
        """``(key, extension, encoded audio, url)`` for every complete sample of one tar file."""
        from webdataset.tariterators import group_by_keys, tar_file_iterator

        self.stats.shards += 1
        try:
            with open(url, "rb") as stream:
                files = ({**f, "__url__": url} for f in tar_file_iterator(stream))
                for sample in group_by_keys(files):
                    audio_key = next((k for k in AUDIO_KEYS if k in sample), None)
                    if audio_key is None:
                        self.stats.corrupt_samples += 1
                        log.warning("%s: sample %s has no audio entry", url, sample.get("__key__"))
                        continue
                    yield sample["__key__"], audio_key, sample[audio_key], url
        except DataError:
            raise
        except Exception as err:  # tarfile.ReadError, OSError, ... all mean "this shard is damaged"
            self._corrupt(url, f"{type(err).__name__}: {str(err).split(' @ ')[0] or 'unreadable'}")

    def _buffer_shuffle(self, items: Iterable, rng: random.Random) -> Iterator:
        if not self.shuffle or self.shuffle_buffer <= 1:
            yield from items
            return
        buffer: list = []
        for item in items:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            j = rng.randrange(len(buffer))
            yield buffer[j]
            buffer[j] = item
        rng.shuffle(buffer)
        yield from buffer

    def _decode(self, items: Iterable[tuple[str, str, bytes, str]], rng: random.Random) -> Iterator[tuple[str, np.ndarray]]:
        min_frames = max(self.min_sample_size, 1)

        def choose_start(frames: int, take: int) -> int:
            return rng.randrange(frames - take + 1) if self.random_crop else 0

        for key, extension, data, url in items:
            samples = None
            try:
                _, samples = decode_crop(data, extension, self.max_sample_size, choose_start, min_frames)
                if samples is None:
                    self.stats.too_short += 1
            except Exception as err:
                if self.on_corrupt == "error":
                    raise DataError(url, f"sample {key}: cannot decode {extension} audio ({err})") from None
                self.stats.corrupt_samples += 1
                log.warning("%s: skipping undecodable sample %s (%s)", url, key, err)
            if samples is None:
                unusable = self.stats.too_short + self.stats.corrupt_samples
                if self.resampled and self.stats.samples == 0 and unusable >= 10_000:
                    raise DataError(url, f"none of {unusable} utterances tried is usable (shorter than min_sample_size "
                                    f"{self.min_sample_size} or undecodable): a resampled stream would never yield")
                continue
            self.stats.samples += 1
            yield key, samples

    def _batch(self, items: Iterable[tuple[str, np.ndarray]], rng: random.Random) -> Iterator[dict]:
        pool: list[tuple[str, np.ndarray]] = []
        total = 0
        limit = self.pool_batches * self.max_tokens
        for item in items:
            pool.append(item)
            total += item[1].shape[0]
            if total >= limit:
                yield from self._flush(pool, rng)
                pool, total = [], 0
        if pool:
            yield from self._flush(pool, rng)

    def _flush(self, pool: list[tuple[str, np.ndarray]], rng: random.Random) -> Iterator[dict]:
        groups = pack_lengths([s.shape[0] for _, s in pool], self.max_tokens)
        if self.shuffle:
            rng.shuffle(groups)
        for group in groups:
            self.stats.batches += 1
            yield collate([pool[i] for i in group])

    # -- iteration ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        self.stats = LoaderStats()
        rng = random.Random(f"samples:{self.seed}:{self.epoch}:{self.rank}:{worker}")
        encoded = (item for url in self._my_shards(worker, num_workers) for item in self._read_shard(url))
        batches = self._batch(self._decode(self._buffer_shuffle(encoded, rng), rng), rng)
        if self.batches_per_worker is not None:
            for _, batch in zip(range(self.batches_per_worker), batches):
                yield batch
        else:
            yield from batches
        if info is not None and (self.stats.corrupt_shards or self.stats.corrupt_samples or self.stats.too_short):
            log.warning("rank %d worker %d: %s", self.rank, worker, self.stats)


def plan_resampled_epoch(source: ShardSource, samples_per_epoch: int | None, *, world_size: int, num_workers: int,
                         max_sample_size: int, min_sample_size: int, max_tokens: int, seed: int = 0) -> int:
    """Batches per worker so that all ranks together see about ``samples_per_epoch`` utterances."""
    lengths = source.lengths
    if samples_per_epoch is None:
        if not lengths:
            raise DataError(source.urls[0], "resampled mode needs samples_per_epoch when there is no index.json")
        samples_per_epoch = len(lengths)
    if lengths:
        per_batch = estimate_batch_size(lengths, max_sample_size=max_sample_size, min_sample_size=min_sample_size,
                                        max_tokens=max_tokens, seed=seed)
    else:
        per_batch = max(1.0, max_tokens / max_sample_size)
    per_rank = max(1, math.ceil(samples_per_epoch / world_size / per_batch))
    return max(1, math.ceil(per_rank / num_workers))
