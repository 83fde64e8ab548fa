"""The shipped models: found by name, documented (sources, licences, terms of use), small, and
stored in half precision without changing any ranking."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

from toolkit.audio import load_audio
from toolkit.degrade import degrade_files, read_manifest, severity_srcc
from toolkit.errors import CheckpointError
from toolkit.models.checkpoint import load_checkpoint
from toolkit.models.embedded import ASSETS, embedded_model, embedded_models, models_help, save_embedded
from toolkit.scoring.scorer import Wav2VecScorer


def test_every_shipped_model_loads_has_a_card_and_all_fit_in_20_mb():
    models = embedded_models()
    assert list(models)[0] == "default" and {"zh", "singing", "fr"} <= set(models)
    # every weight shipped (models and the default's codebooks) together
    assert sum(p.stat().st_size for p in ASSETS.rglob("*.pt")) <= 20 * 2**20
    for m in models.values():
        model, info = load_checkpoint(m.path)
        assert info["source"] == "toolkit" and next(model.parameters()).dtype == torch.float32
        assert m.card is not None, m.name
        if m.name != "default":
            card = m.card.read_text()
            assert m.use and "licen" in card.lower() and "| data |" in card, m.name
            raw = torch.load(m.path, weights_only=True)
            assert raw["extra"]["stored_dtype"] == "float16"
            assert {v.dtype for v in raw["state_dict"].values() if v.is_floating_point()} == {torch.float16}


def test_research_use_only_training_audio_is_said_in_the_card_and_the_help():
    singing = embedded_model("singing")
    assert "research use only" in singing.use.lower()
    assert "MIR-1K" in singing.card.read_text() and "research use only" in singing.card.read_text().lower()
    assert "singing: " in models_help() and "research use only" in models_help().lower()


def test_an_unknown_name_is_an_error_that_lists_the_shipped_models(tmp_path):
    with pytest.raises(CheckpointError, match=r"no embedded model of that name \(embedded: default, "):
        embedded_model("klingon")
    assert embedded_models(tmp_path) == {}
    with pytest.raises(CheckpointError, match=r"embedded: none"):
        embedded_model("default", tmp_path)


def test_half_precision_storage_changes_no_ranking(tmp_path, shared_data):
    """The default model, stored as the domain models are (float16) and loaded back, ranks a real
    clip's 41 graded versions exactly as the float32 weights do: per type (against severity) and overall."""
    full, _ = load_checkpoint(ASSETS / "default" / "model.pt")
    half, _ = load_checkpoint(save_embedded(full, tmp_path / "half.pt", step=0, source="test"))
    assert any((a != b).any() for a, b in zip(full.state_dict().values(), half.state_dict().values()))
    rows = read_manifest(degrade_files([shared_data / "speech/en/arctic-sisec/arctic_a0010.wav"], tmp_path / "deg", levels=4, seed=0).manifest)
    wavs = [load_audio(r.path).samples for r in rows]
    measures = ["p_pos.mean", "entropy.mean"]
    scored = {}
    for name, model in (("fp32", full), ("fp16", half)):
        scorer = Wav2VecScorer(model, measures=measures, draws=1, seed=0)
        per_clip = [scorer.score(w.reshape(1, -1), torch.tensor([w.numel()]), keys=[str(i)]) for i, w in enumerate(wavs)]
        scored[name] = {m: np.array([float(s[m][0]) for s in per_clip]) for m in measures}
    types = [r.type for r in rows]
    for m in measures:
        assert stats.spearmanr(scored["fp32"][m], scored["fp16"][m]).statistic > 0.999, m
        per_type = {
            name: {t: r.srcc for t, r in severity_srcc(scored[name][m], [r.severity for r in rows],
                                                       [r.clean_id for r in rows], types, bootstrap=0).items()}
            for name in scored
        }
        assert per_type["fp32"] == per_type["fp16"], m


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, timeout=600)


def test_evaluate_scores_an_embedded_model_by_name_like_its_checkpoint_file(tmp_path, shared_data):
    clips = sorted((shared_data / "speech/en/arctic-sisec").glob("*.wav"))[:4]
    table = tmp_path / "set.csv"
    table.write_text("path,mos\n" + "".join(f"{c},{i + 1}\n" for i, c in enumerate(clips)))
    common = ["--dataset", f"csv:{table}", "--measures", "p_pos.mean", "--draws", "1", "--no-progress",
              "--wandb-mode", "disabled", "--no-plots", "--bootstrap", "10"]
    by_name = run_cli("evaluate", "--model", "zh", *common, "--output", str(tmp_path / "a"))
    assert by_name.returncode == 0, by_name.stderr[-2000:]
    by_path = run_cli("evaluate", str(embedded_model("zh").path), *common, "--output", str(tmp_path / "b"))
    assert by_path.returncode == 0, by_path.stderr[-2000:]
    named = (tmp_path / "a/scores/zh/set.csv").read_text()
    assert named == (tmp_path / "b/scores/model/set.csv").read_text() and len(named.splitlines()) == 5


def test_demo_and_evaluate_refuse_an_unknown_model_name_in_one_line(tmp_path):
    for args in (["demo", "--model", "klingon", "--output", str(tmp_path / "d")],
                 ["evaluate", "--model", "klingon", "--dataset", "csv:x.csv", "--output", str(tmp_path / "e")]):
        result = run_cli(*args)
        assert result.returncode != 0
        assert "--model klingon: no embedded model of that name (embedded: default, " in result.stderr
        assert "Traceback" not in result.stderr
    both = run_cli("demo", "--model", "zh", "--checkpoint", "x.pt", "--output", str(tmp_path / "f"))
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
