"""The contrastive pretraining LightningModule, its learning-rate schedule and per-batch statistics.

The module is thin: it builds (or loads) a :class:`~toolkit.models.wav2vec.Wav2VecModel`, runs it
on a batch ``{"audio": [B, T] float32, "lengths": [B] int64, "keys": [...]}`` and optimises
fairseq's objective (:func:`toolkit.models.loss.contrastive_loss`).

Loss and its normalisation (fairseq's ``wav2vec`` criterion)
    ``loss_sum`` is the BCE (or InfoNCE) **summed** over every valid prediction ``(b, k, t)`` and,
    for BCE, over its positive and ``N`` negatives. ``sample_size`` is the number of valid
    predictions. fairseq divides the summed gradient of all GPUs by the summed ``sample_size`` of
    all GPUs; DDP averages gradients over ``W`` ranks, so each rank back-propagates
    ``loss_sum * W / global_sample_size`` and the update is exactly fairseq's. ``train/loss`` is
    ``loss_sum / sample_size`` of the rank's batch, in nats per prediction (fairseq's log shows the
    same number divided by ln 2, in bits).

Non-finite steps are skipped, not applied
    Automatic optimisation. After backward (and after DDP's all-reduce, and after fp16 unscaling),
    :meth:`Wav2VecPretraining.on_before_optimizer_step` checks the global gradient norm. If it is
    not finite, every gradient is dropped, so Adam leaves the weights and its moments untouched;
    the step is counted in ``train/skipped_steps``. A non-finite *loss* on any rank is turned into
    NaN gradients on purpose (``loss * nan``): the all-reduce then carries the NaN to every rank,
    so all ranks skip the same step and stay in sync with no extra communication. The learning-rate
    schedule and ``global_step`` still advance (a skipped step is an attempted update). fp16
    loss-scale overflows of the GradScaler are counted the same way.

Mixed precision
    ``bf16-mixed`` is the recommended setting on GPUs. ``16-mixed`` (fp16) is made safe by keeping
    the numerically fragile parts in float32: group norm (the model's ``MaskedGroupNorm`` computes
    in fp32), the log compression of the features, the contrastive logits (dot products of
    512-channel vectors overflow fp16's 65,504) and the loss; Lightning's GradScaler scales the
    loss and skips overflowing steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor

from toolkit.errors import CheckpointError, ToolkitError
from toolkit.models.loss import contrastive_accuracy, contrastive_loss
from toolkit.models.wav2vec import PRESETS, Wav2VecConfig, Wav2VecModel, build_preset, wav2vec_model

log = logging.getLogger(__name__)

HEADER_KEY = "toolkit"
TRAINING_STATE_KEY = "toolkit_training"


# --------------------------------------------------------------------------------------------
# Pure functions: schedule and batch statistics
# --------------------------------------------------------------------------------------------


def fairseq_cosine_lr(
    step: int,
    *,
    max_lr: float,
    warmup_updates: int,
    warmup_init_lr: float,
    min_lr: float,
    max_updates: int,
) -> float:
    """fairseq's ``cosine`` scheduler (``t_mult=1``, ``lr_shrink=1``) at update ``step``.

    Linear warm-up from ``warmup_init_lr`` to ``max_lr`` over ``warmup_updates``, then one cosine
    half-period from ``max_lr`` down to ``min_lr`` over ``max_updates - warmup_updates`` updates
    (the period restarts after that, as in fairseq).
    """
    if step < warmup_updates:
        return warmup_init_lr + step * (max_lr - warmup_init_lr) / warmup_updates
    period = max(max_updates - warmup_updates, 1)
    t_curr = (step - warmup_updates) % period
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * t_curr / period))


class FairseqCosineSchedule(torch.optim.lr_scheduler.LRScheduler):
    """:func:`fairseq_cosine_lr` as a per-update scheduler; ``offset`` shifts its position.

    Its state is plain numbers, so checkpoints load with ``torch.load(weights_only=True)``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        max_lr: float,
        warmup_updates: int,
        warmup_init_lr: float,
        min_lr: float,
        max_updates: int,
        offset: int = 0,
        last_epoch: int = -1,
    ) -> None:
        self.max_lr = max_lr
        self.warmup_updates = warmup_updates
        self.warmup_init_lr = warmup_init_lr
        self.min_lr = min_lr
        self.max_updates = max_updates
        self.offset = offset
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        lr = fairseq_cosine_lr(
            self.last_epoch + self.offset,
            max_lr=self.max_lr,
            warmup_updates=self.warmup_updates,
            warmup_init_lr=self.warmup_init_lr,
            min_lr=self.min_lr,
            max_updates=self.max_updates,
        )
        return [lr for _ in self.optimizer.param_groups]


@torch.no_grad()
def candidate_entropy(logits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of the softmax entropy over candidates, valid predictions only.

    ``logits`` ``[B, K, T, 1+N]``, ``mask`` ``[B, K, T]``. The constant solution (every candidate
    equally likely everywhere) has mean ``ln(1+N)`` and standard deviation 0: the signature of the
    collapse described in ``shared/notes/calibration.md``. Returns two float32 scalars (NaN when
    ``mask`` is empty).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)[mask]  # [valid]
    if entropy.numel() == 0:
        nan = torch.tensor(float("nan"), device=logits.device)
        return nan, nan
    std = entropy.std(unbiased=False)
    return entropy.mean(), std


# --------------------------------------------------------------------------------------------
# Model construction and initialisation
# --------------------------------------------------------------------------------------------


def build_model(preset: str, architecture: dict[str, Any] | None) -> Wav2VecModel:
    """A fresh model: the ``preset`` architecture with ``architecture`` fields overriding it."""
    if preset not in PRESETS:
        raise ToolkitError("model.preset", f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if not architecture:
        return build_preset(preset)
    known = {f.name for f in dataclasses.fields(Wav2VecConfig)}
    unknown = sorted(set(architecture) - known)
    if unknown:
        raise ToolkitError("model.architecture", f"unknown Wav2VecConfig field(s): {', '.join(unknown)}")
    base = build_preset(preset).config
    try:
        return wav2vec_model(base, **architecture)
    except (TypeError, ValueError) as err:
        raise ToolkitError("model.architecture", str(err)) from None


def load_initial_model(path: str) -> Wav2VecModel:
    """The model stored at ``path``: a toolkit ``.pt``, a Lightning ``.ckpt`` with a toolkit
    header, or an imported fairseq wav2vec checkpoint (see :mod:`toolkit.models.checkpoint`)."""
    if not os.path.exists(path):
        raise CheckpointError(path, "no such checkpoint (model.init_from)")
    from toolkit.models.checkpoint import load_model

    return load_model(path, map_location="cpu")


# --------------------------------------------------------------------------------------------
# The LightningModule
# --------------------------------------------------------------------------------------------


class Wav2VecPretraining(pl.LightningModule):
    """wav2vec (v1) contrastive pretraining, from scratch or continued from a checkpoint.

    Defaults reproduce fairseq's ``wav2vec_large`` recipe: Adam (betas 0.9/0.999, eps 1e-8, no
    weight decay), cosine schedule with 500 warm-up updates from 1e-7 to 5e-3, then down to
    1e-6 at 400k updates (fairseq ``--min-lr 1e-06``; its ``--stop-min-lr 1e-09`` is
    ``stop_min_lr`` here), BCE over 1 positive and 10 negatives.

    Args:
        preset: Architecture to build (``large`` = fairseq's released wav2vec_large, 32.5M
            parameters; ``medium``, ``small``, ``tiny``). Ignored with ``init_from``.
        architecture: Overrides of :class:`~toolkit.models.wav2vec.Wav2VecConfig` fields on top of
            the preset, e.g. ``{num_negatives: 10, prediction_steps: 12, dropout: 0.1}``.
        loss: ``bce`` (fairseq's default: binary cross-entropy of every candidate, summed) or
            ``infonce`` (softmax cross-entropy over the 1 + N candidates).
        balanced: BCE only: weight each negative by 1/N (fairseq ``balanced_classes``).
        negatives: ``uniform`` draws distractors within each utterance's valid frames (right for
            padded batches); ``fairseq`` reproduces fairseq's draw over the padded length.
        lr: Peak learning rate (fairseq ``--lr`` with the cosine scheduler).
        warmup_updates: Linear warm-up length in updates (fairseq ``--warmup-updates``).
        warmup_init_lr: Learning rate at update 0 (fairseq ``--warmup-init-lr``).
        min_lr: Floor of the cosine (fairseq ``--min-lr``).
        stop_min_lr: Stop training once the learning rate falls below this (fairseq
            ``--stop-min-lr``).
        max_updates: Length of the cosine schedule in updates (fairseq ``--max-update``). Default:
            the trainer's ``max_steps``, so one number sets both; set it only for a schedule that
            should not end where training stops.
        adam_betas: Adam betas (fairseq ``--adam-betas``).
        adam_eps: Adam epsilon (fairseq ``--adam-eps``).
        weight_decay: Adam weight decay (fairseq ``--weight-decay``).
        init_from: Continue pretraining from this checkpoint: a toolkit ``.pt`` (e.g. made by
            ``toolkit import-fairseq wav2vec_large.pt``) or a toolkit Lightning ``.ckpt``. The
            architecture comes from the checkpoint.
        reset_optimizer: With ``init_from`` a Lightning ``.ckpt``: start Adam's moments afresh
            (``true``) or load them from the checkpoint (``false``).
        reset_schedule: With ``init_from``: start the schedule at update 0 (warm-up again), or
            continue it from the checkpoint's step.
        freeze_feature_encoder: Keep the convolutional feature encoder fixed; train only the
            context network and the step predictions.
        seed: Seed of the negative sampling. Negatives at a global step depend only on
            ``(seed, global step, rank)``, so a resumed run draws what the uninterrupted run drew.
    """

    def __init__(
        self,
        preset: Literal["large", "medium", "small", "tiny"] = "large",
        architecture: dict[str, Any] | None = None,
        loss: Literal["bce", "infonce"] = "bce",
        balanced: bool = False,
        negatives: Literal["uniform", "fairseq"] = "uniform",
        lr: float = 5e-3,
        warmup_updates: int = 500,
        warmup_init_lr: float = 1e-7,
        min_lr: float = 1e-6,
        stop_min_lr: float = 1e-9,
        max_updates: int | None = None,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
        weight_decay: float = 0.0,
        init_from: str | None = None,
        reset_optimizer: bool = True,
        reset_schedule: bool = True,
        freeze_feature_encoder: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if lr <= min_lr:
            raise ToolkitError("model.lr", f"peak lr {lr} must exceed min_lr {min_lr}")
        if warmup_updates < 0 or (max_updates is not None and max_updates <= warmup_updates):
            raise ToolkitError("model.max_updates", "must exceed warmup_updates (and both be >= 0)")
        self.save_hyperparameters()
        self._init_step = 0
        self._init_optimizer_state: dict | None = None
        if init_from:
            if architecture:
                raise ToolkitError("model.architecture", "cannot be combined with init_from (the checkpoint fixes it)")
            self.model = load_initial_model(init_from).train()
            self._read_init_training_state(init_from)
        else:
            self.model = build_model(preset, architecture)
        if freeze_feature_encoder:
            self.model.encoder.requires_grad_(False)
        self.skipped_steps = 0
        self.last_step_skipped = False
        self._loss_nonfinite = False

    # -- initialisation from a checkpoint ------------------------------------------------------

    def _read_init_training_state(self, path: str) -> None:
        """Step (for ``reset_schedule=false``) and Adam state (``reset_optimizer=false``)."""
        hp = self.hparams
        if hp.reset_schedule and hp.reset_optimizer:
            return
        from toolkit.models.checkpoint import safe_torch_load

        ckpt = safe_torch_load(path)
        header = ckpt.get(HEADER_KEY, ckpt)
        self._init_step = int(header.get("step") or ckpt.get("global_step") or 0)
        if not hp.reset_optimizer:
            states = ckpt.get("optimizer_states")
            if not states:
                raise CheckpointError(path, "has no optimizer state (use reset_optimizer: true)")
            self._init_optimizer_state = states[0]

    def on_fit_start(self) -> None:
        # A resumed run restores its own optimizer state after this hook, overriding this one.
        if self._init_optimizer_state is not None:
            optimizer = self.trainer.optimizers[0]
            try:
                optimizer.load_state_dict(self._init_optimizer_state)
            except (ValueError, KeyError) as err:
                raise CheckpointError(self.hparams.init_from, f"optimizer state does not fit: {err}") from None
            self._init_optimizer_state = None

    # -- optimisation ---------------------------------------------------------------------------

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(
            params, lr=hp.lr, betas=tuple(hp.adam_betas), eps=hp.adam_eps, weight_decay=hp.weight_decay
        )
        schedule = FairseqCosineSchedule(
            optimizer,
            max_lr=hp.lr,
            warmup_updates=hp.warmup_updates,
            warmup_init_lr=hp.warmup_init_lr,
            min_lr=hp.min_lr,
            max_updates=self.schedule_length(),
            offset=0 if hp.reset_schedule else self._init_step,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def schedule_length(self) -> int:
        """``model.max_updates``, or else the trainer's ``max_steps``."""
        hp = self.hparams
        length = hp.max_updates
        if length is None:
            length = self.trainer.max_steps if self._trainer is not None else -1
            if length is None or length < 0:
                raise ToolkitError("trainer.max_steps", "the learning-rate schedule needs a length: set "
                                   "trainer.max_steps (or model.max_updates)")
        if length <= hp.warmup_updates:
            raise ToolkitError("model.max_updates" if hp.max_updates is not None else "trainer.max_steps",
                               f"{length} updates do not exceed the {hp.warmup_updates} warm-up updates")
        return int(length)

    def _generator(self) -> torch.Generator:
        """Negative-sampling generator for this (seed, global step, rank)."""
        g = torch.Generator(device=self.device)
        g.manual_seed((self.hparams.seed * 1_000_003 + self.global_step) * 1_009 + self.global_rank)
        return g

    def compute(self, batch: dict) -> dict[str, Tensor]:
        """Forward and loss on one batch; contrastive logits and loss are always float32."""
        audio: Tensor = batch["audio"]  # [B, T]
        lengths: Tensor = batch["lengths"]  # [B]
        z, c, predictions, frame_lengths = self.model.encode(audio, lengths)
        negatives = self.hparams.negatives
        generator = self._generator()
        idx = self.model.sample_negatives(frame_lengths, z.shape[-1], generator, negatives)
        autocast_off = (
            torch.autocast(device_type=self.device.type, enabled=False)
            if torch.is_autocast_enabled(self.device.type)
            else contextlib.nullcontext()
        )
        with autocast_off:
            logits, mask = self.model.contrastive_logits(z.float(), predictions.float(), frame_lengths, idx)
            loss_sum, sample_size = contrastive_loss(logits, mask, self.hparams.loss, self.hparams.balanced)
        return {"logits": logits, "mask": mask, "loss_sum": loss_sum, "sample_size": sample_size}

    def training_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        out = self.compute(batch)
        loss_sum, sample_size = out["loss_sum"], out["sample_size"]
        if batch.get("dummy", False):
            # A rank that ran out of data repeats a batch so that DDP stays in step: no contribution.
            loss_sum, sample_size = loss_sum * 0.0, sample_size * 0.0
        world = self.trainer.world_size if self._trainer is not None else 1
        global_size = sample_size.detach().clone()
        if world > 1:
            torch.distributed.all_reduce(global_size)
        objective = loss_sum * world / global_size.clamp(min=1)
        local_loss = loss_sum.detach() / sample_size.clamp(min=1)
        self._loss_nonfinite = not bool(torch.isfinite(objective).item()) or float(global_size) == 0
        if self._loss_nonfinite:
            # NaN gradients on purpose: DDP's all-reduce spreads them, every rank then skips.
            objective = objective * float("nan")

        batch_size = int(batch["lengths"].shape[0])
        logits, mask = out["logits"].detach(), out["mask"]
        acc = contrastive_accuracy(logits, mask)  # [K]
        entropy_mean, entropy_std = candidate_entropy(logits, mask)
        self.log("train/loss", local_loss, prog_bar=True, batch_size=batch_size)
        self.log("train/acc", acc.mean(), batch_size=batch_size)
        for k, value in enumerate(acc.tolist(), start=1):
            self.log(f"train/acc_step{k}", value, batch_size=batch_size)
        self.log("train/entropy_mean", entropy_mean, batch_size=batch_size)
        self.log("train/entropy_std", entropy_std, batch_size=batch_size)
        self.log("train/sample_size", sample_size, batch_size=batch_size)
        return {
            "loss": objective,
            "train_loss": local_loss,
            "accuracy": acc.mean(),
            "entropy_mean": entropy_mean,
            "entropy_std": entropy_std,
        }

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if batch.get("dummy", False):  # padding batch that keeps DDP ranks in step
            return
        out = self.compute(batch)
        size = out["sample_size"]
        batch_size = int(batch["lengths"].shape[0])
        self.log("val/loss", out["loss_sum"] / size.clamp(min=1), batch_size=batch_size, sync_dist=True)
        acc = contrastive_accuracy(out["logits"], out["mask"])
        self.log("val/acc", acc.mean(), batch_size=batch_size, sync_dist=True)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.tensor(0.0)
        skip = self._loss_nonfinite or not bool(torch.isfinite(norm).item())
        self.last_step_skipped = skip
        if skip:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
            self.skipped_steps += 1
            log.warning("step %d: non-finite loss or gradient, update skipped (%d so far)",
                        self.global_step, self.skipped_steps)
        else:
            self.log("train/grad_norm", norm)
        self.log("train/skipped_steps", float(self.skipped_steps))
        self.log("train/lr", optimizer.param_groups[0]["lr"])

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        if self.global_step > self.hparams.warmup_updates and lr < self.hparams.stop_min_lr:
            log.info("learning rate %.3g fell below stop_min_lr: stopping", lr)
            self.trainer.should_stop = True

    # -- checkpoints ------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from toolkit.models.checkpoint import checkpoint_header, training_objective

        objective = training_objective(self.hparams.loss, self.hparams.balanced)
        checkpoint[HEADER_KEY] = checkpoint_header(self.model.config, int(self.global_step), objective)
        checkpoint[TRAINING_STATE_KEY] = {"skipped_steps": int(self.skipped_steps)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(TRAINING_STATE_KEY) or {}
        self.skipped_steps = int(state.get("skipped_steps", 0))
