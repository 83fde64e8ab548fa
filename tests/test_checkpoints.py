"""Checkpoints: self-describing round trips, safe loading, and one-line errors for bad files."""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import zipfile

import pytest
import torch

from toolkit.errors import CheckpointError
from toolkit.models.checkpoint import FORMAT, load_checkpoint, load_model, safe_torch_load, save_model
from toolkit.models.convert import export_fairseq, import_fairseq
from toolkit.models.fairseq_format import fairseq_checkpoint, parse_layers
from toolkit.models.wav2vec import wav2vec_small, wav2vec_tiny


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_save_load_round_trip_is_self_describing(tmp_path):
    model = wav2vec_tiny()
    path = save_model(tmp_path / "m.pt", model, step=42)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["format_version"] == 1 and raw["step"] == 42
    assert raw["config"]["conv_aggregator_layers"][0] == [32, 2, 1]
    loaded, info = load_checkpoint(path)
    assert info == {"source": "toolkit", "step": 42, "path": str(path), "training": None}
    assert not loaded.training
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_fairseq_format_round_trip_without_fairseq(tmp_path):
    model = wav2vec_small()
    path = tmp_path / "fs.pt"
    torch.save(fairseq_checkpoint(model, num_updates=9), path)
    imported, out = import_fairseq(path, tmp_path / "tk.pt")
    assert load_checkpoint(out)[1]["step"] == 9
    for (k, v), (k2, v2) in zip(model.state_dict().items(), imported.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert load_checkpoint(out)[1]["training"] == {"loss": "bce", "balanced": False}
    back = export_fairseq(out, tmp_path / "back.pt")
    assert torch.load(back, weights_only=True)["cfg"]["criterion"]["infonce"] is False
    assert torch.equal(torch.load(back, weights_only=True)["model"]["wav2vec_predictions.project_to_steps.weight"],
                       torch.load(path, weights_only=True)["model"]["wav2vec_predictions.project_to_steps.weight"])


def test_old_style_checkpoint_with_meters_loads_without_running_code(tmp_path):
    """fairseq <= 0.9 pickled training meters; they load as inert records."""
    model = wav2vec_tiny()
    obj = fairseq_checkpoint(model)
    cfg = obj.pop("cfg")["model"]
    obj["args"] = argparse.Namespace(arch="wav2vec", **{k: v for k, v in cfg.items() if k != "_name"})
    path = tmp_path / "old.pt"
    # Pickle a stand-in whose module path is fairseq.meters.AverageMeter, as old checkpoints do.
    src = f"""
import sys, types, torch, pickle
mod = types.ModuleType("fairseq.meters")
class AverageMeter:
    def __init__(self): self.val, self.avg, self.sum, self.count = 1.0, 0.5, 2.0, 4
AverageMeter.__module__ = "fairseq.meters"
mod.AverageMeter = AverageMeter
pkg = types.ModuleType("fairseq"); pkg.meters = mod
sys.modules["fairseq"], sys.modules["fairseq.meters"] = pkg, mod
obj = torch.load({str(path)!r} + ".in", weights_only=False)
obj["extra_state"] = {{"train_meters": {{"loss": AverageMeter()}}}}
torch.save(obj, {str(path)!r}, _use_new_zipfile_serialization=False)
"""
    torch.save(obj, str(path) + ".in")
    subprocess.run([sys.executable, "-c", src], check=True, timeout=60)
    loaded, info = load_checkpoint(path)
    assert info["source"] == "fairseq"
    meters = safe_torch_load(path)["extra_state"]["train_meters"]
    assert meters["loss"].state["avg"] == 0.5


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    src = f"""
import os, torch
class Evil:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
torch.save({{"model": {{}}, "args": Evil()}}, {str(path)!r})
"""
    subprocess.run([sys.executable, "-c", src], check=True, timeout=60)
    with pytest.raises(CheckpointError, match="refused.*(posix.system|os.system|nt.system)"):
        load_model(path)
    assert not marker.exists()
    result = run_cli("import-fairseq", str(path), "--output", str(tmp_path / "out.pt"))
    assert result.returncode == 2 and not marker.exists()
    assert "refused" in result.stderr and "Traceback" not in result.stderr


def test_truncated_checkpoint(tmp_path):
    path = save_model(tmp_path / "m.pt", wav2vec_tiny())
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated or corrupt checkpoint \(incomplete zip") as err:
        load_model(cut)
    assert str(cut) in str(err.value)


def test_missing_empty_and_directory_paths(tmp_path):
    with pytest.raises(CheckpointError, match="file not found"):
        load_model(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        load_model(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="directory"):
        load_model(tmp_path)
    (tmp_path / "text.pt").write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "text.pt")


def test_wav2vec2_checkpoint_given_as_v1(tmp_path):
    from torchaudio.models import wav2vec2_model

    w2v2 = wav2vec2_model(
        extractor_mode="group_norm", extractor_conv_layer_config=[(32, 10, 5), (32, 3, 2)], extractor_conv_bias=False,
        encoder_embed_dim=32, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4,
        encoder_num_layers=1, encoder_num_heads=2, encoder_attention_dropout=0.0, encoder_ff_interm_features=64,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0,
        aux_num_out=None,
    )
    path = tmp_path / "wav2vec2_base.pt"
    torch.save({"args": None, "cfg": {"model": {"_name": "wav2vec2"}}, "model": w2v2.state_dict()}, path)
    with pytest.raises(CheckpointError, match="wav2vec 2.0 checkpoint.*v1"):
        load_model(path)
    # Even without the model name, the weights give it away.
    torch.save({"args": argparse.Namespace(arch="unknown"), "model": {"mask_emb": torch.zeros(3)}}, path)
    with pytest.raises(CheckpointError, match="wav2vec 2.0"):
        load_model(path)


def test_unknown_key_and_architecture_mismatch_fail_loudly(tmp_path):
    obj = fairseq_checkpoint(wav2vec_tiny())
    obj["model"]["some_new_layer.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="unknown weight 'some_new_layer.weight'"):
        load_model(path)
    # Weights of the small model under the tiny model's config: another architecture.
    obj = fairseq_checkpoint(wav2vec_tiny())
    obj["model"] = fairseq_checkpoint(wav2vec_small())["model"]
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="do not fit the architecture|shape"):
        load_model(path)
    # A toolkit checkpoint whose weights were swapped for another architecture's.
    raw = torch.load(save_model(tmp_path / "t.pt", wav2vec_tiny()), weights_only=True)
    raw["state_dict"] = wav2vec_small().state_dict()
    torch.save(raw, tmp_path / "t.pt")
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "t.pt")


def test_unsupported_variants_are_named(tmp_path):
    obj = fairseq_checkpoint(wav2vec_tiny())
    obj["cfg"]["model"]["vq_type"] = "gumbel"
    path = tmp_path / "vq.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="vq_type='gumbel'"):
        load_model(path)


def test_layer_strings_are_parsed_without_eval():
    assert parse_layers("[(512, 10, 5)] + [(512, 4, 2)] * 2", "x", "p") == ((512, 10, 5), (512, 4, 2), (512, 4, 2))
    with pytest.raises(CheckpointError, match="cannot parse"):
        parse_layers("__import__('os').system('true')", "conv_feature_layers", "ckpt.pt")


def test_cli_import_export_and_one_line_errors(tmp_path):
    fs_path = tmp_path / "fs.pt"
    torch.save(fairseq_checkpoint(wav2vec_tiny()), fs_path)
    ok = run_cli("import-fairseq", str(fs_path), "--output", str(tmp_path / "tk.pt"))
    assert ok.returncode == 0, ok.stderr
    assert "50,336 parameters" in ok.stdout
    ok = run_cli("export-fairseq", str(tmp_path / "tk.pt"), "--output", str(tmp_path / "back.pt"))
    assert ok.returncode == 0, ok.stderr and (tmp_path / "back.pt").exists()

    bad = run_cli("import-fairseq", str(tmp_path / "missing file é.pt"), "--output", str(tmp_path / "x.pt"))
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"error: {tmp_path / 'missing file é.pt'}: file not found"
    assert not (tmp_path / "x.pt").exists()

    help_text = run_cli("import-fairseq", "--help").stdout
    assert "Example" in help_text and "wav2vec_large.pt" in help_text


def test_atomic_save_leaves_previous_file_intact_on_failure(tmp_path, monkeypatch):
    path = save_model(tmp_path / "m.pt", wav2vec_tiny(), step=1)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(Exception, match="no space left"):
        save_model(path, wav2vec_tiny(), step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    assert os.path.getsize(path) > 0


def test_export_needs_the_loss_of_a_checkpoint_that_does_not_record_it(tmp_path):
    old = save_model(tmp_path / "old.pt", wav2vec_tiny(), step=3)  # no `training`: as before 0.2
    with pytest.raises(CheckpointError, match="does not record its training loss.*--loss"):
        export_fairseq(old, tmp_path / "fs.pt")
    out = export_fairseq(old, tmp_path / "fs.pt", loss="infonce")
    assert torch.load(out, weights_only=True)["cfg"]["criterion"]["infonce"] is True


# ---------------------------------------------------------------------------------------------- a run's checkpoints
# toolkit.checkpoints: the one rule for which checkpoints a run has, which is newest, which are pruned.


def lightning_checkpoint(path, step: int, *, mtime: float | None = None):
    """A file with the layout Lightning writes (``state_dict``, ``global_step``, the toolkit header)."""
    from toolkit.checkpoints import atomic_torch_save

    atomic_torch_save({"state_dict": {"model.w": torch.zeros(2)}, "global_step": step,
                       "toolkit": {"format": FORMAT, "step": step}}, path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_newest_is_the_highest_step_read_from_the_file_preemption_checkpoints_included(tmp_path, caplog):
    from toolkit.checkpoints import list_checkpoints, newest_checkpoint, newest_in_run, training_checkpoints

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    lightning_checkpoint(run / "checkpoints" / "step-000000004.ckpt", 4, mtime=3000)
    hpc6 = lightning_checkpoint(run / "hpc_ckpt_6.ckpt", 6, mtime=1000)  # older file, higher step
    # The step comes from the file, not its name: this one is step 2 whatever it is called.
    lightning_checkpoint(run / "checkpoints" / "step-000000009.ckpt", 2, mtime=4000)
    assert newest_in_run(run) == hpc6
    assert [i.step for i in training_checkpoints([run / "checkpoints", run])] == [2, 4, 6]

    # Equal steps: the file written later wins.
    step6 = lightning_checkpoint(run / "checkpoints" / "step-000000006.ckpt", 6, mtime=2000)
    assert newest_in_run(run) == step6
    os.utime(hpc6, (2500, 2500))
    assert newest_in_run(run) == hpc6

    # Incomplete, corrupt, not a training checkpoint or not a checkpoint name: skipped, with a warning.
    data = hpc6.read_bytes()
    (run / "hpc_ckpt_8.ckpt").write_bytes(data[: len(data) // 2])
    bad = bytearray(data)
    with zipfile.ZipFile(hpc6) as archive:  # flip one byte of the pickle: a CRC error, the layout intact
        entry = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    name_len, extra_len = struct.unpack("<HH", data[entry.header_offset + 26 : entry.header_offset + 30])
    bad[entry.header_offset + 30 + name_len + extra_len + 5] ^= 0xFF
    (run / "checkpoints" / "step-000000010.ckpt").write_bytes(bytes(bad))
    save_model(run / "checkpoints" / "step-000000011.ckpt", wav2vec_tiny(), step=11)  # a model, not a run state
    lightning_checkpoint(run / "checkpoints" / "other-000000012.ckpt", 12)
    (run / "checkpoints" / ".step-000000013.ckpt.123.tmp").write_bytes(data)
    with caplog.at_level("WARNING", logger="toolkit.checkpoints"):
        assert newest_in_run(run) == hpc6
    assert "hpc_ckpt_8.ckpt: incomplete" in caplog.text and "step-000000010.ckpt: incomplete" in caplog.text
    assert "step-000000011.ckpt: a toolkit checkpoint" in caplog.text
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == [
        "step-000000009.ckpt", "step-000000004.ckpt", "step-000000006.ckpt"]
    assert newest_checkpoint(tmp_path / "absent") is None


def test_pruning_keeps_the_newest_k_of_both_kinds_and_only_dead_writers_temporaries(tmp_path):
    from toolkit.checkpoints import prune_checkpoints, run_folders

    run = tmp_path / "run"
    folders = run_folders(run)
    hpc3 = lightning_checkpoint(run / "hpc_ckpt_3.ckpt", 3)
    for step in (2, 4, 6):
        lightning_checkpoint(run / "checkpoints" / f"step-{step:09d}.ckpt", step)
    hpc7 = lightning_checkpoint(run / "hpc_ckpt_7.ckpt", 7)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = run / f".hpc_ckpt_9.ckpt.{int(dead.stdout)}.tmp"
    live = run / "checkpoints" / f".step-000000009.ckpt.{os.getpid()}.tmp"
    unrelated = run / f".notes.txt.{int(dead.stdout)}.tmp"
    for tmp in (stale, live, unrelated):
        tmp.write_bytes(b"partial")
    deleted = prune_checkpoints(folders, keep_last=2)
    assert sorted(p.name for p in deleted) == ["hpc_ckpt_3.ckpt", "step-000000002.ckpt", "step-000000004.ckpt"]
    assert not hpc3.exists() and hpc7.exists() and (run / "checkpoints" / "step-000000006.ckpt").exists()
    assert not stale.exists() and live.exists() and unrelated.exists()


def test_evaluation_counts_a_step_once_and_keeps_other_checkpoints(tmp_path):
    from toolkit.checkpoints import evaluation_checkpoints

    run = tmp_path / "run"
    lightning_checkpoint(run / "checkpoints" / "step-000000004.ckpt", 4, mtime=1000)
    later = lightning_checkpoint(run / "hpc_ckpt_4.ckpt", 4, mtime=2000)
    lightning_checkpoint(run / "hpc_ckpt_5.ckpt", 5)
    init = save_model(run / "init.pt", wav2vec_tiny(), step=0)
    infos = evaluation_checkpoints([run])
    assert [(i.path, i.step, i.kind) for i in infos] == [
        (init, 0, "toolkit"), (later, 4, "lightning"), (run / "hpc_ckpt_5.ckpt", 5, "lightning")]
    other = lightning_checkpoint(tmp_path / "other" / "hpc_ckpt_4.ckpt", 4)  # another run, same step: kept
    assert [i.path for i in evaluation_checkpoints([run, other.parent])] == [
        init, other, later, run / "hpc_ckpt_5.ckpt"]
    (run / "checkpoints" / "step-000000008.ckpt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CheckpointError, match="step-000000008.ckpt"):
        evaluation_checkpoints([run])


def test_resume_auto_outside_slurm_takes_a_newer_preemption_checkpoint_and_prunes_old_ones(tmp_path):
    """`toolkit pretrain --resume auto` resumes from hpc_ckpt_* when its step is the highest, and
    `--checkpoint.keep_last` later removes it like any other checkpoint."""
    import csv

    from training_support import REPO, make_shards

    from toolkit.checkpoints import list_checkpoints
    from toolkit.training.cli import main

    shards = make_shards(tmp_path / "data", clips=8, seconds=1.0)
    root = tmp_path / "run"

    def pretrain(max_steps: int, keep_last: int) -> list[int]:
        """Train; return the steps this run logged."""
        assert main(["--config", str(REPO / "toolkit/configs/pretrain/tiny.yaml"), "--data.train_shards", str(shards),
                     "--trainer.default_root_dir", str(root), "--trainer.max_steps", str(max_steps),
                     "--checkpoint.every_n_steps", "2", "--checkpoint.keep_last", str(keep_last)]) == 0
        newest = max((root / "csv").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
        return [int(row["step"]) for row in csv.DictReader((newest / "metrics.csv").open()) if row.get("train/loss")]

    assert pretrain(6, keep_last=3) == list(range(6))
    ckpts = root / "checkpoints"
    assert [p.name for p in list_checkpoints(ckpts)] == [f"step-{s:09d}.ckpt" for s in (2, 4, 6)]
    # What a preempted job leaves when it is killed before the final periodic checkpoint is written:
    # its newest state only in <root>/hpc_ckpt_6.ckpt (both are files of trainer.save_checkpoint).
    (ckpts / "step-000000006.ckpt").rename(root / "hpc_ckpt_6.ckpt")
    assert pretrain(10, keep_last=2) == [6, 7, 8, 9]  # continued at step 6, not at step 4
    assert torch.load(ckpts / "step-000000010.ckpt", weights_only=True)["global_step"] == 10
    # keep_last=2 counts both kinds: the preemption checkpoint went when steps 8 and 10 were written.
    assert not (root / "hpc_ckpt_6.ckpt").exists()
    assert [p.name for p in list_checkpoints(ckpts, root)] == ["step-000000008.ckpt", "step-000000010.ckpt"]
