"""Preemption on SLURM: checkpoint on SIGUSR1 at a step boundary that every rank agrees on, then requeue.

SLURM warns a job before its time limit or a preemption with a signal (``#SBATCH
--signal=SIGUSR1@300`` in ``slurm/pretrain.sbatch``); the signal reaches every task at slightly
different moments. Lightning's own auto-requeue writes the checkpoint *inside* the signal handler,
which holds a collective (barrier); with DDP, another rank may be inside a gradient all-reduce at
that moment, and the job hangs until it is killed (seen on the local 2-node test cluster).

:class:`SlurmPreemption` only sets a flag in the handler. After every training step the ranks sum
their flags (one scalar all-reduce); when any rank was signalled, all ranks write
``<default_root_dir>/hpc_ckpt_<step>.ckpt`` together, global rank 0 runs ``scontrol requeue``, and
training stops. The requeued job resumes from the newest complete checkpoint
(``toolkit submit newest-checkpoint``), so the global step continues.

Add it to a run with ``--trainer.callbacks+=toolkit.preemption.SlurmPreemption`` (the pretraining
template does). Registering its handler first also stops Lightning from installing its own.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from typing import Any

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


def slurm_job_id(environ: dict[str, str] | None = None) -> str | None:
    """The id ``scontrol requeue`` needs: ``ARRAYJOB_TASK`` for array tasks, else the job id."""
    environ = os.environ if environ is None else environ
    array, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array}_{task}" if array and task else environ.get("SLURM_JOB_ID")
    return job if job and re.fullmatch(r"\d+(_\d+)?", job) else None


class SlurmPreemption(pl.Callback):
    """Checkpoint and requeue when SLURM signals (see the module docstring).

    Args:
        signal_name: The signal SLURM sends (``--signal=NAME@SECONDS``), default ``SIGUSR1``.
        requeue: Run ``scontrol requeue`` (global rank 0) after the checkpoint; off: just stop.
    """

    def __init__(self, signal_name: str = "SIGUSR1", requeue: bool = True) -> None:
        try:
            self.signum = signal.Signals[signal_name.upper()]
        except KeyError:
            raise ValueError(f"unknown signal {signal_name!r}") from None
        self.requeue = requeue
        self.received = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = True  # nothing else here: the collective work happens at the next step boundary

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Before Trainer._run registers its handlers: Lightning skips a signal that already has one.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._handler)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(self.signum, self._previous)
            self._previous = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        flag = torch.tensor(1.0 if self.received else 0.0, device=pl_module.device)
        flag = trainer.strategy.reduce(flag, reduce_op="sum")  # every rank, every step: same collective order
        if float(flag) == 0.0:
            return
        path = os.path.join(trainer.default_root_dir, f"hpc_ckpt_{trainer.global_step}.ckpt")
        trainer.save_checkpoint(path)  # all ranks; global rank 0 writes
        job = slurm_job_id()
        if trainer.is_global_zero:
            log.warning("%s: checkpoint %s written at step %d", self.signum.name, path, trainer.global_step)
            print(f"preemption: {self.signum.name} -> checkpoint {path} (step {trainer.global_step})", flush=True)
            if self.requeue and job is not None:
                done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
                outcome = "requeued" if done.returncode == 0 else f"requeue failed: {done.stderr.strip()}"
                print(f"preemption: job {job} {outcome}", flush=True)
        self.received = False
        trainer.should_stop = True
