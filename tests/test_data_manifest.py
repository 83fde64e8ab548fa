"""Manifest scanning: mixed formats, bad inputs, leakage guard, duplicates, resume, CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from toolkit.cli import main as cli_main
from toolkit.data.manifest import COLUMNS, build_manifest, load_exclude_hashes, read_manifest
from toolkit.data.synthetic import tone_noise
from toolkit.errors import DataError


def _bad_and_mixed(folder):
    """A folder of every kind of input the scanner must sort; returns expected status per file name."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "wav16k.wav", tone_noise(16_000, 16_000, rng), 16_000, subtype="PCM_16")
    sf.write(folder / "flac441_stereo.flac", tone_noise(44_100, 44_100, rng, channels=2), 44_100, subtype="PCM_16")
    sf.write(folder / "ogg8k.ogg", tone_noise(12_000, 8_000, rng), 8_000, format="OGG", subtype="VORBIS")
    sf.write(folder / "mp3.mp3", tone_noise(32_000, 16_000, rng), 16_000, format="MP3")
    (folder / "zero.wav").write_bytes(b"")
    (folder / "corrupt.flac").write_bytes(b"fLaC" + bytes(rng.integers(0, 256, 500, dtype=np.uint8)))
    sf.write(folder / "silent.wav", np.zeros(16_000, np.float32), 16_000, subtype="PCM_16")
    sf.write(folder / "short.wav", tone_noise(400, 16_000, rng), 16_000, subtype="PCM_16")
    nan = tone_noise(16_000, 16_000, rng)
    nan[100] = np.nan
    sf.write(folder / "nan.wav", nan, 16_000, subtype="FLOAT")
    (folder / "notes.txt").write_text("not audio, ignored by extension")
    return {
        "wav16k.wav": "ok", "flac441_stereo.flac": "ok", "ogg8k.ogg": "ok", "mp3.mp3": "ok",
        "zero.wav": "unreadable", "corrupt.flac": "unreadable", "silent.wav": "silent",
        "short.wav": "too_short", "nan.wav": "nonfinite",
    }


def test_manifest_sorts_mixed_and_bad_inputs(tmp_path, caplog):
    expected = _bad_and_mixed(tmp_path / "in")
    caplog.set_level("WARNING")
    report = build_manifest([tmp_path / "in"], tmp_path / "m.tsv", domain="test", workers=2)
    rows = {os.path.basename(r.path): r for r in read_manifest(tmp_path / "m.tsv")}
    assert {name: row.status for name, row in rows.items()} == expected
    assert report.total == 9 and report.ok == 4
    assert report.counts == {"ok": 4, "unreadable": 2, "silent": 1, "too_short": 1, "nonfinite": 1}
    # every problem file is named in the report and in the log
    for name, status in expected.items():
        if status != "ok":
            assert any(p.endswith(name) for p in report.files[status])
            assert name in caplog.text
    stereo = rows["flac441_stereo.flac"]
    assert (stereo.sample_rate, stereo.channels, stereo.frames, stereo.duration) == (44_100, 2, 44_100, 1.0)
    assert (rows["ogg8k.ogg"].sample_rate, rows["ogg8k.ogg"].duration) == (8_000, 1.5)
    assert rows["zero.wav"].note == "zero-length file (0 bytes)"
    assert all(r.domain == "test" for r in rows.values())
    assert len({r.sha256 for r in rows.values() if r.status == "ok"}) == 4
    with open(tmp_path / "m.tsv") as handle:
        assert handle.readline().rstrip("\n").split("\t") == list(COLUMNS)


def test_leakage_guard_matches_content_across_formats(tmp_path, caplog):
    rng = np.random.default_rng(2)
    train, evalset = tmp_path / "train", tmp_path / "eval"
    train.mkdir()
    evalset.mkdir()
    # 16-bit integers, as a lossless converter (sox, ffmpeg) would keep them
    clips = [(tone_noise(16_000 + 800 * i, 16_000, rng) * 32767).astype(np.int16) for i in range(4)]
    for i, clip in enumerate(clips):
        sf.write(train / f"t{i}.wav", clip, 16_000, subtype="PCM_16")
    # the evaluation set holds clips 1 and 3 re-encoded losslessly as FLAC, under other names
    sf.write(evalset / "eval_a.flac", clips[1], 16_000, subtype="PCM_16")
    sf.write(evalset / "eval_b.flac", clips[3], 16_000, subtype="PCM_16")
    caplog.set_level("WARNING")
    report = build_manifest([train], tmp_path / "m.tsv", exclude_hashes=[evalset], workers=1)
    assert report.counts == {"ok": 2, "excluded": 2}
    assert sorted(os.path.basename(p) for p in report.files["excluded"]) == ["t1.wav", "t3.wav"]
    assert "t1.wav" in caplog.text and "t3.wav" in caplog.text
    # an evaluation manifest and a plain hash list work as well, and give the same hashes
    build_manifest([evalset], tmp_path / "eval.tsv")
    from_manifest = load_exclude_hashes([tmp_path / "eval.tsv"])
    (tmp_path / "hashes.txt").write_text("# eval hashes\n" + "\n".join(sorted(from_manifest)) + "\n")
    assert load_exclude_hashes([tmp_path / "hashes.txt"]) == from_manifest == load_exclude_hashes([evalset])
    report2 = build_manifest([train], tmp_path / "m2.tsv", exclude_hashes=from_manifest)
    assert report2.files["excluded"] == report.files["excluded"]


def test_duplicates_are_marked_once(tmp_path):
    rng = np.random.default_rng(3)
    clip = (tone_noise(20_000, 16_000, rng) * 32767).astype(np.int16)
    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "one.wav", clip, 16_000, subtype="PCM_16")
    sf.write(tmp_path / "a" / "two.flac", clip, 16_000, subtype="PCM_16")
    report = build_manifest([tmp_path / "a"], tmp_path / "m.tsv")
    rows = {os.path.basename(r.path): r for r in read_manifest(tmp_path / "m.tsv")}
    assert (rows["one.wav"].status, rows["two.flac"].status) == ("ok", "duplicate")
    assert "one.wav" in rows["two.flac"].note and report.counts["duplicate"] == 1


def test_resume_reuses_finished_rows_and_rescans_changed_files(tmp_path):
    rng = np.random.default_rng(4)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        sf.write(folder / f"u{i}.wav", tone_noise(8_000 + 100 * i, 16_000, rng), 16_000, subtype="PCM_16")
    output = tmp_path / "m.tsv"
    build_manifest([folder], output)
    full = read_manifest(output)

    # Simulate a crash: only OUTPUT.partial with three rows and a half-written fourth line.
    lines = output.read_text().splitlines(keepends=True)
    partial = tmp_path / "m.tsv.partial"
    partial.write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])
    output.unlink()
    report = build_manifest([folder], output, resume=True)
    assert report.resumed == 3 and report.total == 6 and not partial.exists()
    assert [(r.path, r.sha256, r.status) for r in read_manifest(output)] == [(r.path, r.sha256, r.status) for r in full]

    # A changed file and a new file are scanned again, the rest reused.
    sf.write(folder / "u0.wav", np.zeros(8_000, np.float32), 16_000, subtype="PCM_16")
    os.utime(folder / "u0.wav", (1, 1))
    sf.write(folder / "u9.wav", tone_noise(9_000, 16_000, rng), 16_000, subtype="PCM_16")
    report = build_manifest([folder], output, resume=True)
    assert report.resumed == 5 and report.total == 7
    assert report.files["silent"] == [str((folder / "u0.wav").resolve())]


def test_manifest_errors_name_the_input(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        build_manifest([tmp_path / "missing"], tmp_path / "m.tsv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files found"):
        build_manifest([tmp_path / "empty"], tmp_path / "m.tsv")
    (tmp_path / "bad.tsv").write_text("path\tfoo\n")
    with pytest.raises(DataError, match="not a toolkit manifest"):
        read_manifest(tmp_path / "bad.tsv")


def test_cli_manifest(tmp_path, capsys):
    _bad_and_mixed(tmp_path / "in")
    code = cli_main(["manifest", str(tmp_path / "in"), "--output", str(tmp_path / "m.tsv"), "--workers", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "4/9 files usable" in out and "2 unreadable" in out
    assert len(read_manifest(tmp_path / "m.tsv", status="ok")) == 4
    # domain defaults to the input folder's name
    assert {r.domain for r in read_manifest(tmp_path / "m.tsv")} == {"in"}
    assert cli_main(["manifest", str(tmp_path / "nope"), "--output", str(tmp_path / "x.tsv")]) == 2


def test_probe_streams_in_blocks_with_the_same_result(tmp_path, monkeypatch):
    import toolkit.data.manifest as manifest

    rng = np.random.default_rng(6)
    clip = tone_noise(50_000, 16_000, rng, channels=2)
    clip[30_000, 1] = np.inf
    sf.write(tmp_path / "a.wav", clip, 16_000, subtype="FLOAT")
    whole = manifest.probe_file(str(tmp_path / "a.wav"))
    monkeypatch.setattr(manifest, "BLOCK_FRAMES", 999)
    blocks = manifest.probe_file(str(tmp_path / "a.wav"))
    assert (whole.sha256, whole.status, whole.note, whole.frames) == (blocks.sha256, blocks.status, blocks.note, 50_000)
    assert whole.status == "nonfinite" and whole.note == "1 NaN/Inf samples"
    assert whole.sha256 == manifest.audio_hash(sf.read(tmp_path / "a.wav", dtype="float32")[0])
