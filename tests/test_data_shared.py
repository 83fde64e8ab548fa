"""The real corpora in ../shared/data/speech (four domains; FLAC, WAV and Ogg; 8-44.1 kHz; stereo)
go through manifest -> shards -> Lightning datamodule end to end.

To stay fast on two cores it takes every English, French and singing file and every 12th Mandarin
syllable (about 200 of 2,358)."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import soundfile as sf

from toolkit.audio import load_audio
from toolkit.data.datamodule import AudioShardDataModule
from toolkit.data.manifest import build_manifest, find_audio, read_manifest
from toolkit.data.shards import read_shard_index, write_shards


def test_shared_speech_shards_and_streams_end_to_end(shared_data, tmp_path):
    speech = shared_data / "speech"
    zh = find_audio([speech / "zh"])[::12]
    report = build_manifest([speech / "en", speech / "fr", speech / "singing"], tmp_path / "main.tsv", workers=2)
    report_zh = build_manifest(zh, tmp_path / "zh.tsv", domain="zh", workers=2)
    assert report.ok >= 200 and report_zh.ok == len(zh)
    rows = read_manifest(tmp_path / "main.tsv", status="ok") + read_manifest(tmp_path / "zh.tsv", status="ok")
    assert {r.domain for r in rows} == {"en", "fr", "singing", "zh"}
    assert {os.path.splitext(r.path)[1] for r in rows} >= {".wav", ".flac", ".ogg"}
    assert {r.sample_rate for r in rows} >= {8_000, 16_000, 44_100} and {r.channels for r in rows} == {1, 2}

    index = write_shards([tmp_path / "main.tsv", tmp_path / "zh.tsv"], tmp_path / "shards", max_count=150,
                         max_seconds_per_chunk=20.0, workers=2)
    assert index.skipped == [] and len(index.shards) >= 3
    domains = Counter()
    for shard in index.shards:
        domains.update(shard.domains)
    assert set(domains) == {"en", "fr", "singing", "zh"}
    # the 2.2-minute song is cut into chunks of at most 20 s; all chunks are counted
    assert max(n for s in index.shards for n in s.lengths) <= 20 * 16_000
    source_seconds = sum(r.duration for r in rows)
    assert abs(index.seconds - source_seconds) < 0.01 * source_seconds  # resampling keeps durations

    data = AudioShardDataModule(str(tmp_path / "shards"), val_shards=str(tmp_path / "shards"),
                                max_sample_size=80_000, max_tokens=400_000, num_workers=2, shuffle_buffer=64)
    keys, audio_seconds = Counter(), 0.0
    for batch in data.train_dataloader():
        assert batch["audio"].shape[0] * batch["audio"].shape[1] <= 400_000
        assert int(batch["lengths"].max()) <= 80_000 and not batch["dummy"]
        assert np.isfinite(batch["audio"].numpy()).all()
        keys.update(batch["keys"])
        audio_seconds += int(batch["lengths"].sum()) / 16_000
    assert len(keys) == index.utterances and max(keys.values()) == 1
    assert audio_seconds > 0.5 * index.seconds

    # validation: deterministic crops from the start; a 16 kHz 16-bit FLAC source comes back bit-exact
    reference = next(r for r in rows if r.path.endswith(".flac") and r.sample_rate == 16_000
                     and sf.info(r.path).subtype == "PCM_16" and r.frames <= 80_000)
    expected = load_audio(reference.path).samples.numpy()
    found = False
    for batch in data.val_dataloader():
        for row, key in enumerate(batch["keys"]):
            if key.startswith(reference.sha256[:16]):
                np.testing.assert_array_equal(batch["audio"][row, : int(batch["lengths"][row])].numpy(), expected)
                found = True
    assert found
    assert read_shard_index(tmp_path / "shards").utterances == index.utterances
