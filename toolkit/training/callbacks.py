"""Callbacks and the checkpoint writer used by ``toolkit pretrain``.

- :class:`AtomicCheckpointIO`: every checkpoint is written to a temporary file beside its final
  name, fsynced, then renamed. A crash or SIGKILL mid-write leaves the previous checkpoints intact
  and at most a ``.tmp`` file, which is ignored and cleaned up later. (Lightning's own writer goes
  through an fsspec transaction whose temporary file lives in the system temp dir: the final move
  is a copy, not an atomic rename, whenever that is another filesystem, and nothing is fsynced.)
- :class:`StepCheckpoint`: a checkpoint every N optimizer steps, at the end of training and on
  SIGTERM; keeps the last K, preemption checkpoints included (rules in :mod:`toolkit.checkpoints`).
- :class:`ThroughputMonitor`: audio seconds processed per wall-clock second, all ranks together.
- :class:`CollapseDetector`: flags the constant solution (candidate entropy with ~zero spread).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn

from toolkit import checkpoints
from toolkit.audio import SAMPLE_RATE
from toolkit.errors import ToolkitError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Checkpoints (the rules live in toolkit.checkpoints)
# --------------------------------------------------------------------------------------------


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: writes through :func:`toolkit.checkpoints.atomic_torch_save`, reads
    through :func:`toolkit.models.checkpoint.safe_torch_load` (the allow-listed ``weights_only`` load:
    a resumed file that would run code, or a damaged one, is a one-line error naming it)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        checkpoints.atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        # On CPU, always: Lightning copies the states into the module and moves the optimizer's.
        from toolkit.models.checkpoint import safe_torch_load

        return safe_torch_load(path)


class StepCheckpoint(pl.Callback):
    """Checkpoint every ``every_n_steps`` optimizer steps, at the end, and on SIGTERM; keep the last K.

    Files are ``<dirpath>/step-<global step, 9 digits>.ckpt``, written once (by global rank 0)
    through the trainer's checkpoint I/O (:class:`AtomicCheckpointIO` under ``toolkit pretrain``).
    Older files are deleted only after the new one is complete: the newest ``keep_last`` of the
    run's checkpoints are kept, counting the preemption checkpoints (``<root>/hpc_ckpt_*.ckpt``) too
    (:func:`toolkit.checkpoints.prune_checkpoints`).

    Args:
        dirpath: Where to write; default ``<trainer.default_root_dir>/checkpoints``.
        every_n_steps: Interval in optimizer steps (0: only at the end and on SIGTERM).
        keep_last: How many of the newest checkpoints to keep (at least 1).
        save_on_sigterm: Write a checkpoint when training stops because of SIGTERM.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_steps: int = 1000,
        keep_last: int = 3,
        save_on_sigterm: bool = True,
    ) -> None:
        if keep_last < 1:
            raise ToolkitError("checkpoint.keep_last", f"must be at least 1, got {keep_last}")
        if every_n_steps < 0:
            raise ToolkitError("checkpoint.every_n_steps", f"must be >= 0, got {every_n_steps}")
        self.dirpath = dirpath
        self.every_n_steps = every_n_steps
        self.keep_last = keep_last
        self.save_on_sigterm = save_on_sigterm
        self._last_saved_step: int | None = None
        self._root_dir: str | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._root_dir = trainer.default_root_dir
        if self.dirpath is None:
            self.dirpath = str(checkpoints.run_folders(trainer.default_root_dir)[0])

    def checkpoint_path(self, step: int) -> Path:
        return Path(self.dirpath) / checkpoints.step_file_name(step)

    def save(self, trainer: pl.Trainer) -> Path:
        step = int(trainer.global_step)
        path = self.checkpoint_path(step)
        trainer.save_checkpoint(path, weights_only=False)  # all ranks; only global rank 0 writes
        self._last_saved_step = step
        if trainer.is_global_zero:
            self._prune()
            rank_zero_info(f"checkpoint: {path}")
        return path

    def _prune(self) -> None:
        folders = checkpoints.run_folders(self._root_dir or Path(self.dirpath).parent, self.dirpath)
        checkpoints.prune_checkpoints(folders, self.keep_last)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_saved_step:
            self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._last_saved_step and trainer.global_step > 0:
            self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not self.save_on_sigterm or not isinstance(exception, SIGTERMException):
            return
        if trainer.global_step != self._last_saved_step and trainer.global_step > 0:
            rank_zero_info("SIGTERM: writing a checkpoint before exiting")
            self.save(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"last_saved_step": self._last_saved_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_saved_step = state_dict.get("last_saved_step")


# --------------------------------------------------------------------------------------------
# Monitoring
# --------------------------------------------------------------------------------------------


class ThroughputMonitor(pl.Callback):
    """Logs ``train/audio_sec_per_sec``: audio seconds of the batch over wall time since the last
    batch ended (data loading included), summed over ranks; and ``train/audio_hours`` seen so far.

    Args:
        sample_rate: Rate of ``batch["lengths"]`` (samples per second).
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        self._last: float | None = None
        self.audio_seconds = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        elapsed = max(now - (self._last or now), 1e-9)
        self._last = now
        seconds = float(batch["lengths"].sum()) / self.sample_rate
        self.audio_seconds += seconds * trainer.world_size  # approximate: ranks see similar batches
        batch_size = int(batch["lengths"].shape[0])
        rate = torch.tensor(seconds / elapsed, device=pl_module.device)
        pl_module.log("train/audio_sec_per_sec", rate, reduce_fx="sum", sync_dist=True, batch_size=batch_size)
        pl_module.log("train/audio_hours", self.audio_seconds / 3600, batch_size=batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"audio_seconds": self.audio_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.audio_seconds = float(state_dict.get("audio_seconds", 0.0))


class CollapseDetector(pl.Callback):
    """Detects the constant solution: every candidate equally likely, whatever the input.

    There the softmax entropy over the 1 + N candidates is ``ln(1 + N)`` for every prediction, so its
    spread across the batch (``train/entropy_std``, computed by the module) is ~0. Logs
    ``train/collapsed`` (1.0 while collapsed) and ``train/collapsed_steps``; warns when a collapse
    lasts ``patience`` steps and when it ends.

    Args:
        entropy_std_threshold: Spread (nats) below which a step counts as collapsed.
        patience: Consecutive collapsed steps before warning.
        stop_after: Stop training after this many consecutive collapsed steps (``null``: never).
    """

    def __init__(self, entropy_std_threshold: float = 0.01, patience: int = 20, stop_after: int | None = None) -> None:
        self.threshold = entropy_std_threshold
        self.patience = patience
        self.stop_after = stop_after
        self.run_length = 0
        self.collapsed_steps = 0
        self.warned = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(outputs, dict) or "entropy_std" not in outputs:
            return
        std = float(outputs["entropy_std"])
        collapsed = std == std and std < self.threshold  # NaN (no predictions) is not a collapse
        if collapsed:
            self.run_length += 1
            self.collapsed_steps += 1
            if self.run_length >= self.patience and not self.warned:
                rank_zero_warn(
                    f"step {trainer.global_step}: training sits on the constant solution "
                    f"(candidate-entropy spread {std:.2g} < {self.threshold}) for {self.run_length} steps; "
                    "checkpoints from here score nothing"
                )
                self.warned = True
        else:
            if self.warned:
                rank_zero_info(f"step {trainer.global_step}: left the constant solution after {self.run_length} steps")
            self.run_length = 0
            self.warned = False
        pl_module.log("train/collapsed", float(collapsed))
        pl_module.log("train/collapsed_steps", float(self.collapsed_steps))
        if self.stop_after is not None:
            # Ranks see different batches: stop when any rank has been collapsed long enough.
            stop = trainer.strategy.reduce_boolean_decision(self.run_length >= self.stop_after, all=False)
            if stop:
                rank_zero_warn(f"collapsed for {self.stop_after}+ steps: stopping (collapse.stop_after)")
                trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"run_length": self.run_length, "collapsed_steps": self.collapsed_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.run_length = int(state_dict.get("run_length", 0))
        self.collapsed_steps = int(state_dict.get("collapsed_steps", 0))
