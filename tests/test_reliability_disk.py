"""A full disk, on a real (small tmpfs) file system: every writing command stops with one line naming
the file (exit 2, no traceback) and leaves no half-written final file behind.

The tmpfs needs root (or CAP_SYS_ADMIN); elsewhere these tests skip, and
``test_file_size_limit_is_a_clear_error_too`` checks the same path with a file-size rlimit (EFBIG).
"""

from __future__ import annotations

import csv
import json
import resource
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch
from reliability_support import (
    REPO,
    cli_command,
    env,
    error_line,
    fill,
    make_clips,
    small_disk,
    visible_files,
)

from toolkit.cli import main
from toolkit.errors import ToolkitError
from toolkit.models.checkpoint import load_model, save_model
from toolkit.models.convert import export_fairseq
from toolkit.models.wav2vec import wav2vec_tiny


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """12 short clips and their CSV (on the ordinary disk)."""
    return make_clips(tmp_path_factory.mktemp("clips"), 12, seconds=(0.25, 0.35))


@pytest.fixture()
def disk(tmp_path):
    with small_disk(tmp_path / "disk", "512k") as mount:
        yield mount


def cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def hidden_temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*") if p.is_file()]


# --- manifest ------------------------------------------------------------------------------------


def test_manifest_on_a_full_disk(clips, disk, tmp_path, capsys):
    reference = tmp_path / "ok.tsv"
    assert cli(capsys, "manifest", clips.parent, "--output", reference, "--workers", "1")[0] == 0
    size = reference.stat().st_size
    out = disk / "m.tsv"

    fill(disk, leave=0)  # nothing fits: the resume file (m.tsv.partial) cannot be written
    code, err = cli(capsys, "manifest", clips.parent, "--output", out, "--workers", "1")
    line = error_line(err)
    assert code == 2 and "m.tsv" in line and "no space left on device" in line, line
    assert not out.exists()

    # room for the resume file but not for the manifest as well: the manifest is complete or absent
    for filler in disk.glob("filler-*"):
        filler.unlink()
    (disk / "m.tsv.partial").unlink(missing_ok=True)
    fill(disk, leave=size + 100)
    code, err = cli(capsys, "manifest", clips.parent, "--output", out, "--workers", "1")
    line = error_line(err)
    assert code == 2 and str(out) in line and "no space left on device" in line, line
    assert not out.exists() and hidden_temporaries(disk) == []
    # the resume file holds every scanned row; with space again, a rerun reuses them and finishes
    for filler in disk.glob("filler-*"):
        filler.unlink()
    assert cli(capsys, "manifest", clips.parent, "--output", out, "--workers", "1", "--resume")[0] == 0
    assert out.read_text() == reference.read_text()


# --- shard ---------------------------------------------------------------------------------------


def test_shard_on_a_full_disk_leaves_only_complete_shards(clips, disk, tmp_path, capsys):
    manifest = tmp_path / "m.tsv"
    assert cli(capsys, "manifest", clips.parent, "--output", manifest, "--workers", "1")[0] == 0
    reference = tmp_path / "shards"
    assert cli(capsys, "shard", manifest, "--output", reference, "--max-count", "4", "--workers", "1")[0] == 0
    sizes = [p.stat().st_size for p in sorted(reference.glob("shard-*.tar"))]
    assert len(sizes) == 3

    out = disk / "shards"
    fill(disk, leave=sizes[0] + 4096)  # the first shard fits, the second does not
    code, err = cli(capsys, "shard", manifest, "--output", out, "--max-count", "4", "--workers", "1")
    line = error_line(err)
    assert code == 2 and "no space left on device" in line and str(out / "shard-000001.tar") in line, line
    assert [p.name for p in visible_files(out)] == ["shard-000000.tar"]  # no index.json, no partial shard
    assert hidden_temporaries(out) == []
    assert (out / "shard-000000.tar").read_bytes() == (reference / "shard-000000.tar").read_bytes()
    with tarfile.open(out / "shard-000000.tar") as tar:
        assert len(tar.getnames()) == 2 * 4  # audio + json per utterance


# --- evaluate ------------------------------------------------------------------------------------

EVAL = ("--draws", "1", "--bootstrap", "20", "--no-progress", "--no-plots", "--device", "cpu",
        "--wandb-mode", "disabled", "--measures", "entropy.mean,p_pos.mean")


def test_evaluate_on_a_full_disk(clips, disk, tmp_path, capsys):
    out = disk / "eval"
    fill(disk, leave=0)
    # results on the full disk (the cache elsewhere): results.csv cannot be written
    code, err = cli(capsys, "evaluate", "random:tiny", "--dataset", f"csv:{clips}", "--output", out,
                    "--cache", tmp_path / "cache", *EVAL)
    line = error_line(err)
    assert code == 2 and str(out / "results.csv") in line and "no space left on device" in line, line
    assert visible_files(out) == [] and hidden_temporaries(out) == []
    # the cache on the full disk too (the default, OUTPUT/cache): its first shard cannot be written
    code, err = cli(capsys, "evaluate", "random:tiny", "--dataset", f"csv:{clips}", "--output", out, *EVAL)
    line = error_line(err)
    assert code == 2 and str(out / "cache") in line and "no space left on device" in line, line
    assert not (out / "results.csv").exists() and hidden_temporaries(out) == []
    # space again: the run completes, every clip scored (the earlier cache was not poisoned)
    for filler in disk.glob("filler-*"):
        filler.unlink()
    code, err = cli(capsys, "evaluate", "random:tiny", "--dataset", f"csv:{clips}", "--output", out, *EVAL)
    assert code == 0, err[-2000:]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["n"] for r in rows if r["level"] == "utterance"} == {"12"}
    assert json.loads((out / "results.json").read_text())["rows"]


# --- checkpoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize("leave", [0, 16384], ids=["full", "nearly full"])
def test_save_model_on_a_full_disk_keeps_the_previous_checkpoint(disk, leave):
    torch.manual_seed(0)
    first, second = wav2vec_tiny(), wav2vec_tiny()
    path = save_model(disk / "model.pt", first, step=1)
    before = path.read_bytes()
    fill(disk, leave=leave)  # nearly full: the write starts, then comes up short half-way
    with pytest.raises(ToolkitError) as info:
        save_model(path, second, step=2)
    assert info.value.path == str(path) and "no space left on device" in info.value.problem
    assert len(str(info.value).splitlines()) == 1
    assert path.read_bytes() == before and hidden_temporaries(disk) == []
    loaded = load_model(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), first.state_dict().values()))


def test_import_fairseq_on_a_full_disk(disk, tmp_path, capsys):
    fairseq = export_fairseq(wav2vec_tiny(), tmp_path / "fairseq.pt", loss="bce")
    fill(disk, leave=16384)
    out = disk / "imported.pt"
    code, err = cli(capsys, "import-fairseq", fairseq, "--output", out)
    line = error_line(err)
    assert code == 2 and line == f"error: {out}: no space left on device while writing", line
    assert not out.exists() and hidden_temporaries(disk) == []


def test_pretrain_on_a_full_disk(disk, tmp_path, capsys):
    from training_support import make_shards

    shards = make_shards(tmp_path / "data", clips=4, seconds=0.6, max_count=4)
    fill(disk, leave=0)
    root = disk / "run"
    code, err = cli(capsys, "pretrain", "--config", REPO / "toolkit/configs/pretrain/tiny.yaml",
                    "--data.train_shards", shards, "--trainer.default_root_dir", root, "--trainer.max_steps", "2",
                    "--logging.wandb", "disabled")
    line = error_line(err)
    assert code == 2 and str(root) in line and "no space left on device" in line, line
    assert not list(root.rglob("*.ckpt"))


def test_atomic_files_get_the_permissions_open_would_give(tmp_path):
    """Results and checkpoints are shared on clusters: not owner-only like a bare mkstemp file."""
    import os

    from toolkit.io import write_text

    mask = os.umask(0o022)
    try:
        write_text(tmp_path / "results.csv", "a\n")
        save_model(tmp_path / "model.pt", wav2vec_tiny())
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("a\n")
    finally:
        os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"results.csv": 0o644, "model.pt": 0o644, "plain.txt": 0o644}


# --- a file-size limit (works without root): EFBIG is reported like a full disk -------------------


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_file_size_limit_is_a_clear_error_too(clips, tmp_path):
    fairseq = export_fairseq(wav2vec_tiny(), tmp_path / "fairseq.pt", loss="bce")
    out = tmp_path / "imported.pt"
    done = subprocess.run(cli_command("import-fairseq", fairseq, "--output", out), cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size(50_000))
    line = error_line(done.stderr)
    assert done.returncode == 2 and line.startswith(f"error: {out}: file too large"), line
    assert not out.exists() and hidden_temporaries(tmp_path) == []
