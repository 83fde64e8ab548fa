"""Reference predictors (DNSMOS, PLCMOS, DistillMOS, PESQ, STOI) on real clips, through the evaluator.

They need the optional extra ``[references]``; scripts/test.sh installs it, so CI runs all of this.
"""

import csv
import json
import socket
import sys

import numpy as np
import pytest
import torch

from toolkit.audio import load_audio
from toolkit.batching import pad_right as pad
from toolkit.cli import main
from toolkit.scoring.evaluate import evaluate
from toolkit.scoring.references import (
    INSTALL,
    REFERENCES,
    available_references,
    build_reference,
    missing_modules,
)

MISSING = {name: missing_modules(name) for name in REFERENCES}
needs_extra = pytest.mark.skipif(
    any(MISSING.values()), reason=f"the [references] extra is not installed ({INSTALL}); missing: {MISSING}"
)


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to reach the network (a model download) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def real_clips(shared_data):
    """Three real recordings of 2-4 s (the YourTTS ground truth: VCTK, LibriTTS, MLS) at 16 kHz.

    Short on purpose: DNSMOS and DistillMOS cost about a second of CPU per 9 s window here."""
    import soundfile as sf

    gt = sorted((shared_data / "mos" / "yourtts" / "audio" / "GT").rglob("*.flac"))
    short = [p for p in gt if 2.0 <= sf.info(str(p)).duration <= 4.0]
    if len(short) < 3:
        pytest.skip("YourTTS ground-truth clips not found")
    return [short[0], short[len(short) // 2], short[-1]]


def _noisy(x: torch.Tensor, snr_db: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.numel(), generator=g)
    scale = x.pow(2).mean().sqrt() / noise.pow(2).mean().sqrt() / 10 ** (snr_db / 20)
    return (x + scale * noise).clamp(-1, 1)


@needs_extra
def test_every_reference_scores_real_clips_offline_and_noise_lowers_the_intrusive_ones(
    real_clips, no_network, monkeypatch
):
    # DistillMOS is installed --no-deps: its xls-r-sqa dependency declares transformers, which it never uses
    monkeypatch.setitem(sys.modules, "transformers", None)
    clean = [load_audio(p).samples for p in real_clips]
    noisy = [_noisy(x, 0.0, i) for i, x in enumerate(clean)]
    keys = [p.name for p in real_clips]
    for name, spec in REFERENCES.items():
        scorer = build_reference(name, seed=0)  # loads the model shipped in the package: no network
        assert scorer.measures == list(spec.measures) and all(m.endswith(".higher_better") for m in scorer.measures)
        if spec.intrusive:
            same = scorer.score(*pad(clean), keys, references=clean)
            worse = scorer.score(*pad(noisy), keys, references=clean)
            (m,) = scorer.measures
            if name == "pesq":  # identical signals reach P.862.2's ceiling (4.64), 0 dB noise is far below
                assert torch.allclose(same[m], torch.full((3,), 4.644), atol=0.01), same[m]
                assert (worse[m] < 2.0).all(), worse[m]
            else:  # STOI of a clip with itself is 1
                assert torch.allclose(same[m], torch.ones(3), atol=1e-4), same[m]
                assert (worse[m] < same[m] - 0.05).all(), worse[m]
            with pytest.raises(ValueError, match="clean reference"):
                scorer.score(*pad(clean), keys)
        else:
            good = scorer.score(*pad(clean), keys)
            bad = scorer.score(*pad(noisy), keys)
            for m in scorer.measures:
                assert ((good[m] >= 1.0) & (good[m] <= 5.0)).all(), (m, good[m])
            # 0 dB white noise is heard as worse by every predictor's overall score
            first = scorer.measures[0]
            assert (bad[first] < good[first]).all(), (first, good[first], bad[first])
        fp = scorer.fingerprint()
        assert fp["reference"] == name and fp["version"]
        assert fp["models_sha256"] or name in ("pesq", "stoi")


@needs_extra
def test_plcmos_rater_embeddings_are_seeded_per_clip_and_leave_numpy_alone(real_clips):
    x = load_audio(real_clips[0]).samples[None]
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = build_reference("plcmos", seed=0).score(x, None, ["k"])["plcmos.higher_better"]
    assert (np.random.get_state()[1] == before).all()
    b = build_reference("plcmos", seed=0).score(x, None, ["k"])["plcmos.higher_better"]
    c = build_reference("plcmos", seed=1).score(x, None, ["k"])["plcmos.higher_better"]
    assert a.item() == b.item() and a.item() != c.item()


def _suite(tmp_path, real_clips):
    from toolkit.degrade.suite import degrade_files

    result = degrade_files(real_clips[:2], tmp_path / "suite", types="noise,clip", levels=2, seed=0)
    return result.manifest


@needs_extra
def test_evaluate_with_references_on_a_degradation_suite(tmp_path, real_clips, no_network):
    manifest = _suite(tmp_path, real_clips)
    out = tmp_path / "eval"
    kw = dict(controls=["acoustic"], output_dir=out, n_boot=50, wandb_mode="disabled", progress=False, echo=None)
    refs = list(REFERENCES)
    result = evaluate([], [f"suite=csv:{manifest}"], references=refs, **kw)
    clips = 2 * (1 + 2 * 2)  # 2 clips: clean + 2 types x 2 levels
    for name in refs:
        for m in REFERENCES[name].measures:
            r = result.row(name, "suite", m)
            assert r["role"] == "reference" and r["sign"] == 1 and r["n"] == clips
            assert r["srcc_lo"] <= r["srcc"] <= r["srcc_hi"]
            assert result.row(name, "suite", m, "system")["n"] == 5
            lines = (out / "answers" / name / "suite" / f"{m}.txt").read_text().splitlines()
            assert len(lines) == clips
        assert (out / "scores" / name / "suite.csv").is_file()
        assert (out / "plots" / f"scatter_{name}_suite.png").stat().st_size > 1000
    # the intrusive references rank the pseudo-MOS (clean 5, then worse with severity) as they must
    assert result.row("pesq", "suite", "pesq.wb.higher_better")["srcc"] > 0.8
    assert result.row("stoi", "suite", "stoi.higher_better")["srcc"] > 0.5
    table = list(csv.DictReader(open(out / "results.csv")))
    assert {r["scorer"] for r in table if r["role"] == "reference"} == set(refs)
    data = json.loads((out / "results.json").read_text())
    assert {r["scorer"] for r in data["rows"] if r["role"] == "reference"} == set(refs)
    # cached per (model, file, settings): a second run computes nothing and gives the same scores
    again = evaluate([], [f"suite=csv:{manifest}"], references=["pesq", "dnsmos"], **{**kw, "controls": []})
    assert again.scores[("pesq", "suite")] == result.scores[("pesq", "suite")]
    assert again.scores[("dnsmos", "suite")] == result.scores[("dnsmos", "suite")]
    cached = list((out / "cache").iterdir())
    assert len(cached) == 1 + len(refs)  # acoustic + one folder per reference


@needs_extra
def test_intrusive_reference_without_clean_references_is_a_note_not_rows(tmp_path, real_clips):
    table = tmp_path / "set.csv"
    table.write_text("path,mos\n" + "".join(f"{p},{3 + i}\n" for i, p in enumerate(real_clips)))
    result = evaluate([], [f"csv:{table}"], references=["stoi"], n_boot=20, wandb_mode="disabled",
                      progress=False, echo=None)
    assert result.rows == []
    assert any("3 of 3 clip(s) have no clean reference, which stoi needs" in n for n in result.notes)
    # with a reference column, the same clips are scored (each against itself: STOI 1)
    table.write_text("path,mos,reference\n" + "".join(f"{p},{3 + i},{p}\n" for i, p in enumerate(real_clips)))
    result = evaluate([], [f"csv:{table}"], references=["stoi"], n_boot=20, wandb_mode="disabled",
                      progress=False, echo=None)
    scores = result.scores[("stoi", "set")]
    assert len(scores) == 3 and all(v["stoi.higher_better"] == pytest.approx(1.0, abs=1e-4) for v in scores.values())


def test_missing_extra_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pystoi", None)  # as if the extra were not installed
    assert "stoi" not in available_references() and available_references(["stoi", "nisqa"]) == []
    code = main(["evaluate", "--reference", "stoi", "--dataset", f"csv:{tmp_path}/x.csv", "--output", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "[references]" in err and "scripts/setup.sh --references" in err and "pystoi" in err
    with pytest.raises(SystemExit):
        main(["evaluate", "--reference", "nisqa", "--dataset", "csv:x.csv", "--output", str(tmp_path)])
    assert "invalid choice: 'nisqa'" in capsys.readouterr().err
