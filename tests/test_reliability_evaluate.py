"""Killing the evaluator (SIGKILL, no chance to clean up): the rerun resumes from the score cache,
gives exactly the uninterrupted run's results, and no result file is ever half-written."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from reliability_support import REPO, cli_command, env, make_clips, visible_files

from toolkit.cli import main

CLIPS = 200
ARGS = ("--measures", "entropy.mean,p_pos.mean", "--draws", "1", "--bootstrap", "50", "--no-plots",
        "--wandb-mode", "disabled", "--no-progress", "--device", "cpu", "--batch-seconds", "0.7")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_clips(tmp_path_factory.mktemp("clips"), CLIPS, seconds=(0.3, 0.6))


def evaluate_command(dataset: Path, out: Path) -> list[str]:
    return cli_command("evaluate", "random:tiny", "--dataset", f"csv:{dataset}", "--output", out, *ARGS)


def cache_shards(out: Path) -> list[Path]:
    return sorted((out / "cache").glob("*/shard-*.json"))


def cached_entries(out: Path) -> int:
    """Entries in the cache, checking that every shard a reader would load is complete JSON."""
    keys: set[str] = set()
    for shard in cache_shards(out):
        keys |= set(json.loads(shard.read_text()))  # a half-written shard raises here
    return len(keys)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; ``False`` if it finished (or timed out) first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            return True
        time.sleep(0.002)
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=60)
    return False


def assert_results_complete_or_absent(out: Path, reference: Path) -> None:
    """Every result file a user could open is either missing or byte-identical to the finished run's."""
    for path in visible_files(out):
        rel = path.relative_to(out)
        if rel.parts[0] == "cache":
            assert rel.name == "meta.json" or rel.name.startswith("shard-"), rel
            json.loads(path.read_text())
        elif rel.name == "results.json":
            data = json.loads(path.read_text())
            assert data["rows"] == json.loads((reference / rel).read_text())["rows"]
        else:
            assert path.read_bytes() == (reference / rel).read_bytes(), f"{rel} differs from the complete file"


def test_killed_evaluation_resumes_from_cache_with_identical_results(dataset, tmp_path, capsys):
    # the uninterrupted run, for reference (in this process)
    reference = tmp_path / "reference"
    assert main([str(a) for a in evaluate_command(dataset, reference)[3:]]) == 0
    capsys.readouterr()

    # 1. SIGKILL while scoring, once some batches are cached
    out = tmp_path / "killed"
    proc = subprocess.Popen(evaluate_command(dataset, out), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    killed = kill_when(proc, lambda: len(cache_shards(out)) >= 10)
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert killed, f"the evaluation finished before it could be killed; use more clips\n{stderr[-2000:]}"
    assert not (out / "results.csv").exists() and not (out / "results.json").exists()
    assert_results_complete_or_absent(out, reference)
    done = cached_entries(out)
    assert 10 <= done < CLIPS

    # 2. the rerun scores only what is missing; kill it again the moment it starts writing results
    proc = subprocess.Popen(evaluate_command(dataset, out), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    writing = lambda: any(p.name.startswith((".results", "results")) for p in out.iterdir())  # noqa: E731
    kill_when(proc, writing)  # mostly lands while results.csv is being written (leaving its hidden .tmp)
    stderr = proc.stderr.read()
    proc.stderr.close()
    match = re.search(r"random-tiny on set: (\d+) computed, (\d+) from cache, 0 skipped", stderr)
    assert match, stderr[-2000:]
    computed, from_cache = int(match.group(1)), int(match.group(2))
    assert from_cache == done and computed == CLIPS - done
    assert_results_complete_or_absent(out, reference)

    # 3. a final rerun: everything from the cache, outputs identical to the uninterrupted run
    assert main([str(a) for a in evaluate_command(dataset, out)[3:]]) == 0
    capsys.readouterr()
    assert cached_entries(out) == CLIPS
    for rel in ("results.csv", "scores/random-tiny/set.csv", "answers/random-tiny/set/entropy.mean.txt"):
        assert (out / rel).read_text() == (reference / rel).read_text(), rel
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["n"] for r in rows if r["level"] == "utterance"} == {str(CLIPS)}
    assert json.loads((out / "results.json").read_text())["rows"] == json.loads((reference / "results.json").read_text())["rows"]
