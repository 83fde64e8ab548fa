"""``toolkit pretrain``: help, one-line errors for bad configs and data, and a real run from the YAML config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_support import REPO, make_shards, read_metric

from toolkit.cli import main as toolkit_main

TINY = str(REPO / "toolkit/configs/pretrain/tiny.yaml")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("cli-data"), clips=12)


def test_help_explains_itself_with_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        toolkit_main(["pretrain", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "Example:" in out and "toolkit pretrain --config" in out
    for option in ("--model.lr", "--model.init_from", "--model.freeze_feature_encoder", "--data.train_shards",
                   "--checkpoint.every_n_steps", "--checkpoint.keep_last", "--resume", "--logging.wandb"):
        assert option in out, option
    assert "Peak learning rate" in out  # the docstrings document every option


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--model.lr", "fast"], "model.lr"),
        (["--model.preset", "huge"], "model.preset"),
        (["--model.loss", "mse"], "model.loss"),
        (["--checkpoint.keep_last", "0"], "keep_last"),
        (["--data.train_shards", "/nonexistent/shards"], "/nonexistent/shards"),
        (["--trainer.max_steps", "3", "--resume", "/nonexistent/x.ckpt"], "/nonexistent/x.ckpt"),
    ],
)
def test_bad_values_give_a_one_line_error(extra, expected, capsys, tmp_path, shards):
    argv = ["pretrain", "--config", TINY, "--data.train_shards", str(shards),
            "--trainer.default_root_dir", str(tmp_path), *extra]
    assert toolkit_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert expected in err[0]
    assert "Traceback" not in err[0]


def test_missing_config_file_is_a_one_line_error(capsys):
    assert toolkit_main(["pretrain", "--config", "/nonexistent/pretrain.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/nonexistent/pretrain.yaml" in err[0]


def test_pretrain_from_yaml_config_writes_checkpoints_and_logs(shards, tmp_path):
    root = tmp_path / "run"
    code = toolkit_main(["pretrain", "--config", TINY, "--data.train_shards", str(shards),
                         "--trainer.default_root_dir", str(root), "--trainer.max_steps", "6",
                         "--checkpoint.every_n_steps", "3", "--logging.wandb", "offline"])
    assert code == 0
    names = sorted(p.name for p in (root / "checkpoints").iterdir())
    assert names == ["step-000000003.ckpt", "step-000000006.ckpt"]
    ckpt = torch.load(root / "checkpoints" / names[-1], weights_only=True)
    assert ckpt["hyper_parameters"]["preset"] == "tiny" and ckpt["toolkit"]["step"] == 6
    for metric in ("train/loss", "train/acc_step1", "train/acc_step12", "train/lr", "train/audio_sec_per_sec",
                   "train/skipped_steps", "train/collapsed", "train/grad_norm"):
        values = read_metric(root, metric)
        assert sorted(values) == list(range(6)), metric
    lrs = read_metric(root, "train/lr")
    assert lrs[0] == pytest.approx(1e-7) and lrs[5] > lrs[0]  # warm-up of the tiny config
    assert (root / "csv" / "version_0" / "config.yaml").is_file()
    assert list((root / "wandb").glob("offline-run-*")), "W&B logs offline when asked (no network, no key)"


@pytest.mark.parametrize("name", ["wav2vec_large", "small", "tiny"])
def test_shipped_configs_parse(name, capsys):
    import yaml

    config = str(REPO / f"toolkit/configs/pretrain/{name}.yaml")
    with pytest.raises(SystemExit) as exit_info:
        toolkit_main(["pretrain", "--config", config, "--data.train_shards", "shards/x", "--print_config"])
    assert exit_info.value.code == 0
    parsed = yaml.safe_load(capsys.readouterr().out)
    assert parsed["data"]["train_shards"] == "shards/x"
    if name == "wav2vec_large":  # fairseq's wav2vec_large recipe
        model, data = parsed["model"], parsed["data"]
        assert (model["preset"], model["loss"], model["lr"], model["warmup_updates"]) == ("large", "bce", 0.005, 500)
        assert (model["warmup_init_lr"], model["min_lr"], model["stop_min_lr"]) == (1e-7, 1e-6, 1e-9)
        assert model["max_updates"] is None and parsed["trainer"]["max_steps"] == 400_000  # one number
        assert (data["max_tokens"], data["max_sample_size"]) == (1_500_000, 150_000)
        assert parsed["trainer"]["precision"] == "bf16-mixed"
