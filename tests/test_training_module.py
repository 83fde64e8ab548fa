"""Wav2VecPretraining and the training callbacks, in-process on tiny models (no subprocesses)."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
from torch.utils.data import DataLoader
from training_support import read_wandb_history, synth_clip

from toolkit.checkpoints import list_checkpoints
from toolkit.checkpoints import newest_checkpoint as find_latest_checkpoint
from toolkit.errors import ToolkitError
from toolkit.models.checkpoint import load_model, save_model
from toolkit.models.wav2vec import wav2vec_tiny
from toolkit.training.callbacks import (
    AtomicCheckpointIO,
    CollapseDetector,
    StepCheckpoint,
    ThroughputMonitor,
)
from toolkit.training.cli import wandb_mode
from toolkit.training.curve import AdaptationCurve
from toolkit.training.module import (
    FairseqCosineSchedule,
    Wav2VecPretraining,
    candidate_entropy,
    fairseq_cosine_lr,
)

warnings.filterwarnings("ignore", ".*srun.*")
RECIPE = dict(max_lr=5e-3, warmup_updates=500, warmup_init_lr=1e-7, min_lr=1e-6, max_updates=400_000)


def batches(n: int, *, nan_at: int | None = None, seed: int = 0) -> DataLoader:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lengths = torch.tensor([16000, 12000, 9000])
        audio = torch.zeros(3, 16000)
        for row, length in enumerate(lengths.tolist()):
            audio[row, :length] = torch.from_numpy(synth_clip(rng, length / 16000)[:length])
        if i == nan_at:
            audio[1, 100] = float("nan")
        out.append({"audio": audio, "lengths": lengths, "keys": [f"{i}-{r}" for r in range(3)]})
    return DataLoader(out, batch_size=None)


def trainer(tmp_path, steps: int, callbacks=(), **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        callbacks=list(callbacks), plugins=[AtomicCheckpointIO()], log_every_n_steps=1, **kwargs,
    )


class Snapshots(pl.Callback):
    """Parameters after every optimizer step."""

    def __init__(self) -> None:
        self.params: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.params.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})


# -- schedule and statistics (pure) ---------------------------------------------------------------


def test_fairseq_cosine_schedule_matches_the_recipe():
    lr = lambda step: fairseq_cosine_lr(step, **RECIPE)  # noqa: E731
    assert lr(0) == pytest.approx(1e-7)
    assert lr(250) == pytest.approx((1e-7 + 5e-3) / 2)
    assert lr(500) == pytest.approx(5e-3)
    assert lr(500 + (400_000 - 500) // 2) == pytest.approx((5e-3 + 1e-6) / 2, rel=1e-4)
    assert lr(399_999) == pytest.approx(1e-6, rel=1e-3)
    assert all(lr(s) >= lr(s + 1000) for s in range(500, 399_000, 1000))  # monotone decay

    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=5e-3)
    schedule = FairseqCosineSchedule(opt, **RECIPE)
    seen = []
    for _ in range(600):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert seen == pytest.approx([lr(s) for s in range(600)])
    state = schedule.state_dict()
    fresh_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=5e-3)
    fresh = FairseqCosineSchedule(fresh_opt, **RECIPE)
    fresh.load_state_dict(state)
    fresh.step()
    schedule.step()
    assert fresh_opt.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    shifted = FairseqCosineSchedule(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=5e-3), offset=250, **RECIPE)
    assert shifted.get_last_lr()[0] == pytest.approx(lr(250))


def test_candidate_entropy_flags_the_constant_solution():
    mask = torch.ones(2, 3, 5, dtype=torch.bool)
    mean, std = candidate_entropy(torch.zeros(2, 3, 5, 11), mask)
    assert mean.item() == pytest.approx(math.log(11)) and std.item() == pytest.approx(0.0, abs=1e-6)
    mean, std = candidate_entropy(torch.randn(2, 3, 5, 11, generator=torch.Generator().manual_seed(0)) * 3, mask)
    assert mean.item() < math.log(11) and std.item() > 0.1
    assert math.isnan(candidate_entropy(torch.zeros(1, 1, 1, 11), torch.zeros(1, 1, 1, dtype=torch.bool))[0])


def test_wandb_mode_is_offline_without_a_key():
    assert wandb_mode("auto", {}) == "offline"
    assert wandb_mode("auto", {"WANDB_API_KEY": "x"}) == "online"
    assert wandb_mode("auto", {"WANDB_API_KEY": "x", "WANDB_MODE": "offline"}) == "offline"
    assert wandb_mode("disabled", {"WANDB_API_KEY": "x"}) == "disabled"


def test_bad_model_options_are_one_line_errors():
    with pytest.raises(ToolkitError, match="unknown Wav2VecConfig field"):
        Wav2VecPretraining(preset="tiny", architecture={"channels": 3})
    with pytest.raises(ToolkitError, match="must exceed min_lr"):
        Wav2VecPretraining(preset="tiny", lr=1e-9)
    with pytest.raises(ToolkitError, match="no such checkpoint"):
        Wav2VecPretraining(init_from="/nonexistent/model.pt")


# -- training behaviour ----------------------------------------------------------------------------


def test_nonfinite_step_is_skipped_and_counted(tmp_path):
    module = Wav2VecPretraining(preset="tiny", lr=1e-3, warmup_updates=2, max_updates=100)
    snaps = Snapshots()
    t = trainer(tmp_path, 4, [snaps])
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    t.fit(module, batches(4, nan_at=2))
    assert t.global_step == 4
    assert module.skipped_steps == 1
    assert t.callback_metrics["train/skipped_steps"].item() == 1
    changed = [any(not torch.equal(a[k], b[k]) for k in a) for a, b in zip([before] + snaps.params, snaps.params)]
    assert changed == [True, True, False, True]  # step 3 (the NaN batch) left every weight untouched
    for p in module.model.parameters():
        assert torch.isfinite(p).all()
        state = t.optimizers[0].state[p]
        assert torch.isfinite(state["exp_avg"]).all() and int(state["step"]) == 3  # Adam saw 3 updates


def test_fp16_autocast_keeps_the_loss_finite_and_float32(tmp_path):
    module = Wav2VecPretraining(preset="tiny", lr=1e-3, warmup_updates=2, max_updates=100)
    batch = next(iter(batches(1)))
    with torch.autocast("cpu", dtype=torch.float16):
        out = module.compute(batch)
        encoded = module.model.encode(batch["audio"], batch["lengths"])[:3]
        assert torch.float16 in {x.dtype for x in encoded}  # autocast is on inside the network
    assert out["logits"].dtype == torch.float32 and out["loss_sum"].dtype == torch.float32
    assert torch.isfinite(out["loss_sum"]) and out["sample_size"] > 0
    # Mixed precision end to end through Lightning. On CPU Lightning swaps "16-mixed" for
    # "bf16-mixed" (fp16 AMP + GradScaler is CUDA-only there); the fp16 path is checked above.
    t = trainer(tmp_path, 6, precision="bf16-mixed")
    t.fit(module, batches(6))
    assert module.skipped_steps == 0
    assert math.isfinite(t.callback_metrics["train/loss"].item())
    assert all(torch.isfinite(p).all() for p in module.model.parameters())


def test_continued_pretraining_from_toolkit_checkpoint_with_frozen_encoder(tmp_path):
    source = wav2vec_tiny()
    save_model(tmp_path / "init.pt", source, step=1234)
    module = Wav2VecPretraining(init_from=str(tmp_path / "init.pt"), freeze_feature_encoder=True, lr=1e-3,
                                warmup_updates=2, max_updates=100)
    for k, v in source.state_dict().items():
        assert torch.equal(module.model.state_dict()[k], v)
    trainer(tmp_path, 3).fit(module, batches(3))
    after = module.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in source.state_dict().items() if k.startswith("encoder."))
    assert any(not torch.equal(after[k], v) for k, v in source.state_dict().items() if k.startswith("context."))
    with pytest.raises(ToolkitError, match="cannot be combined"):
        Wav2VecPretraining(init_from=str(tmp_path / "init.pt"), architecture={"dropout": 0.1})


def test_checkpoints_keep_last_k_load_safely_and_continue_optimizer_state(tmp_path):
    module = Wav2VecPretraining(preset="tiny", lr=1e-3, warmup_updates=2, max_updates=100)
    ckpt_dir = tmp_path / "ckpts"
    t = trainer(tmp_path, 7, [StepCheckpoint(str(ckpt_dir), every_n_steps=2, keep_last=2), ThroughputMonitor(),
                              CollapseDetector()])
    t.fit(module, batches(7))
    files = list_checkpoints(ckpt_dir)
    assert [p.name for p in files] == ["step-000000006.ckpt", "step-000000007.ckpt"]  # every 2 + the end
    raw = torch.load(files[-1], weights_only=True)  # plain types only
    assert raw["toolkit"]["step"] == 7 and raw["toolkit"]["format"] == "wav2vec-toolkit"
    assert raw["hyper_parameters"]["preset"] == "tiny"
    assert raw["toolkit_training"] == {"skipped_steps": 0}
    assert t.callback_metrics["train/audio_sec_per_sec"].item() > 0
    loaded = load_model(files[-1])
    for k, v in module.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)

    # A truncated newer file is ignored by resume.
    (ckpt_dir / "step-000000009.ckpt").write_bytes(files[-1].read_bytes()[:1000])
    assert find_latest_checkpoint(ckpt_dir) == files[-1]

    # Continue from the Lightning checkpoint keeping Adam's moments and the schedule position.
    cont = Wav2VecPretraining(init_from=str(files[-1]), reset_optimizer=False, reset_schedule=False, lr=1e-3,
                              warmup_updates=2, max_updates=100)
    t2 = trainer(tmp_path, 1)
    t2.fit(cont, batches(1))
    state = t2.optimizers[0].state[next(iter(cont.model.parameters()))]
    assert int(state["step"]) == 8  # 7 restored + 1
    assert t2.lr_scheduler_configs[0].scheduler.offset == 7


def test_collapse_detector_reports_the_constant_solution(tmp_path):
    module = Wav2VecPretraining(preset="tiny", lr=1e-8, min_lr=1e-9, warmup_updates=1, max_updates=100)
    with torch.no_grad():  # zero step projections: every logit 0, the constant solution
        module.model.prediction.weight.zero_()
        module.model.prediction.bias.zero_()
    detector = CollapseDetector(patience=2, stop_after=3)
    t = trainer(tmp_path, 6, [detector])
    with pytest.warns(UserWarning, match="constant solution"):
        t.fit(module, batches(6))
    assert detector.collapsed_steps == 3 and t.global_step == 3  # stopped by collapse.stop_after
    assert t.callback_metrics["train/collapsed"].item() == 1.0


def _curve_mos_set(tmp_path) -> Path:
    """9 rated clips: four systems of two clips and one system with a single clip."""
    rng = np.random.default_rng(1)
    rows = ["path,mos,system"]
    for i in range(9):
        clip = synth_clip(rng, 1.0)
        noisy = clip + (i / 9) * rng.standard_normal(clip.shape).astype(np.float32) * 0.2
        sf.write(tmp_path / f"c{i}.wav", noisy, 16000)
        rows.append(f"c{i}.wav,{5 - i / 2:.2f},{'solo' if i == 8 else f'sys{i % 4}'}")
    (tmp_path / "mos.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "mos.csv"


def test_adaptation_curve_equals_toolkit_evaluate_and_reaches_wandb(tmp_path, monkeypatch):
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    from toolkit.cli import main

    wandb.finish()  # a run left open by an earlier test would be reused by the logger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    mos = _curve_mos_set(tmp_path)
    measures = ["entropy.mean", "loss_bce"]
    curve = AdaptationCurve(f"csv:{mos}", every_n_steps=2, measures=measures, output=str(tmp_path / "curve"))
    module = Wav2VecPretraining(preset="tiny", lr=1e-3, warmup_updates=2, max_updates=100)
    logger = WandbLogger(project="curve-test", save_dir=str(tmp_path), offline=True)
    t = pl.Trainer(accelerator="cpu", devices=1, max_steps=4, logger=logger, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                   callbacks=[curve], log_every_n_steps=1)
    t.fit(module, batches(4))
    run_dir = Path(logger.experiment.dir).parent
    logger.experiment.finish()
    assert module.model.training  # scoring put the model back in train mode
    assert sorted({r["step"] for r in curve.history}) == [0, 2, 4]
    ckpt = save_model(tmp_path / "step4.pt", module.model, step=4)

    # The same checkpoint and set through `toolkit evaluate`: every figure of the last point equals.
    assert main(["evaluate", str(ckpt), "--dataset", f"csv:{mos}", "--measures", ",".join(measures),
                 "--draws", "1", "--seed", "0", "--device", "cpu", "--bootstrap", "10", "--no-plots",
                 "--no-progress", "--wandb-mode", "disabled", "--output", str(tmp_path / "eval")]) == 0
    with open(tmp_path / "eval" / "results.csv", newline="") as handle:
        evaluated = {(r["measure"], r["level"]): r for r in csv.DictReader(handle) if r["scorer"] != "random-init"}
    last = {(r["measure"], r["level"]): r for r in curve.history if r["step"] == 4}
    assert set(last) == {(m, lvl) for m in measures for lvl in ("utterance", "system")} == set(evaluated)
    for key, row in last.items():
        assert row["n"] == int(evaluated[key]["n"]), key  # system level: the one-clip system left out (n=4)
        assert row["srcc"] == pytest.approx(float(evaluated[key]["srcc"]), abs=1e-6), key
    assert last[("loss_bce", "system")]["n"] == 4

    # The curve's points went to the real (offline) W&B run at their steps.
    history = read_wandb_history(run_dir)
    logged = {(r["trainer/global_step"], k): v for r in history for k, v in r.items() if k.startswith("adaptation/")}
    for r in curve.history:
        key = (r["step"], f"adaptation/{r['measure']}/srcc_{'utt' if r['level'] == 'utterance' else 'sys'}")
        assert logged[key] == pytest.approx(r["srcc"], abs=1e-9), key
    text = (tmp_path / "curve" / "curve.csv").read_text().splitlines()
    assert text[0] == "step,measure,level,n,srcc" and len(text) == 1 + len(curve.history)
    assert (tmp_path / "curve" / "curve.png").stat().st_size > 1000
