"""A recipe's real (non-smoke) mode end to end, run here with ``--local``: the options the domain runs of
docs/results.md section 7 used (``--init`` a toolkit checkpoint, ``--exclude``, ``--offdomain``, a
``toolkit degrade`` set as ``--eval``, ``--steps``/``--every``, ``--pretrain-arg``/``--eval-arg``),
at a size that runs in a few minutes: real French audio from ../shared, 4 steps.

What must hold: the leakage guard keeps a held-out clip out of pretraining even when a copy of it sits
in the audio folder; step 0 of the curve is exactly the model given to ``--init``; every checkpoint is
evaluated on the held-out set, the off-domain set at the first and last step only; the per-type
severity tables are written.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit.data.manifest import read_manifest
from toolkit.degrade.suite import degrade_files
from toolkit.models.checkpoint import load_checkpoint
from toolkit.models.embedded import embedded_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _copy(files: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(f, folder / f.name)) for f in files]


def test_recipe_local_real_mode_with_guard_init_and_offdomain(shared_data: Path, tmp_path: Path) -> None:
    french = sorted((shared_data / "speech" / "fr").rglob("*.ogg")) + sorted((shared_data / "speech" / "fr").rglob("*.wav"))
    english = sorted((shared_data / "speech" / "en" / "librispeech-clips").glob("*"))
    if len(french) < 12 or not english:
        pytest.skip("../shared/data/speech/fr (12 clips) or speech/en/librispeech-clips missing")
    held = _copy(french[:2], tmp_path / "heldout")
    # The pretraining folder holds 10 other clips and, by mistake, a renamed copy of a held-out clip.
    audio = tmp_path / "audio"
    _copy(french[2:12], audio)
    shutil.copy2(held[0], audio / f"leaked{held[0].suffix}")
    in_domain = tmp_path / "fr-degraded"
    off_domain = tmp_path / "en-degraded"
    degrade_files(held, in_domain, types=["noise", "clip"], levels=2, seed=0)
    degrade_files(english[:1], off_domain, types=["noise"], levels=2, seed=0)

    init = embedded_model("default").path
    work = tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable, "TOOLKIT_SHARED": str(shared_data.parent)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = [
        "bash", str(REPO / "recipes" / "french" / "run.sh"), "--local",
        "--audio", str(audio), "--exclude", str(tmp_path / "heldout"),
        "--eval", f"fr-degraded=csv:{in_domain / 'manifest.csv'}",
        "--offdomain", f"en-degraded=csv:{off_domain / 'manifest.csv'}",
        "--init", str(init), "--preset", "small", "--steps", "4", "--every", "2", "--work", str(work),
        "--pretrain-arg=--model.warmup_updates=1", "--pretrain-arg=--data.num_workers=0",
        "--pretrain-arg=--data.max_sample_size=16000", "--pretrain-arg=--data.max_tokens=64000",
        "--pretrain-arg=--data.min_sample_size=4000",
        "--pretrain-arg=--logging.wandb=disabled", "--pretrain-arg=--trainer.enable_progress_bar=false",
        "--pretrain-arg=--adaptation.max_clips=4", "--pretrain-arg=--adaptation.max_seconds=2",
        "--eval-arg=--draws=1", "--eval-arg=--bootstrap=50", "--eval-arg=--no-progress",
        "--eval-arg=--wandb-mode=disabled", "--eval-arg=--device=cpu", "--eval-arg=--no-plots",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    # Leakage guard: the renamed copy of a held-out clip is excluded by content, and only it.
    rows = read_manifest(work / "manifest.tsv")
    status = {Path(r.path).name: r.status for r in rows}
    assert status[f"leaked{held[0].suffix}"] == "excluded"
    assert sum(s == "ok" for s in status.values()) == 10, status

    # Step 0 of the curve is the --init model itself.
    step0, info = load_checkpoint(work / "step-0.pt")
    start, _ = load_checkpoint(init)
    assert info["step"] == 0
    for (name, a), (_, b) in zip(step0.state_dict().items(), start.state_dict().items(), strict=True):
        assert torch.equal(a.float(), b.float()), name

    def steps(results: Path, dataset: str) -> list[int]:
        table = list(csv.DictReader((results / "results.csv").open()))
        return sorted({int(r["step"]) for r in table if r["role"] == "checkpoint" and r["dataset"] == dataset})

    assert steps(work / "results", "fr-degraded") == [0, 2, 4]
    assert steps(work / "results-offdomain", "en-degraded") == [0, 4]
    for table in (work / "results" / "severity_fr-degraded.csv", work / "results-offdomain" / "severity_en-degraded.csv"):
        types = {r["type"] for r in csv.DictReader(table.open())}
        assert {"noise"} <= types, (table, types)
    # The paired difference, last checkpoint - step 0, resampling the 2 held-out recordings.
    paired = (work / "results" / "paired_fr-degraded.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in paired] == ["p_pos.mean", "entropy.mean"]
    assert all(line.endswith("(10 clips, 2 clusters)") for line in paired), paired
