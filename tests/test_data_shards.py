"""Shard writer: bit-exact round trips, cutting by count and bytes, chunking, atomicity, index, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile

import numpy as np
import pytest
import soundfile as sf

from toolkit.audio import load_audio
from toolkit.cli import main as cli_main
from toolkit.data.datamodule import iterate_batches
from toolkit.data.manifest import build_manifest, read_manifest
from toolkit.data.shards import (
    chunk_bounds,
    decode_audio,
    decode_crop,
    encode_audio,
    read_shard_index,
    to_int16,
    write_shards,
)
from toolkit.data.synthetic import tone_noise, write_pcm16_corpus
from toolkit.errors import DataError


def test_chunk_bounds_cover_exactly_with_near_equal_chunks():
    assert chunk_bounds(10, None) == [(0, 10)]
    assert chunk_bounds(10, 10) == [(0, 10)]
    bounds = chunk_bounds(1001, 300)
    assert len(bounds) == 4 and bounds[0][0] == 0 and bounds[-1][1] == 1001
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert max(b - a for a, b in bounds) <= 300 and min(b - a for a, b in bounds) >= 250


@pytest.mark.parametrize("storage,ext", [("flac", "flac"), ("int16", "s16"), ("float32", "f32")])
def test_encode_decode_is_exact_and_crops(storage, ext):
    rng = np.random.default_rng(0)
    x = tone_noise(5_000, 16_000, rng)
    expected = to_int16(x).astype(np.float32) / 32768 if storage != "float32" else x
    data = encode_audio(x, storage)
    np.testing.assert_array_equal(decode_audio(data, ext), expected)
    np.testing.assert_array_equal(decode_audio(data, ext, 1234, 777), expected[1234:2011])
    frames, crop = decode_crop(data, ext, 1000, lambda n, take: n - take)
    assert frames == 5_000
    np.testing.assert_array_equal(crop, expected[-1000:])
    # to_int16 inverts /32768 exactly and saturates
    ints = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    np.testing.assert_array_equal(to_int16(ints.astype(np.float32) / 32768), ints)
    np.testing.assert_array_equal(to_int16(np.array([-2.0, 2.0])), [-32768, 32767])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    write_pcm16_corpus(root / "a", 24, seed=1, min_seconds=0.3, max_seconds=4.0)
    write_pcm16_corpus(root / "b", 12, seed=2, min_seconds=0.3, max_seconds=4.0, extension="flac")
    build_manifest([root / "a", root / "b"], root / "m.tsv", workers=1)
    return root


@pytest.mark.parametrize("storage", ["flac", "int16"])
def test_manifest_to_shards_to_loader_round_trip_is_bit_exact(corpus, tmp_path, storage):
    index = write_shards(corpus / "m.tsv", tmp_path / "s", max_count=5, storage=storage, workers=2,
                         max_seconds_per_chunk=None)
    rows = read_manifest(corpus / "m.tsv", status="ok")
    assert index.utterances == len(rows) == 36 and len(index.shards) == 8
    by_hash = {row.sha256[:16]: row for row in rows}
    seen = set()
    loader = iterate_batches(str(tmp_path / "s"), max_sample_size=10**7,
                             max_tokens=10**7, shuffle_buffer=8)
    for batch in loader:
        assert batch["audio"].dtype.is_floating_point and batch["lengths"].dtype.is_signed
        for row, key in enumerate(batch["keys"]):
            source = by_hash[key.split("-")[0]]
            original = load_audio(source.path).samples.numpy()
            length = int(batch["lengths"][row])
            np.testing.assert_array_equal(batch["audio"][row, :length].numpy(), original)
            assert not batch["audio"][row, length:].any()  # right padding is zeros
            seen.add(key)
    assert len(seen) == 36
    # index facts agree with the tars
    for shard in index.shards:
        path = tmp_path / "s" / shard.name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shard.sha256
        assert os.path.getsize(path) == shard.bytes
        with tarfile.open(path) as tar:
            names = tar.getnames()
        assert len(names) == 2 * shard.utterances
        assert shard.seconds == pytest.approx(sum(shard.lengths) / 16_000, abs=1e-3)
    assert sorted(os.listdir(tmp_path / "s")) == ["index.json"] + [s.name for s in index.shards]


def test_resampling_downmix_chunking_and_metadata(tmp_path):
    rng = np.random.default_rng(5)
    (tmp_path / "in").mkdir()
    stereo = tone_noise(44_100 * 7, 44_100, rng, channels=2)
    sf.write(tmp_path / "in" / "long_stereo.flac", stereo, 44_100, subtype="PCM_16")
    sf.write(tmp_path / "in" / "tel.wav", tone_noise(8_000 * 2, 8_000, rng), 8_000, subtype="PCM_16")
    build_manifest([tmp_path / "in"], tmp_path / "m.tsv", domain="mixed")
    index = write_shards(tmp_path / "m.tsv", tmp_path / "s", storage="float32", max_seconds_per_chunk=3.0)
    assert sorted(n for s in index.shards for n in s.lengths) == [32_000, 37_333, 37_333, 37_334]
    assert index.shards[0].domains == {"mixed": 4}
    expected = load_audio(tmp_path / "in" / "long_stereo.flac").samples.numpy()
    chunks = {}
    with tarfile.open(tmp_path / "s" / index.shards[0].name) as tar:
        for member in tar.getmembers():
            if member.name.endswith(".json"):
                meta = json.loads(tar.extractfile(member).read())
                audio = decode_audio(tar.extractfile(member.name[:-4] + "f32").read(), "f32")
                assert meta["frames"] == audio.shape[0] and meta["sample_rate"] == 16_000
                if meta["source"].endswith("long_stereo.flac"):
                    chunks[meta["chunk"]] = (meta["start"], audio)
    assert sorted(chunks) == [0, 1, 2]
    joined = np.concatenate([chunks[i][1] for i in range(3)])
    np.testing.assert_array_equal(joined, expected)  # float32 storage keeps resampled audio exactly
    assert [chunks[i][0] for i in range(3)] == [0, 37_333, 74_667]


def test_cut_by_bytes_and_refuse_overwrite(corpus, tmp_path):
    index = write_shards(corpus / "m.tsv", tmp_path / "s", max_count=1000, max_bytes=200_000, storage="int16")
    assert len(index.shards) > 3
    for shard in index.shards:
        assert shard.bytes <= 200_000 or shard.utterances == 1
    assert read_shard_index(tmp_path / "s").to_dict() == index.to_dict()
    with pytest.raises(DataError, match="--overwrite"):
        write_shards(corpus / "m.tsv", tmp_path / "s")
    again = write_shards(corpus / "m.tsv", tmp_path / "s", overwrite=True, max_count=100)
    assert len(again.shards) == 1 and sorted(os.listdir(tmp_path / "s")) == ["index.json", "shard-000000.tar"]


def test_failed_write_leaves_only_complete_shards(corpus, tmp_path):
    """A source that vanished is skipped and listed; an interrupted write leaves no partial tar."""
    rows = read_manifest(corpus / "m.tsv")
    manifest = tmp_path / "m.tsv"
    text = (corpus / "m.tsv").read_text().replace(rows[3].path, str(tmp_path / "gone.wav"))
    manifest.write_text(text)
    index = write_shards(manifest, tmp_path / "s", max_count=4)
    assert [s["path"] for s in index.skipped] == [str(tmp_path / "gone.wav")]
    assert index.utterances == 35

    class Boom(Exception):
        pass

    import toolkit.data.shards as shards_module

    original = shards_module._ShardSink.write
    calls = {"n": 0}

    def failing_write(self, sample):
        calls["n"] += 1
        if calls["n"] == 10:
            raise Boom()
        return original(self, sample)

    shards_module._ShardSink.write = failing_write
    try:
        with pytest.raises(Boom):
            write_shards(corpus / "m.tsv", tmp_path / "t", max_count=4)
    finally:
        shards_module._ShardSink.write = original
    # two complete shards of 4, no temporary file, no index (the folder is not a usable dataset)
    assert sorted(os.listdir(tmp_path / "t")) == ["shard-000000.tar", "shard-000001.tar"]


def test_cli_shard(corpus, tmp_path, capsys):
    code = cli_main(["shard", str(corpus / "m.tsv"), "--output", str(tmp_path / "s"), "--storage", "int16",
                     "--max-count", "10", "--workers", "1"])
    assert code == 0
    assert "4 shards, 36 utterances" in capsys.readouterr().out
    assert read_shard_index(tmp_path / "s").storage == "int16"
    assert cli_main(["shard", str(tmp_path / "missing.tsv"), "--output", str(tmp_path / "x")]) == 2
