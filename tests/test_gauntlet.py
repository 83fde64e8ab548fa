"""The bad-input gauntlet: every entry point, fed every kind of bad input, through the real CLI.

Each outcome must be either a one-line error that names the file and the problem (exit code 2, no
traceback), or a counted and reported skip where the user allowed skipping. The table of inputs
and outcomes is printed at the end of the test session.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit.models.checkpoint import save_model
from toolkit.models.fairseq_format import fairseq_checkpoint
from toolkit.models.wav2vec import wav2vec_small, wav2vec_tiny
from toolkit.testing import bad_inputs as bad

REPO = Path(__file__).resolve().parents[1]

# Inputs that cannot be used as audio at all; the rest are usable with a note (resampled, ...).
UNUSABLE = {"zero-length audio", "zero-byte file", "NaN samples", "Inf samples", "truncated flac", "corrupt file"}


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**__import__("os").environ, "WANDB_MODE": "offline"})


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    err = result.stderr.strip()
    last = err.splitlines()[-1] if err else ""
    assert result.returncode == 2, f"exit {result.returncode}\nstdout: {result.stdout[-1500:]}\nstderr: {err[-1500:]}"
    assert "Traceback" not in err, err[-2000:]
    assert last.startswith("error: "), err[-1500:]
    for needle in needles:
        assert needle in last, f"{needle!r} not in {last!r}"
    return last


@pytest.fixture(scope="module")
def table(request):
    rows = getattr(request.config, "_gauntlet_rows", None)
    if rows is None:
        rows = request.config._gauntlet_rows = []
    return rows


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gauntlet audio é")
    return {name: make(root) for name, make in bad.AUDIO_MAKERS.items()}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gauntlet ckpt")
    good = save_model(root / "tiny.pt", wav2vec_tiny(), step=3)
    other = fairseq_checkpoint(wav2vec_tiny())
    other["model"] = fairseq_checkpoint(wav2vec_small())["model"]
    torch.save(other, root / "other_arch.pt")
    torch.save({"args": None, "cfg": {"model": {"_name": "wav2vec2"}}, "model": {"mask_emb": torch.zeros(4)}}, root / "w2v2.pt")
    (root / "truncated.pt").write_bytes(good.read_bytes()[:5000])
    marker = root / "code-ran"
    evil = (
        "import os, torch\n"
        "class E:\n    def __reduce__(self): return (os.system, ('touch ' + {m!r},))\n"
        "torch.save({{'model': {{}}, 'args': E()}}, {p!r})\n"
    ).format(m=str(marker), p=str(root / "malicious.pt"))
    subprocess.run([sys.executable, "-c", evil], check=True, timeout=60)
    return {"good": good, "other architecture": root / "other_arch.pt", "wav2vec2 as v1": root / "w2v2.pt",
            "truncated checkpoint": root / "truncated.pt", "malicious pickle": root / "malicious.pt",
            "missing checkpoint": root / "missing.pt", "_marker": marker}


# --- manifest ------------------------------------------------------------------------------------


def test_manifest_counts_every_bad_file(audio_dir, tmp_path, table):
    folder = next(iter(audio_dir.values())).parent
    out = tmp_path / "m.tsv"
    result = cli("manifest", folder, "--output", out, "--workers", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open(), delimiter="\t")}
    for name, path in audio_dir.items():
        if name == "spaces + non-ASCII path":
            continue  # lives in a subfolder; scanned recursively below
        row = rows.get(path.name)
        assert row is not None, f"{name}: {path.name} silently missing from the manifest"
        if name in UNUSABLE:
            assert row["status"] != "ok", f"{name} marked ok"
            assert path.name in result.stderr + result.stdout, f"{name} not reported by name"
        elif name == "all-silent audio":
            assert row["status"] == "silent"
        elif name == "shorter than receptive field":
            assert row["status"] == "too_short"
        else:
            assert row["status"] == "ok", f"{name}: {row}"
        table.append(("manifest", name, f"{'ok' if row['status'] == 'ok' else 'counted skip'} ({row['status']})"))
    assert rows["voix ü 1.wav"]["status"] == "ok"


@pytest.mark.parametrize("case", ["empty folder", "missing path"])
def test_manifest_empty_or_missing_folder(case, tmp_path, table):
    target = bad.empty_folder(tmp_path) if case == "empty folder" else bad.missing_path(tmp_path)
    line = assert_one_line_error(cli("manifest", target, "--output", tmp_path / "m.tsv"), str(target))
    assert not (tmp_path / "m.tsv").exists()
    table.append(("manifest", case, "error: " + line.split(": ", 2)[-1]))


# --- shard ---------------------------------------------------------------------------------------


def test_shard_manifest_with_deleted_files(tmp_path, table):
    clips = tmp_path / "clips"
    for i in range(3):
        bad._write(clips / f"c{i}.wav", bad.tone(1.0, seed=i))
    manifest = tmp_path / "m.tsv"
    assert cli("manifest", clips, "--output", manifest, "--workers", "1").returncode == 0
    (clips / "c1.wav").unlink()
    result = cli("shard", manifest, "--output", tmp_path / "shards", "--workers", "1")
    text = result.stdout + result.stderr
    if result.returncode == 0:
        assert "c1.wav" in text, "deleted file not reported"
        outcome = "counted skip"
    else:
        outcome = "error: " + assert_one_line_error(result, "c1.wav").split(": ", 2)[-1]
    table.append(("shard", "manifest pointing at deleted files", outcome))


def test_shard_missing_manifest(tmp_path, table):
    line = assert_one_line_error(cli("shard", tmp_path / "none.tsv", "--output", tmp_path / "s"), "none.tsv")
    table.append(("shard", "missing path", "error: " + line.split(": ", 2)[-1]))


# --- evaluate ------------------------------------------------------------------------------------


def _csv(path: Path, rows: list[tuple]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_evaluate_skips_and_names_every_bad_clip(audio_dir, checkpoints, tmp_path, table):
    rows = [("path", "mos", "system")] + [(str(p), 3.0 + i % 2, f"sys{i % 3}") for i, p in enumerate(audio_dir.values())]
    dataset = _csv(tmp_path / "bad.csv", rows)
    out = tmp_path / "eval"
    result = cli("evaluate", checkpoints["good"], "--dataset", f"csv:{dataset}", "--output", out, "--skip-bad",
                 "--no-plots", "--no-progress", "--bootstrap", "50", "--wandb-mode", "disabled", "--measures", "entropy.mean")
    assert result.returncode == 0, result.stderr[-3000:]
    skipped = [r["where"] + " " + r["problem"] for r in csv.DictReader((out / "skipped.csv").open())]
    for name, path in audio_dir.items():
        hits = [s for s in skipped if path.name in s]
        if name in UNUSABLE or name == "shorter than receptive field":
            assert len(hits) == 1, f"{name} listed {len(hits)} times in skipped.csv"
            table.append(("evaluate --skip-bad", name, f"counted skip: {hits[0].split(' ', 1)[-1]}"))
        else:
            assert not hits, f"{name} skipped: {hits}"
            table.append(("evaluate --skip-bad", name, "scored"))
    assert len(skipped) == len(UNUSABLE) + 1
    assert f"{len(skipped)} clip(s) skipped" in result.stdout


@pytest.mark.parametrize("case", ["NaN samples", "corrupt file", "zero-length audio", "shorter than receptive field"])
def test_evaluate_without_skip_stops_on_bad_clip(case, audio_dir, checkpoints, tmp_path, table):
    good = audio_dir["8 kHz"]
    dataset = _csv(tmp_path / "d.csv", [("path", "mos"), (good, 3.0), (audio_dir[case], 4.0), (audio_dir["48 kHz"], 2.0)])
    result = cli("evaluate", checkpoints["good"], "--dataset", f"csv:{dataset}", "--output", tmp_path / "e",
                 "--no-plots", "--no-progress", "--wandb-mode", "disabled", "--measures", "entropy.mean")
    line = assert_one_line_error(result, audio_dir[case].name)
    table.append(("evaluate", case, "error: " + line.split(": ", 2)[-1]))


@pytest.mark.parametrize("case", ["missing columns", "duplicate IDs", "non-numeric MOS"])
def test_evaluate_bad_csv(case, audio_dir, checkpoints, tmp_path, table):
    a, b = audio_dir["8 kHz"], audio_dir["48 kHz"]
    rows = {
        "missing columns": [("file", "score"), (a, 3.0)],
        "duplicate IDs": [("path", "mos"), (a, 3.0), (a, 4.0), (b, 2.0)],
        "non-numeric MOS": [("path", "mos"), (a, "good"), (b, 2.0)],
    }[case]
    dataset = _csv(tmp_path / "d.csv", rows)
    result = cli("evaluate", checkpoints["good"], "--dataset", f"csv:{dataset}", "--output", tmp_path / "e",
                 "--no-plots", "--no-progress", "--wandb-mode", "disabled", "--measures", "entropy.mean")
    line = assert_one_line_error(result, "d.csv")
    table.append(("evaluate", f"CSV with {case}", "error: " + line.split(": ", 2)[-1]))


@pytest.mark.parametrize("case", ["other architecture", "wav2vec2 as v1", "truncated checkpoint", "malicious pickle", "missing checkpoint"])
def test_evaluate_and_import_bad_checkpoints(case, audio_dir, checkpoints, tmp_path, table):
    dataset = _csv(tmp_path / "d.csv", [("path", "mos"), (audio_dir["8 kHz"], 3.0), (audio_dir["48 kHz"], 2.0)])
    ckpt = checkpoints[case]
    result = cli("evaluate", ckpt, "--dataset", f"csv:{dataset}", "--output", tmp_path / "e",
                 "--no-plots", "--no-progress", "--wandb-mode", "disabled")
    line = assert_one_line_error(result, ckpt.name)
    table.append(("evaluate", case, "error: " + line.split(": ", 2)[-1]))
    line = assert_one_line_error(cli("import-fairseq", ckpt, "--output", tmp_path / "x.pt"), ckpt.name)
    assert not (tmp_path / "x.pt").exists()
    table.append(("import-fairseq", case, "error: " + line.split(": ", 2)[-1]))
    assert not checkpoints["_marker"].exists(), "a pickled payload ran"


# --- pretrain ------------------------------------------------------------------------------------


def _pretrain(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("pretrain", "--config", REPO / "toolkit/configs/pretrain/tiny.yaml",
               "--trainer.default_root_dir", tmp_path / "run", "--trainer.max_steps", "2",
               "--logging.wandb", "disabled", *extra, timeout=300)


def test_pretrain_missing_shards(tmp_path, table):
    missing = tmp_path / "no shards here"
    line = assert_one_line_error(_pretrain(tmp_path, "--data.train_shards", str(missing)), "no shards here")
    table.append(("pretrain", "missing path", "error: " + line.split(": ", 2)[-1]))


@pytest.mark.parametrize("case", ["truncated checkpoint", "wav2vec2 as v1", "malicious pickle"])
def test_pretrain_bad_init_checkpoint(case, checkpoints, tmp_path, table):
    shards = tmp_path / "shards"
    shards.mkdir()
    tar = bad.truncated_tar(shards)
    ckpt = checkpoints[case]
    result = _pretrain(tmp_path, "--data.train_shards", str(tar), "--model.init_from", str(ckpt))
    line = assert_one_line_error(result, ckpt.name)
    table.append(("pretrain --model.init_from", case, "error: " + line.split(": ", 2)[-1]))
    assert not checkpoints["_marker"].exists()
