"""Determinism on CPU: the same seed, data and checkpoint give identical scores in separate runs and
whatever the batch size (``--batch-seconds``), through the real CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch
from reliability_support import REPO, cli_command, env, make_clips

from toolkit.cli import main
from toolkit.models.checkpoint import save_model
from toolkit.models.wav2vec import wav2vec_tiny

ARGS = ("--control", "random-init", "--draws", "2", "--seed", "3", "--bootstrap", "100", "--no-plots",
        "--wandb-mode", "disabled", "--no-progress", "--device", "cpu")


def exact_scores(out: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{scorer hash: {file key: {measure: score}}}`` from the score cache, which keeps full floats."""
    found: dict[str, dict] = {}
    for shard in (out / "cache").glob("*/shard-*.json"):
        found.setdefault(shard.parent.name, {}).update(json.loads(shard.read_text()))
    return found


def test_same_scores_across_runs_and_batch_sizes(tmp_path, capsys):
    # lengths from 0.25 s to 1.5 s: batches mix lengths, so padding and masking are exercised
    dataset = make_clips(tmp_path / "clips", 16, seconds=(0.25, 1.5), seed=1)
    torch.manual_seed(1)
    checkpoint = save_model(tmp_path / "ckpt-step-40.pt", wav2vec_tiny(), step=40)
    runs = {"one clip per batch": "0.3", "all clips in one batch": "1000"}
    outs = {}
    for name, seconds in runs.items():  # separate processes
        outs[name] = tmp_path / name.replace(" ", "_")
        done = subprocess.run(cli_command("evaluate", checkpoint, "--dataset", f"csv:{dataset}", "--output", outs[name],
                                          "--batch-seconds", seconds, *ARGS),
                              cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    outs["this process, 4 s batches"] = tmp_path / "inprocess"
    assert main(["evaluate", str(checkpoint), "--dataset", f"csv:{dataset}", "--output", str(tmp_path / "inprocess"),
                 "--batch-seconds", "4", *ARGS]) == 0
    capsys.readouterr()

    first, *others = outs.values()
    scores = exact_scores(first)
    assert len(scores) == 2 and all(len(entries) == 16 for entries in scores.values())  # checkpoint + random-init
    for out in others:
        assert exact_scores(out) == scores, out.name  # bit-identical floats
        for rel in ("scores/ckpt-step-40/set.csv", "scores/random-init/set.csv", "results.csv"):
            assert (out / rel).read_text() == (first / rel).read_text(), f"{out.name}: {rel}"
    # and the scores are real numbers that differ between clips
    values = [v["entropy.mean"] for v in next(iter(scores.values())).values()]
    assert all(v == v for v in values) and len(set(values)) == 16
