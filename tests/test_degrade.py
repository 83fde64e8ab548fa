"""The degradation suite: each degradation does what its parameter says, severity is monotonic,
results are fixed by the seed, and bad input is reported."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf

from toolkit.cli import main as cli_main
from toolkit.degrade import DEGRADATIONS, degrade_files, dsp, parse_types, read_manifest, severity_srcc
from toolkit.degrade.suite import apply_degradation, clip_rng, codec_settings
from toolkit.errors import AudioError, DataError, ToolkitError

SR = 16_000


def speechlike(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal with a little breath noise, peak 0.8: broadband like speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 40))  # harmonics up to ~6 kHz
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) ** 0.5
    x = envelope * voiced + 0.05 * rng.standard_normal(t.size)
    return (0.8 * x / np.abs(x).max()).astype(np.float32)


def write_clips(folder, count=3, seconds=1.0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        sf.write(folder / f"clip{i}.wav", speechlike(seconds, seed=i), SR)
    return folder


# --- pure degradations -------------------------------------------------------------------------


@pytest.mark.parametrize("target", [30.0, 15.0, 5.0, 0.0, -5.0])
def test_white_noise_reaches_target_snr(target):
    x = speechlike()
    y = dsp.white_noise(x, target, np.random.default_rng(1))
    assert abs(dsp.snr_db(x, y - x) - target) < 0.01


def test_babble_is_made_of_the_sources_at_target_snr():
    x = speechlike(seed=0)
    sources = [speechlike(seed=5), speechlike(seed=6)]
    y = dsp.add_babble(x, sources, 10.0, np.random.default_rng(0), talkers=1)
    noise = y - x
    assert abs(dsp.snr_db(x, noise) - 10.0) < 0.01
    # with one talker the noise is a scaled crop of a (tiled) source: it correlates strongly with one of them
    best = max(
        np.abs(np.correlate(np.tile(s, 3), noise, mode="valid")).max()
        / (np.linalg.norm(noise) * np.linalg.norm(s))
        for s in sources
    )
    assert best > 0.99


def test_clipping_fraction_matches_and_grows():
    x = speechlike()
    fractions = DEGRADATIONS["clip"].grid(5)
    achieved = []
    for f in fractions:
        y = dsp.hard_clip(x, f)
        achieved.append(np.mean(np.abs(y) >= np.abs(y).max() - 1e-7))
        assert abs(achieved[-1] - f) < 0.01
    assert np.all(np.diff(achieved) > 0)


def test_bandlimit_shrinks_bandwidth():
    x = speechlike() + 0.05 * np.random.default_rng(0).standard_normal(int(1.5 * SR)).astype(np.float32)
    cutoffs = DEGRADATIONS["bandlimit"].grid(5)
    rolloffs = [dsp.rolloff_hz(dsp.lowpass(x, c, SR), SR) for c in cutoffs]
    assert np.all(np.diff(rolloffs) < 0), rolloffs
    for c in cutoffs:
        y = dsp.lowpass(x, c, SR)
        spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size))) ** 2  # window: no edge leakage
        freqs = np.fft.rfftfreq(y.size, 1 / SR)
        above = spectrum[freqs > 1.5 * c].sum() / spectrum.sum()
        assert above < 1e-4, (c, above)


@pytest.mark.parametrize("codec", ["opus", "vorbis", "mp3"])
def test_codec_bitrate_falls_with_severity_and_stays_aligned(codec):
    x = speechlike(2.0)
    bitrates, correlations = [], []
    for value in DEGRADATIONS[codec].grid(5):
        name, level = codec_settings(codec, value)
        y, kbps = dsp.codec_roundtrip(x, SR, name, level)
        assert y.shape == x.shape and y.dtype == np.float32
        bitrates.append(kbps)
        correlations.append(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))
    assert np.all(np.diff(bitrates) < 0), bitrates
    assert correlations[0] > 0.95  # decoder delay removed: mildest level is time-aligned with the input
    assert not np.allclose(correlations[-1], 1.0, atol=1e-4)  # the severest level did change the audio


def test_codec_nominal_bitrates_are_reached():
    x = speechlike(6.0)  # long enough that container overhead is small
    for codec, kbps in [("opus", 48.0), ("opus", 6.0), ("mp3", 64.0), ("mp3", 8.0)]:
        _, achieved = dsp.codec_roundtrip(x, SR, *codec_settings(codec, kbps))
        assert abs(achieved - kbps) / kbps < 0.3, (codec, kbps, achieved)


def test_mulaw_error_grows_as_bits_fall():
    x = speechlike()
    bits = DEGRADATIONS["mulaw"].grid(5)
    assert bits == [8.0, 6.0, 5.0, 4.0, 2.0]
    snrs = [dsp.snr_db(x, dsp.mulaw(x, int(b)) - x) for b in bits]
    assert snrs[0] > 30  # 8-bit mu-law is telephone quality on a full-scale signal
    assert np.all(np.diff(snrs) < 0), snrs


def _rt60_from_ir(h: np.ndarray) -> float:
    tail = h[1:] ** 2
    edc = 10 * np.log10(np.cumsum(tail[::-1])[::-1] / tail.sum())
    t = np.arange(edc.size) / SR
    sel = (edc < -5) & (edc > -25)
    slope = np.polyfit(t[sel], edc[sel], 1)[0]  # dB per second
    return -60.0 / slope


def test_reverb_ir_has_target_rt60_and_drr_falls():
    rng = np.random.default_rng(0)
    rt60s = DEGRADATIONS["reverb"].grid(5)
    drr = []
    for rt60 in rt60s:
        h = dsp.reverb_ir(rt60, SR, rng)
        assert abs(_rt60_from_ir(h) - rt60) / rt60 < 0.15
        assert h[0] == 1.0
        drr.append(10 * np.log10(1.0 / np.sum(h[1:] ** 2)))
    assert np.all(np.diff(drr) < 0)
    x = speechlike()
    corr = [np.corrcoef(x, dsp.reverberate(x, r, SR, np.random.default_rng(0)))[0, 1] for r in rt60s]
    assert np.all(np.diff(corr) < 0), corr


def test_packet_loss_drops_the_requested_fraction_of_frames():
    x = speechlike(2.0) + 0.01  # no exact zeros before loss
    rates = DEGRADATIONS["packetloss"].grid(5)
    frame = SR // 50
    achieved = []
    for rate in rates:
        y, lost = dsp.packet_loss(x, rate, SR, np.random.default_rng(0))
        frames = y[: (y.size // frame) * frame].reshape(-1, frame)
        zeroed = np.all(frames == 0, axis=1)
        assert np.array_equal(zeroed, lost[: zeroed.size])
        assert abs(lost.mean() - rate) <= 0.5 / lost.size + 1e-9
        achieved.append(lost.mean())
    assert np.all(np.diff(achieved) > 0)


def test_every_degradation_keeps_length_level_and_is_seeded():
    x = speechlike()
    others = [speechlike(seed=7)]
    for name, spec in DEGRADATIONS.items():
        for severity, value in enumerate(spec.grid(3), start=1):
            a = apply_degradation(name, x, value, clip_rng(0, "c", name, severity), babble_sources=others)
            b = apply_degradation(name, x, value, clip_rng(0, "c", name, severity), babble_sources=others)
            assert a.shape == x.shape and np.isfinite(a).all()
            assert np.array_equal(a, b), name
            assert np.abs(a).max() <= 0.99 + 1e-6
            if np.abs(a).max() < 0.989:  # not peak-limited: level equals the clean clip's
                assert abs(dsp.rms(a) / dsp.rms(x) - 1) < 1e-3, name
    noisy = [apply_degradation("noise", x, 10.0, clip_rng(s, "c", "noise", 1)) for s in (0, 1)]
    assert not np.array_equal(*noisy)


def test_parse_types():
    assert parse_types("codec,noise") == ["noise", "opus", "vorbis", "mp3"]
    assert parse_types(None) == list(DEGRADATIONS)
    with pytest.raises(ToolkitError, match="unknown degradation 'hiss'"):
        parse_types("noise,hiss")


# --- files and manifest ------------------------------------------------------------------------


def test_degrade_files_writes_graded_set_and_manifest(tmp_path):
    clean = write_clips(tmp_path / "clean", count=3)
    result = degrade_files([clean], tmp_path / "out", levels=3, seed=0)
    per_clip = 1 + sum(len(d.grid(3)) for d in DEGRADATIONS.values())
    assert len(result.rows) == 3 * per_clip and result.clean_clips == 3 and not result.skipped
    with open(result.manifest, newline="") as handle:
        records = list(csv.DictReader(handle))
    assert list(records[0]) == [
        "path",
        "clean_id",
        "type",
        "param",
        "level",
        "severity",
        "mos",
        "system",
        "source",
    ]
    rows = read_manifest(result.manifest)
    for row in rows:
        info = sf.info(row.path)
        assert info.samplerate == SR and info.channels == 1 and info.format == "FLAC"
    clean_rows = [r for r in rows if r.type == "clean"]
    assert [r.severity for r in clean_rows] == [0, 0, 0] and all(r.mos == 5.0 for r in clean_rows)
    noise = [r for r in rows if r.type == "noise" and r.clean_id == "clip0"]
    assert [r.severity for r in noise] == [1, 2, 3] and [r.level for r in noise] == [30.0, 15.0, 0.0]
    assert [r.mos for r in noise] == pytest.approx([5 - 4 / 3, 5 - 8 / 3, 1.0], abs=1e-4)
    assert noise[0].system == "noise-1"
    # the file itself carries the target SNR (estimate the gain by projection onto the clean clip)
    x = sf.read(clean_rows[0].path, dtype="float64")[0]
    for row in noise:
        y = sf.read(row.path, dtype="float64")[0]
        gain = np.dot(y, x) / np.dot(x, x)
        assert abs(dsp.snr_db(x, y / gain - x) - row.level) < 0.5


def test_degrade_is_deterministic_given_seed(tmp_path):
    clean = write_clips(tmp_path / "clean", count=2)
    kinds = "noise,babble,reverb,packetloss,opus"
    a = degrade_files([clean], tmp_path / "a", types=kinds, levels=2, seed=3)
    b = degrade_files([clean], tmp_path / "b", types=kinds, levels=2, seed=3)
    c = degrade_files([clean], tmp_path / "c", types=kinds, levels=2, seed=4)
    differs = 0
    for ra, rb, rc in zip(read_manifest(a.manifest), read_manifest(b.manifest), read_manifest(c.manifest)):
        ya, yb, yc = (sf.read(r.path)[0] for r in (ra, rb, rc))
        assert np.array_equal(ya, yb), ra.path
        differs += not np.array_equal(ya, yc)
    assert differs >= 8  # every seeded type changes with the seed (opus is not seeded)


def test_bad_inputs_are_reported(tmp_path):
    with pytest.raises(AudioError, match="file not found"):
        degrade_files([tmp_path / "missing.wav"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        degrade_files([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(ToolkitError, match="at least 1 level"):
        degrade_files([tmp_path / "empty"], tmp_path / "out", levels=0)

    mixed = write_clips(tmp_path / "mixed", count=2)
    (mixed / "zero.wav").write_bytes(b"")
    nan = speechlike()
    nan[100] = np.nan
    sf.write(mixed / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(mixed / "silent.wav", np.zeros(SR, np.float32), SR)
    result = degrade_files([mixed], tmp_path / "out", types="noise", levels=2)
    assert result.clean_clips == 2
    problems = dict((p.split("/")[-1], why) for p, why in result.skipped)
    assert set(problems) == {"zero.wav", "nan.wav", "silent.wav"}
    assert (
        "zero-length" in problems["zero.wav"]
        and "NaN" in problems["nan.wav"]
        and "silent" in problems["silent.wav"]
    )
    with pytest.raises(AudioError, match="nan.wav: 1 NaN"):
        degrade_files([mixed], tmp_path / "out2", types="noise", levels=2, strict=True)

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "zero.wav").write_bytes(b"")
    with pytest.raises(DataError, match="none of the 1 input files"):
        degrade_files([only_bad], tmp_path / "out3")


def test_single_clip_skips_babble_with_a_note(tmp_path):
    clean = write_clips(tmp_path / "clean", count=1)
    result = degrade_files([clean], tmp_path / "out", types="noise,babble", levels=2)
    assert {r.type for r in result.rows} == {"clean", "noise"}
    assert any("babble skipped" in n for n in result.notes)


def test_cli_degrade(tmp_path, capsys):
    clean = write_clips(tmp_path / "clean", count=2)
    code = cli_main(
        [
            "degrade",
            str(clean),
            "--output",
            str(tmp_path / "out"),
            "--types",
            "clip,mulaw",
            "--levels",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0
    assert "2 clean clips -> 10 files" in capsys.readouterr().out
    code = cli_main(["degrade", str(tmp_path / "nope"), "--output", str(tmp_path / "o")])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'}: file not found"


# --- analysis ----------------------------------------------------------------------------------


def _table(levels=4, clips=6):
    rows = []
    for c in range(clips):
        rows.append((f"c{c}", "clean", 0))
        for t in ("noise", "clip"):
            rows += [(f"c{c}", t, s) for s in range(1, levels + 1)]
    ids, types, sev = map(np.array, zip(*rows))
    return ids, types, sev.astype(int)


def test_severity_srcc_perfect_inverse_constant_and_random():
    ids, types, sev = _table()
    perfect = severity_srcc(-sev + 0.1 * np.arange(sev.size) % 1, sev, ids, types)
    assert set(perfect) == {"noise", "clip"}
    assert perfect["noise"].srcc == pytest.approx(1.0) and perfect["noise"].clips == 6
    assert perfect["noise"].rows == 6 * 5 and perfect["noise"].ci_low == pytest.approx(1.0)
    inverse = severity_srcc(sev.astype(float), sev, ids, types)  # rises with severity: backwards
    assert inverse["clip"].srcc == pytest.approx(-1.0) and inverse["clip"].pooled == pytest.approx(-1.0)
    flat = severity_srcc(np.ones(sev.size), sev, ids, types)
    assert flat["noise"].srcc == 0.0 and flat["noise"].constant_clips == 6
    # NaN scores are left out and counted per type: the rest still rank perfectly
    holes = (-sev + 0.1 * np.arange(sev.size) % 1).astype(float)
    holes[(types == "noise") & (sev == 2)] = np.nan  # one noise version of every clip
    holes[(types == "clean") & (ids == "c0")] = np.inf  # and one clean clip
    gaps = severity_srcc(holes, sev, ids, types)
    assert gaps["noise"].nonfinite == 6 + 1 and gaps["clip"].nonfinite == 1
    assert gaps["noise"].rows == 6 * 5 - 7 and gaps["noise"].srcc == pytest.approx(1.0)
    assert perfect["noise"].nonfinite == 0
    rng = np.random.default_rng(0)
    ids, types, sev = _table(levels=5, clips=40)
    noise = severity_srcc(rng.standard_normal(sev.size), sev, ids, types)
    assert noise["noise"].ci_low < 0 < noise["noise"].ci_high
    # a score tied to the clip (sentence) but not to severity: pooled may move, within-clip stays 0-ish
    mixed = severity_srcc(-sev * 0.01 + np.repeat(np.arange(40), sev.size // 40) * 10.0, sev, ids, types)
    assert mixed["noise"].srcc == pytest.approx(1.0) and mixed["noise"].pooled < 0.2


def test_severity_srcc_drops_nonfinite_and_checks_shapes():
    ids, types, sev = _table()
    scores = -sev.astype(float)
    scores[1] = np.nan
    result = severity_srcc(scores, sev, ids, types)
    assert result["noise"].rows == 6 * 5 - 1 and result["noise"].srcc == pytest.approx(1.0)
    with pytest.raises(ValueError, match="equal-length"):
        severity_srcc(scores[:-1], sev, ids, types)
