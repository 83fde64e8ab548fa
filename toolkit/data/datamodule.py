"""Streaming batches of 16 kHz audio from webdataset shards, for 1..N nodes x 1..G GPUs x W workers.

Pipeline, per DataLoader worker::

    shard list --(seeded shuffle, split by rank then by worker)--> tar reader (webdataset)
      --> buffer shuffle of *encoded* utterances --> decode + random crop to max_sample_size
      --> pools of ~8 x max_tokens samples sorted by length --> batches of <= max_tokens samples

Batches are dicts ``{"audio": float32 [B, T] right-padded with zeros, "lengths": int64 [B],
"keys": list[str], "dummy": bool}``; ``B * T <= max_tokens`` (fairseq's ``max_tokens``).

Epochs:

* ``resampled=False``: every utterance is seen exactly once per epoch across all ranks and workers.
  Shards are shuffled with ``(seed, epoch)`` (the same permutation on every rank) and dealt
  round-robin to ranks, then to workers, so nothing is duplicated. Ranks can end up with different
  numbers of batches; with ``world_size > 1`` the loader keeps ranks in step (DDP needs the same
  number of steps everywhere): once a rank runs out it repeats its last batch with
  ``"dummy": True`` until every rank is done. **A training step must multiply its loss by zero for
  a dummy batch** (fairseq does the same). One tiny all-reduce on a gloo group per batch decides this.
* ``resampled=True``: every worker draws shards at random with replacement, forever; the epoch is
  cut to the same number of batches on every rank and worker, derived from ``samples_per_epoch``
  (utterances across all ranks; default: the number in the index) and the mean batch size
  estimated from the index. Use it for long runs.

``min_sample_size``: shorter utterances are dropped (counted), never padded up. Crops are random
in training and from the start in validation. Corrupt or truncated shards are logged by name and
skipped (``on_corrupt="skip"``, counted in ``stats``) or raise :class:`DataError` (``"error"``);
reading a local file never blocks, so neither case can hang.

Memory per worker is bounded by ``shuffle_buffer`` encoded utterances (each at most
``max_seconds_per_chunk`` of the shard writer) plus one pool of ``pool_batches * max_tokens`` floats.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from toolkit.data.stream import (
    LoaderStats,
    ShardSource,
    ShardStream,
    assign_shards,
    collate,
    estimate_batch_size,
    leave_sigterm_to_main,
    pack_lengths,
    plan_resampled_epoch,
    resolve_shards,
)
from toolkit.errors import DataError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Loaders: epoch bookkeeping and keeping DDP ranks in step


class EpochLoader:
    """Iterable over batches; sets the dataset's epoch before each pass.

    With ``group`` (a process group; gloo is used), ranks agree after each batch on whether any
    rank still has data; a rank that has run out yields its last batch again with ``dummy=True``.

    :meth:`skip_next` makes the next pass of a given epoch read (without yielding) the batches a
    resumed run already trained on; every rank skips the same number, so the votes stay in step.
    """

    def __init__(self, dataset: ShardStream, loader: Iterable[dict], *, group=None, epoch_fn=None) -> None:
        self.dataset, self.loader, self.group, self.epoch_fn = dataset, loader, group, epoch_fn
        self._passes = 0
        self._skip: tuple[int, int] | None = None  # (epoch, batches) to skip in that epoch's next pass

    def set_epoch(self, epoch: int) -> None:
        self.epoch_fn = None
        self._passes = epoch

    def skip_next(self, epoch: int, batches: int) -> None:
        """In the next pass, if it is ``epoch``, leave out its first ``batches`` batches."""
        self._skip = (int(epoch), int(batches))

    def __iter__(self) -> Iterator[dict]:
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._passes
        self._passes += 1
        self.dataset.epoch = epoch
        skip = self._skip[1] if self._skip is not None and self._skip[0] == epoch else 0
        self._skip = None
        if skip:
            log.info("resuming epoch %d of the data stream after its first %d batches", epoch, skip)
        for index, batch in enumerate(self._in_step()):
            if index >= skip:
                yield batch

    def _in_step(self) -> Iterator[dict]:
        if self.group is None:
            yield from self.loader
            return
        iterator = iter(self.loader)
        last: dict | None = None
        flag = torch.zeros(1, dtype=torch.int32)
        while True:
            batch = next(iterator, None)
            flag.fill_(0 if batch is None else 1)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
            if int(flag.item()) == 0:
                return
            if batch is not None:
                last = batch
                yield batch
            else:
                yield _dummy_batch(last, self.dataset.max_sample_size)


def _dummy_batch(last: dict | None, max_sample_size: int) -> dict:
    if last is not None:
        return {**last, "keys": list(last["keys"]), "dummy": True}
    length = min(max_sample_size, 32_000)
    return {"audio": torch.zeros(1, length), "lengths": torch.tensor([length]), "keys": ["<dummy>"], "dummy": True}


def distributed_info() -> tuple[int, int]:
    """``(rank, world_size)`` from an initialised torch.distributed, else from RANK/WORLD_SIZE, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return 0, 1


_GLOO_GROUP = None


def _step_group():
    """A gloo group for the per-batch "anyone still has data?" vote (CPU tensors, no CUDA sync)."""
    global _GLOO_GROUP
    if dist.get_backend() == "gloo":
        return dist.group.WORLD
    if _GLOO_GROUP is None:
        _GLOO_GROUP = dist.new_group(backend="gloo")
    return _GLOO_GROUP


def iterate_batches(
    shards: str | list[str],
    *,
    rank: int | None = None,
    world_size: int | None = None,
    num_workers: int = 0,
    max_sample_size: int = 150_000,
    min_sample_size: int = 0,
    max_tokens: int = 1_500_000,
    shuffle_buffer: int = 500,
    shuffle: bool = True,
    random_crop: bool = True,
    resampled: bool = False,
    samples_per_epoch: int | None = None,
    seed: int = 0,
    epoch: int = 0,
    on_corrupt: Literal["skip", "error"] = "skip",
    even_batches: bool | None = None,
    prefetch_factor: int = 4,
    pin_memory: bool = False,
    multiprocessing_context: str | None = None,
    timeout: float = 0.0,
) -> EpochLoader:
    """Batches without Lightning (tests, benchmarks, scripts). Iterate it once per epoch.

    ``shards`` is a shard folder, a brace pattern or a list of tar paths. ``rank``/``world_size``
    default to torch.distributed's. ``even_batches`` (default: when torch.distributed is
    initialised with several ranks and not resampled) keeps ranks in step with dummy batches.
    ``multiprocessing_context`` ("fork", "spawn", ...) starts the DataLoader workers; note that in a
    process started with spawn (``ddp_spawn``) the default is spawn, which re-imports everything.
    ``timeout`` > 0: raise instead of waiting longer than this many seconds for a worker's batch
    (a stalled network filesystem); 0 waits forever.
    """
    if rank is None or world_size is None:
        rank, world_size = distributed_info()
    source = ShardSource(list(shards)) if isinstance(shards, list) else resolve_shards(shards)
    per_worker = None
    if resampled:
        per_worker = plan_resampled_epoch(source, samples_per_epoch, world_size=world_size,
                                          num_workers=max(1, num_workers), max_sample_size=max_sample_size,
                                          min_sample_size=min_sample_size, max_tokens=max_tokens, seed=seed)
    elif samples_per_epoch is not None:
        raise ValueError("samples_per_epoch sets the length of resampled epochs; "
                         "a non-resampled epoch is one pass over the shards (set resampled=True)")
    dataset = ShardStream(source.urls, rank=rank, world_size=world_size, max_sample_size=max_sample_size,
                          min_sample_size=min_sample_size, max_tokens=max_tokens, shuffle_buffer=shuffle_buffer,
                          shuffle=shuffle, random_crop=random_crop, resampled=resampled,
                          batches_per_worker=per_worker, seed=seed, epoch=epoch, on_corrupt=on_corrupt)
    if not resampled and len(source.urls) < world_size * max(1, num_workers):
        log.warning("%d shards for %d ranks x %d workers: some workers will idle (write more, smaller shards "
                    "with `toolkit shard --max-count`)", len(source.urls), world_size, max(1, num_workers))
    loader: Iterable[dict] = dataset
    if num_workers > 0:
        loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                            persistent_workers=False, prefetch_factor=prefetch_factor,
                            multiprocessing_context=multiprocessing_context, timeout=timeout,
                            worker_init_fn=leave_sigterm_to_main)
    if even_batches is None:
        even_batches = world_size > 1 and not resampled and dist.is_available() and dist.is_initialized()
    group = _step_group() if even_batches else None
    wrapper = EpochLoader(dataset, loader, group=group)
    wrapper._passes = epoch
    return wrapper


# ---------------------------------------------------------------------------------------------
# Lightning


class AudioShardDataModule(pl.LightningDataModule):
    """Shards -> batches of 16 kHz audio for Lightning; see the module docstring for the semantics.

    Args:
        train_shards: shard folder with index.json (from ``toolkit shard``) or a brace pattern.
        val_shards: the same for validation (one deterministic pass, crops from the start).
        max_sample_size: crop longer utterances to this many samples (fairseq ``max_sample_size``).
        min_sample_size: drop shorter utterances (never padded; fairseq ``min_sample_size``).
        max_tokens: at most this many samples per batch per GPU, padding included (``B * T``).
        num_workers: DataLoader worker processes per GPU.
        shuffle_buffer: encoded utterances held per worker for shuffling.
        samples_per_epoch: utterances per epoch across all ranks in resampled mode (default: index size).
        resampled: draw shards with replacement forever (epoch cut by samples_per_epoch).
        seed: shard order, shuffles and crops depend on (seed, epoch, rank, worker) only.
        on_corrupt: "skip" (log and count) or "error" (raise DataError) for damaged shards.
        pin_memory: pin batches for faster host-to-GPU copies.
        prefetch_factor: batches prefetched per worker.
        timeout: seconds to wait for a batch from the workers before raising (0: forever); a guard
            against stalled network filesystems.
        on_stream_mismatch: resuming needs the stream the checkpoint was written with (same world
            size, workers, seed, shards, batching). ``error`` (default) refuses a different one with
            a message naming the differences; ``restart`` starts the current epoch's stream afresh.

    Resume: :meth:`state_dict` (stored in every Lightning checkpoint) records the epoch and the
    number of training batches consumed in it, with the settings that make the stream
    reproducible; :meth:`load_state_dict` checks them and makes the next pass of that epoch skip
    the consumed batches, so a resumed run continues with exactly the next batch.
    """

    def __init__(
        self,
        train_shards: str,
        val_shards: str | None = None,
        max_sample_size: int = 150_000,
        min_sample_size: int = 0,
        max_tokens: int = 1_500_000,
        num_workers: int = 4,
        shuffle_buffer: int = 500,
        samples_per_epoch: int | None = None,
        resampled: bool = False,
        seed: int = 0,
        on_corrupt: Literal["skip", "error"] = "skip",
        pin_memory: bool = True,
        prefetch_factor: int = 4,
        timeout: float = 0.0,
        on_stream_mismatch: Literal["error", "restart"] = "error",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if on_stream_mismatch not in ("error", "restart"):
            raise ValueError(f"on_stream_mismatch must be 'error' or 'restart', got {on_stream_mismatch!r}")
        self.on_stream_mismatch = on_stream_mismatch
        self._position = (0, 0)  # (epoch, training batches consumed in it)
        self._resume: tuple[int, int] | None = None
        self._shard_names: list[str] | None = None
        if max_sample_size > max_tokens:
            raise ValueError(f"max_sample_size {max_sample_size} > max_tokens {max_tokens}")
        if samples_per_epoch is not None and not resampled:
            raise ValueError("samples_per_epoch needs resampled=True (a non-resampled epoch is one pass)")
        self.train_shards, self.val_shards = train_shards, val_shards
        self.max_sample_size, self.min_sample_size, self.max_tokens = max_sample_size, min_sample_size, max_tokens
        self.num_workers, self.shuffle_buffer = num_workers, shuffle_buffer
        self.samples_per_epoch, self.resampled, self.seed = samples_per_epoch, resampled, seed
        self.on_corrupt, self.pin_memory, self.prefetch_factor = on_corrupt, pin_memory, prefetch_factor
        self.timeout = timeout

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return distributed_info()

    def _loader(self, spec: str, *, train: bool) -> EpochLoader:
        rank, world = self._rank_world()
        resampled = self.resampled and train
        loader = iterate_batches(
            spec, rank=rank, world_size=world, num_workers=self.num_workers,
            max_sample_size=self.max_sample_size, min_sample_size=self.min_sample_size,
            max_tokens=self.max_tokens, shuffle_buffer=self.shuffle_buffer, shuffle=train, random_crop=train,
            resampled=resampled, samples_per_epoch=self.samples_per_epoch if resampled else None,
            seed=self.seed, on_corrupt=self.on_corrupt,
            even_batches=world > 1 and not resampled and dist.is_available() and dist.is_initialized(),
            prefetch_factor=self.prefetch_factor, pin_memory=self.pin_memory and torch.cuda.is_available(),
            timeout=self.timeout if self.num_workers > 0 else 0.0,
        )
        trainer = getattr(self, "trainer", None)
        if trainer is not None and train:
            loader.epoch_fn = lambda: trainer.current_epoch
        return loader

    def train_dataloader(self) -> EpochLoader:
        loader = self._loader(self.train_shards, train=True)
        if self._resume is not None:
            loader.skip_next(*self._resume)
            self._resume = None
        return loader

    # -- resume ------------------------------------------------------------------------------

    def stream_settings(self) -> dict[str, Any]:
        """What the training stream's order depends on (besides epoch and position)."""
        _, world = self._rank_world()
        if self._shard_names is None:  # resolved once: listing shards is I/O (and may warn)
            self._shard_names = [os.path.basename(u) for u in resolve_shards(self.train_shards).urls]
        return {
            "world_size": int(world), "num_workers": int(self.num_workers), "seed": int(self.seed),
            "resampled": bool(self.resampled), "samples_per_epoch": self.samples_per_epoch,
            "shards": self._shard_names,
            "max_tokens": int(self.max_tokens), "max_sample_size": int(self.max_sample_size),
            "min_sample_size": int(self.min_sample_size), "shuffle_buffer": int(self.shuffle_buffer),
        }

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Called for the batch about to be trained on (not for a prefetched one): count it.
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            epoch = int(trainer.current_epoch)
            consumed = self._position[1] + 1 if self._position[0] == epoch else 1
            self._position = (epoch, consumed)
        return batch

    def state_dict(self) -> dict[str, Any]:
        epoch, consumed = self._position
        return {"epoch": epoch, "batches_consumed": consumed, "stream": self.stream_settings()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "batches_consumed" not in state_dict:
            return  # a checkpoint from before the stream position was stored: the epoch restarts
        saved, now = state_dict.get("stream", {}), self.stream_settings()
        changed = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in now if saved.get(k) != now[k]]
        epoch, consumed = int(state_dict["epoch"]), int(state_dict["batches_consumed"])
        if changed:
            what = "; ".join(changed)
            if self.on_stream_mismatch == "error":
                raise DataError(self.train_shards, "cannot resume the data stream where the checkpoint left it: "
                                f"{what}. Resume with the same settings, or set "
                                "data.on_stream_mismatch=restart to start epoch "
                                f"{epoch} afresh")
            log.warning("data stream settings changed (%s): epoch %d restarts from its beginning", what, epoch)
            consumed = 0
        self._position = (epoch, consumed)
        self._resume = (epoch, consumed)

    def val_dataloader(self) -> EpochLoader | list:
        if self.val_shards is None:
            return []
        return self._loader(self.val_shards, train=False)


__all__ = [
    "AudioShardDataModule", "EpochLoader", "LoaderStats", "ShardSource", "ShardStream", "assign_shards",
    "collate", "distributed_info", "estimate_batch_size", "iterate_batches", "pack_lengths",
    "plan_resampled_epoch", "resolve_shards",
]
