import csv
import json

import pytest
import torch

from toolkit.audio import save_audio
from toolkit.cli import main
from toolkit.models.wav2vec import wav2vec_tiny
from toolkit.scoring.evaluate import evaluate
from toolkit.scoring.measures import MEASURES


@pytest.fixture()
def dataset_csv(tmp_path):
    """12 clips in 3 'systems': clean tones with growing noise; MOS falls with the noise."""
    g = torch.Generator().manual_seed(0)
    rows = ["path,mos,system"]
    for i in range(12):
        t = torch.arange(8000 + 1000 * (i % 4)) / 16000
        noise = (i // 4) * 0.1
        wave = 0.3 * torch.sin(2 * torch.pi * 220 * t) + noise * torch.randn(t.numel(), generator=g)
        (tmp_path / "clips").mkdir(exist_ok=True)
        save_audio(tmp_path / "clips" / f"c{i}.wav", wave, 16000)
        rows.append(f"clips/c{i}.wav,{4.5 - (i // 4) - 0.1 * (i % 4)},sys{i // 4}")
    (tmp_path / "set.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "set.csv"


def test_evaluate_checkpoints_controls_outputs_and_cache(tmp_path, dataset_csv):
    torch.manual_seed(0)
    early, late = wav2vec_tiny(), wav2vec_tiny()
    out = tmp_path / "eval"
    measures = ["entropy.mean", "p_pos.mean", "loss_bce"]
    kw = dict(controls=["random-init", "acoustic"], output_dir=out, draws=2, n_boot=50, wandb_mode="offline",
              progress=False, echo=None)
    result = evaluate([("early", early, 100), ("late", late, 200)], [f"csv:{dataset_csv}"], measures, **kw)
    rows = result.rows
    # 3 wav2vec scorers x 3 measures + 5 acoustic features, at two levels each
    assert len(rows) == (3 * 3 + 5) * 2
    r = result.row("late", "set", "entropy.mean")
    assert r["n"] == 12 and r["step"] == 200 and r["sign"] == -1 and r["srcc_lo"] <= r["srcc"] <= r["srcc_hi"]
    assert result.row("late", "set", "entropy.mean", "system")["n"] == 3
    assert result.row("random-init", "set", "p_pos.mean")["role"] == "control"
    # the noisier "systems" are flatter: the acoustic control sees them (flatness sign -1)
    assert result.row("acoustic", "set", "flatness")["srcc"] > 0.7
    with open(out / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows) and table[0]["scorer"] == "early"
    data = json.loads((out / "results.json").read_text())
    assert len(data["rows"]) == len(rows) and data["datasets"][0]["clips"] == 12
    answer = (out / "answers" / "late" / "set" / "entropy.mean.txt").read_text().splitlines()
    assert len(answer) == 12 and answer[0].startswith("clips/c0,")
    float(answer[0].split(",")[1])
    assert (out / "scores" / "acoustic" / "set.csv").is_file()
    assert (out / "plots" / "scatter_late_set.png").stat().st_size > 1000
    assert (out / "plots" / "srcc_vs_step_set_utterance.png").is_file()
    assert list((out / "wandb").glob("offline-run-*"))
    # re-running (e.g. with one more checkpoint) rescoring nothing: identical scores from the cache
    again = evaluate([("late", late, 200)], [f"csv:{dataset_csv}"], measures,
                     **{**kw, "controls": [], "wandb_mode": "disabled", "plots": False})
    assert again.scores[("late", "set")] == result.scores[("late", "set")]


def test_evaluate_checkpoint_files_with_steps_and_skips(tmp_path, dataset_csv):
    from toolkit.models.checkpoint import save_model

    torch.manual_seed(0)
    paths = []
    for step in (10, 20):
        paths.append(save_model(tmp_path / f"ckpt-{step}.pt", wav2vec_tiny(), step=step))
    (dataset_csv.parent / "clips" / "c3.wav").write_bytes(b"broken")  # undecodable audio
    result = evaluate(paths, [f"csv:{dataset_csv}"], ["entropy.mean"], output_dir=tmp_path / "e", skip_bad=True,
                      n_boot=20, wandb_mode="disabled", progress=False, echo=None)
    assert result.row("ckpt-20", "set", "entropy.mean")["step"] == 20
    assert result.row("ckpt-10", "set", "entropy.mean")["n"] == 11
    assert len(result.skipped) == 2 and "c3.wav" in result.skipped[0]["where"]
    assert "c3.wav" in (tmp_path / "e" / "skipped.csv").read_text()


def test_cli_on_yourtts_portuguese_subset(tmp_path, shared_data, capsys):
    out = tmp_path / "cli"
    code = main(["evaluate", "random:tiny", "--dataset", f"yourtts:{shared_data / 'mos' / 'yourtts'}:PT",
                 "--limit", "20", "--control", "acoustic", "--output", str(out), "--measures", "entropy.*,loss_bce",
                 "--draws", "1", "--bootstrap", "100", "--wandb-mode", "disabled", "--no-progress", "--device", "cpu"])
    assert code == 0
    text = capsys.readouterr().out
    assert "yourtts-pt: 20 clips" in text and "utterance SRCC" in text and "entropy.std_steps" in text
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["measure"] for r in rows if r["scorer"] == "random-tiny"} == {m for m in MEASURES if m.startswith("entropy.")} | {"loss_bce"}
    assert all(r["n"] == "20" for r in rows if r["level"] == "utterance")


def test_cli_errors_are_one_line(tmp_path, capsys):
    code = main(["evaluate", "random:tiny", "--dataset", "nonsense:/x", "--output", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: nonsense:/x: bad dataset spec") and "Traceback" not in err
    assert main(["evaluate", str(tmp_path / "none.pt"), "--dataset", f"csv:{tmp_path}/x.csv", "--output", str(tmp_path)]) == 2
    assert "file not found" in capsys.readouterr().err
    assert main(["evaluate", "random:tiny", "--dataset", f"csv:{tmp_path}/x.csv", "--measures", "bogus", "--output", str(tmp_path)]) == 2
    assert "unknown measure 'bogus'" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--handicap", "0.2"], ["--passes", "3"], ["--handicap", "0", "--passes", "1"]])
def test_handicap_and_passes_need_wav2vec2(tmp_path, dataset_csv, capsys, flags):
    code = main(["evaluate", "random:tiny", "--dataset", f"csv:{dataset_csv}", "--output", str(tmp_path / "o"), *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert "only applies to --wav2vec2" in err and flags[0] in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "results.csv").exists()
