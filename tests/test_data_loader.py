"""Streaming loader: coverage across ranks x workers, batching limits, epochs, resampling, corrupt shards,
a real 2-process run (gloo) and Lightning (1 process and DDP with 2 processes)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from toolkit.data.datamodule import (
    AudioShardDataModule,
    assign_shards,
    estimate_batch_size,
    iterate_batches,
    pack_lengths,
)
from toolkit.data.manifest import build_manifest
from toolkit.data.shards import encode_audio, read_shard_index, write_shards
from toolkit.data.synthetic import write_pcm16_corpus
from toolkit.errors import DataError

MAX_TOKENS = 120_000
MAX_SAMPLE = 40_000


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """60 utterances (0.2-5 s) in 7 FLAC shards of at most 9 (7 is not a multiple of 2 ranks x 2 workers)."""
    root = tmp_path_factory.mktemp("loader")
    write_pcm16_corpus(root / "audio", 60, seed=3, min_seconds=0.2, max_seconds=5.0)
    build_manifest([root / "audio"], root / "m.tsv", min_duration=0.0)
    write_shards(root / "m.tsv", root / "shards", max_count=9, storage="flac")
    return root / "shards"


def _all_keys(directory: Path) -> list[str]:
    import tarfile

    keys = []
    for shard in read_shard_index(directory).shards:
        with tarfile.open(directory / shard.name) as tar:
            keys += [n.split(".")[0] for n in tar.getnames() if n.endswith(".flac")]
    return keys


def _collect(loader) -> tuple[list[str], list[dict]]:
    keys, batches = [], []
    for batch in loader:
        batches.append(batch)
        if not batch["dummy"]:
            keys += batch["keys"]
    return keys, batches


# --------------------------------------------------------------------------------------------- pure parts


def test_pack_lengths_respects_max_tokens_and_keeps_everything():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(1, 1000, 500)]
    batches = pack_lengths(lengths, 3000)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(len(b) * max(lengths[i] for i in b) <= 3000 for b in batches)
    # sorting packs tightly: padding overhead stays small
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.1 * sum(lengths)


def test_assign_shards_is_a_disjoint_cover_for_every_layout():
    urls = [f"s{i}" for i in range(11)]
    for world in (1, 2, 3, 4):
        for workers in (1, 2, 3):
            for epoch in (0, 1):
                parts = [assign_shards(urls, rank=r, world_size=world, worker=w, num_workers=workers,
                                       seed=7, epoch=epoch, shuffle=True)
                         for r in range(world) for w in range(workers)]
                flat = [u for p in parts for u in p]
                assert sorted(flat) == sorted(urls) and len(flat) == len(set(flat))
    first = assign_shards(urls, rank=0, world_size=1, worker=0, num_workers=1, seed=7, epoch=0, shuffle=True)
    second = assign_shards(urls, rank=0, world_size=1, worker=0, num_workers=1, seed=7, epoch=1, shuffle=True)
    assert first != second and sorted(first) == sorted(second)


def test_estimate_batch_size():
    # every utterance cropped to 100 -> 10 per batch of 1000 tokens
    assert estimate_batch_size([500] * 100, max_sample_size=100, min_sample_size=0, max_tokens=1000) == 10
    assert estimate_batch_size([5] * 10 + [50] * 10, max_sample_size=100, min_sample_size=20,
                               max_tokens=1000) == 10


# --------------------------------------------------------------------------------------------- coverage


@pytest.mark.parametrize("num_workers", [0, 2])
def test_two_ranks_two_workers_see_every_sample_exactly_once(shards, num_workers):
    expected = _all_keys(shards)
    assert len(expected) == 60 and len(read_shard_index(shards).shards) == 7
    epochs = []
    for epoch in (0, 1):
        keys = []
        for rank in (0, 1):
            loader = iterate_batches(str(shards), rank=rank, world_size=2, num_workers=num_workers,
                                     max_sample_size=MAX_SAMPLE, max_tokens=MAX_TOKENS, shuffle_buffer=16,
                                     epoch=epoch)
            rank_keys, batches = _collect(loader)
            assert rank_keys, f"rank {rank} got nothing"
            for batch in batches:
                b, t = batch["audio"].shape
                assert b * t <= MAX_TOKENS and int(batch["lengths"].max()) == t <= MAX_SAMPLE
                assert batch["audio"].dtype == torch.float32 and batch["lengths"].dtype == torch.int64
                assert len(batch["keys"]) == b
            keys += rank_keys
        assert Counter(keys) == Counter(expected)  # each exactly once, nothing missing
        epochs.append(keys)
    assert epochs[0] != epochs[1]  # a new epoch reshuffles


def test_same_seed_same_stream_and_crops_are_random_but_reproducible(shards):
    def run(seed):
        loader = iterate_batches(str(shards), max_sample_size=8_000, max_tokens=MAX_TOKENS, seed=seed)
        return [(tuple(b["keys"]), b["audio"].sum().item()) for b in loader]

    a, b, c = run(0), run(0), run(1)
    assert a == b and a != c
    # crops of the same utterance differ between seeds (random position), lengths capped
    loader = iterate_batches(str(shards), max_sample_size=8_000, max_tokens=MAX_TOKENS, random_crop=False)
    assert all(int(batch["lengths"].max()) <= 8_000 for batch in loader)


def test_min_sample_size_drops_and_counts(shards):
    loader = iterate_batches(str(shards), min_sample_size=32_000, max_sample_size=MAX_SAMPLE, max_tokens=MAX_TOKENS)
    keys, batches = _collect(loader)
    lengths = [n for s in read_shard_index(shards).shards for n in s.lengths]
    assert len(keys) == sum(n >= 32_000 for n in lengths)
    assert loader.dataset.stats.too_short == sum(n < 32_000 for n in lengths) > 0
    assert all(int(b["lengths"].min()) == min(int(b["lengths"].min()), MAX_SAMPLE) for b in batches)


def test_resampled_mode_has_an_explicit_equal_epoch_on_every_rank(shards):
    counts = []
    for rank in (0, 1):
        loader = iterate_batches(str(shards), rank=rank, world_size=2, num_workers=2, resampled=True,
                                 samples_per_epoch=200, max_sample_size=MAX_SAMPLE, max_tokens=MAX_TOKENS)
        keys, batches = _collect(loader)
        counts.append(len(batches))
        assert max(Counter(keys).values()) > 1  # drawn with replacement
    assert counts[0] == counts[1] > 0
    # about 200 utterances in all: batches per rank from the index's length distribution
    per_batch = estimate_batch_size([n for s in read_shard_index(shards).shards for n in s.lengths],
                                    max_sample_size=MAX_SAMPLE, min_sample_size=0, max_tokens=MAX_TOKENS)
    assert abs(sum(counts) * per_batch - 200) < 4 * per_batch
    with pytest.raises(ValueError, match="resampled"):
        iterate_batches(str(shards), samples_per_epoch=10)


def test_brace_pattern_list_and_bare_folder_inputs(shards, tmp_path):
    pattern = str(shards / "shard-{000000..000002}.tar")
    keys, _ = _collect(iterate_batches(pattern, max_sample_size=MAX_SAMPLE, max_tokens=MAX_TOKENS))
    assert len(keys) == sum(s.utterances for s in read_shard_index(shards).shards[:3])
    with pytest.raises(DataError, match="no shards found"):
        iterate_batches(str(shards / "nothing-{0..3}.tar"))
    listed = [str(shards / "shard-000004.tar"), str(shards / "shard-000006.tar")]
    keys, _ = _collect(iterate_batches(listed, max_sample_size=MAX_SAMPLE, max_tokens=MAX_TOKENS))
    assert sorted(keys) == sorted(_keys_of(Path(listed[0])) + _keys_of(Path(listed[1])))
    # a folder of tars without index.json works too (no epoch planning from the index then)
    bare = tmp_path / "bare"
    bare.mkdir()
    for url in listed:
        shutil.copy(url, bare)
    keys2, _ = _collect(iterate_batches(str(bare), max_sample_size=MAX_SAMPLE, max_tokens=MAX_TOKENS))
    assert sorted(keys2) == sorted(keys)
    with pytest.raises(DataError, match="samples_per_epoch"):
        iterate_batches(str(bare), resampled=True)


# --------------------------------------------------------------------------------------------- corrupt data


@pytest.fixture()
def damaged(shards, tmp_path) -> Path:
    """A copy of the shards where shard 2 is truncated mid-member and shard 5 is not a tar at all."""
    copy = tmp_path / "damaged"
    shutil.copytree(shards, copy)
    data = (copy / "shard-000002.tar").read_bytes()
    (copy / "shard-000002.tar").write_bytes(data[: len(data) // 2 + 100])
    (copy / "shard-000005.tar").write_bytes(b"this is not a tar file" * 100)
    return copy


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_and_truncated_shards_are_named_and_skipped(shards, damaged, caplog, num_workers):
    caplog.set_level(logging.WARNING)
    index = read_shard_index(damaged)
    loader = iterate_batches(str(damaged), num_workers=num_workers, max_sample_size=MAX_SAMPLE,
                             max_tokens=MAX_TOKENS)
    keys, _ = _collect(loader)
    intact = [k for s in index.shards if s.name not in ("shard-000002.tar", "shard-000005.tar")
              for k in _keys_of(shards / s.name)]
    truncated = _keys_of(shards / "shard-000002.tar")
    assert set(intact) <= set(keys) and len(keys) == len(set(keys))
    assert set(keys) - set(intact) < set(truncated)  # only a complete prefix of the truncated shard survives
    if num_workers == 0:
        assert sorted(os.path.basename(u) for u in loader.dataset.stats.corrupt_shards) == [
            "shard-000002.tar", "shard-000005.tar"]
        assert "shard-000002.tar" in caplog.text and "shard-000005.tar" in caplog.text


def _keys_of(path: Path) -> list[str]:
    import tarfile

    with tarfile.open(path) as tar:
        return [n.split(".")[0] for n in tar.getnames() if n.endswith(".flac")]


def test_on_corrupt_error_raises_naming_the_shard(damaged):
    loader = iterate_batches(str(damaged), on_corrupt="error", max_sample_size=MAX_SAMPLE,
                             max_tokens=MAX_TOKENS, shuffle=False)
    with pytest.raises(DataError, match=r"shard-00000[25]\.tar"):
        _collect(loader)


def test_resampled_stream_over_unusable_shards_raises_instead_of_hanging(shards, damaged):
    broken = [str(damaged / "shard-000002.tar"), str(damaged / "shard-000005.tar")]
    with pytest.raises(DataError, match="all 2 shards are corrupt"):
        _collect(iterate_batches(broken, resampled=True, samples_per_epoch=10**6, max_sample_size=MAX_SAMPLE,
                                 max_tokens=MAX_TOKENS))
    with pytest.raises(DataError, match="shorter than min_sample_size"):
        _collect(iterate_batches(str(shards), resampled=True, min_sample_size=10**6, max_sample_size=10**6,
                                 max_tokens=10**7))


def test_undecodable_sample_inside_a_valid_tar_is_skipped(tmp_path):
    import webdataset as wds

    good = encode_audio(np.linspace(-0.5, 0.5, 4_000, dtype=np.float32), "flac")
    with wds.TarWriter(str(tmp_path / "shard-000000.tar"), encoder=False) as writer:
        writer.write({"__key__": "good", "flac": good})
        writer.write({"__key__": "bad", "flac": good[:60] + b"\x00" * 400})
        writer.write({"__key__": "noaudio", "json": b"{}"})
    loader = iterate_batches([str(tmp_path / "shard-000000.tar")], max_tokens=MAX_TOKENS, max_sample_size=MAX_SAMPLE)
    keys, _ = _collect(loader)
    assert keys == ["good"] and loader.dataset.stats.corrupt_samples == 2
    with pytest.raises(DataError, match="bad"):
        _collect(iterate_batches([str(tmp_path / "shard-000000.tar")], on_corrupt="error", shuffle=False,
                                 max_tokens=MAX_TOKENS, max_sample_size=MAX_SAMPLE))


# --------------------------------------------------------------------------------------------- 2 processes


def _rank_main(rank: int, world: int, init: str, shard_dir: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        result = {}
        for mode in ("exact", "resampled"):
            loader = iterate_batches(shard_dir, num_workers=2, multiprocessing_context="fork",
                                     max_sample_size=MAX_SAMPLE, max_tokens=MAX_TOKENS,
                                     resampled=mode == "resampled", samples_per_epoch=150 if mode == "resampled" else None)
            result[mode] = [{"keys": b["keys"], "dummy": b["dummy"]} for b in loader]
        with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
            json.dump(result, handle)
    finally:
        torch.distributed.destroy_process_group()


def test_two_real_processes_cover_once_and_stay_in_step(shards, tmp_path):
    import torch.multiprocessing as mp

    # 3 shards: one rank reads 2, the other 1 -> it runs out first and must pad with dummies
    uneven = tmp_path / "uneven"
    uneven.mkdir()
    index = read_shard_index(shards)
    for shard in index.shards[:3]:
        shutil.copy(shards / shard.name, uneven / shard.name)
    index.shards = index.shards[:3]
    json.dump({**index.to_dict(), "shards": [s.__dict__ for s in index.shards]}, open(uneven / "index.json", "w"))
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_rank_main, args=(2, init, str(uneven), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    # non-resampled: same number of steps on both ranks, real samples exactly once
    assert len(ranks[0]["exact"]) == len(ranks[1]["exact"])
    real = [k for r in ranks for b in r["exact"] if not b["dummy"] for k in b["keys"]]
    assert Counter(real) == Counter(k for s in index.shards for k in _keys_of(shards / s.name))
    assert any(b["dummy"] for r in ranks for b in r["exact"])  # the uneven split was padded
    per_rank = [{k for b in r["exact"] if not b["dummy"] for k in b["keys"]} for r in ranks]
    assert not per_rank[0] & per_rank[1]
    # resampled: a fixed, equal number of batches per rank, no dummies
    assert len(ranks[0]["resampled"]) == len(ranks[1]["resampled"]) > 0
    assert not any(b["dummy"] for r in ranks for b in r["resampled"])


# --------------------------------------------------------------------------------------------- Lightning


def test_datamodule_arguments_are_typed_for_lightning_cli():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(AudioShardDataModule, "data")
    cfg = parser.parse_args(["--data.train_shards=/x", "--data.resampled=true", "--data.samples_per_epoch=10",
                             "--data.on_corrupt=error"])
    assert cfg.data.max_tokens == 1_500_000 and cfg.data.resampled is True and cfg.data.on_corrupt == "error"
    with pytest.raises(SystemExit):
        parser.parse_args(["--data.train_shards=/x", "--data.on_corrupt=maybe"])


class Recorder(pl.LightningModule):
    """Records the keys it trains on per epoch and rank, and every step (real or dummy)."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.out_dir = out_dir

    def _append(self, name: str, text: str) -> None:
        with open(os.path.join(self.out_dir, f"{name}{self.current_epoch}_r{self.global_rank}.txt"), "a") as handle:
            handle.write(text)

    def training_step(self, batch, batch_idx):
        loss = (self.weight * batch["audio"].abs().mean()).sum()
        self._append("b", "dummy\n" if batch["dummy"] else "real\n")
        if batch["dummy"]:
            return loss * 0.0  # a dummy batch keeps DDP in step but must not train
        self._append("e", "\n".join(batch["keys"]) + "\n")
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(out_dir: str, shard_dir: str, devices: int) -> None:
    # ddp_spawn starts DataLoader workers with spawn too (slow to import): read in the main process there
    data = AudioShardDataModule(shard_dir, max_sample_size=MAX_SAMPLE, max_tokens=MAX_TOKENS,
                                num_workers=1 if devices == 1 else 0,
                                shuffle_buffer=16)
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                         max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=out_dir)
    trainer.fit(Recorder(out_dir), datamodule=data)


@pytest.mark.parametrize("devices", [1, 2])
def test_lightning_fit_sees_every_sample_once_per_epoch(shards, tmp_path, devices):
    _fit(str(tmp_path), str(shards), devices)
    expected = Counter(_all_keys(shards))
    for epoch in (0, 1):
        keys = []
        for rank in range(devices):
            keys += (tmp_path / f"e{epoch}_r{rank}.txt").read_text().split()
        assert Counter(keys) == expected, f"epoch {epoch}"
        steps = [(tmp_path / f"b{epoch}_r{rank}.txt").read_text().split() for rank in range(devices)]
        assert len({len(s) for s in steps}) == 1  # every rank made the same number of steps
