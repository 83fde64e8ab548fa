"""Checkpoints: self-describing round trips, safe loading, and one-line errors for bad files."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

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
