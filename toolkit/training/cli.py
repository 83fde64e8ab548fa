"""Contrastive wav2vec (v1) pretraining, configured by YAML (LightningCLI / jsonargparse).

Every option is a typed argument of a class: ``model.*`` (Wav2VecPretraining: architecture,
loss, Adam and its schedule, continued pretraining), ``data.*`` (AudioShardDataModule: shards,
crops, batch size in samples), ``trainer.*`` (Lightning's Trainer: devices, precision, steps,
gradient clipping), ``checkpoint.*`` (interval and how many to keep), ``collapse.*``,
``adaptation.*`` (SRCC on a held-out MOS set during training) and ``logging.*`` (CSV, W&B).
Values on the command line override the config files; `--print_config` shows the result.
The cosine schedule spans ``trainer.max_steps`` unless ``model.max_updates`` says otherwise.

Example:
  # pretrain the small preset on your shards for 2,000 steps
  toolkit pretrain --config toolkit/configs/pretrain/small.yaml \\
      --data.train_shards 'shards/en/shard-{000000..000009}.tar' --trainer.max_steps 2000

  # continue pretraining fairseq's wav2vec_large (imported with `toolkit import-fairseq`)
  toolkit pretrain --config toolkit/configs/pretrain/wav2vec_large.yaml \\
      --model.init_from wav2vec_large.toolkit.pt --model.freeze_feature_encoder true \\
      --data.train_shards 'shards/singing/shard-{000000..000099}.tar' \\
      --trainer.default_root_dir runs/singing

Resuming: a rerun of the same command continues from the newest complete checkpoint of the run
(`--resume auto`, the default: highest step among <trainer.default_root_dir>/checkpoints/step-*.ckpt
and the preemption checkpoints <trainer.default_root_dir>/hpc_ckpt_*.ckpt); `--resume PATH` names one,
`--resume none` starts afresh. Model, Adam, schedule, global step, counters and the data stream's
position are restored (see toolkit/training/__init__.py).
W&B logs offline by default (`wandb sync` later); `--logging.wandb online` (or WANDB_API_KEY in the
environment with `auto`) logs online. Keys are never written to configs or logs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, Literal

from toolkit.errors import ToolkitError

DEFAULT_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "pretrain")


class LoggingOptions:
    """Where metrics go.

    Args:
        csv: Write ``<root>/csv/version_N/metrics.csv``.
        wandb: ``auto``: online when ``WANDB_API_KEY`` is set, else offline (sync later with
            ``wandb sync``); ``online``: use your ``wandb login``; ``offline``; ``disabled``.
        project: W&B project name.
        name: W&B run name (default: W&B's own).
    """

    def __init__(
        self,
        csv: bool = True,
        wandb: Literal["auto", "online", "offline", "disabled"] = "auto",
        project: str = "wav2vec-toolkit",
        name: str | None = None,
    ) -> None:
        self.csv = csv
        self.wandb = wandb
        self.project = project
        self.name = name


def wandb_mode(option: str, environ: dict[str, str] | None = None) -> str:
    """``online``, ``offline`` or ``disabled`` for the ``logging.wandb`` option and the environment.

    ``WANDB_MODE`` in the environment wins over ``auto``; ``auto`` is online only when
    ``WANDB_API_KEY`` is set.
    """
    environ = os.environ if environ is None else environ
    if option != "auto":
        return option
    env = environ.get("WANDB_MODE", "").strip().lower()
    if env in ("online", "offline", "disabled"):
        return env
    if env == "dryrun":
        return "offline"
    return "online" if environ.get("WANDB_API_KEY") else "offline"


def make_loggers(options: LoggingOptions, root: str) -> list:
    from pytorch_lightning.loggers import CSVLogger

    loggers: list = []
    if options.csv:
        loggers.append(CSVLogger(save_dir=root, name="csv"))
    mode = wandb_mode(options.wandb)
    if mode != "disabled":
        try:
            from pytorch_lightning.loggers import WandbLogger
        except ImportError:  # pragma: no cover - wandb is a dependency
            return loggers
        loggers.append(
            WandbLogger(project=options.project, name=options.name, save_dir=root, offline=mode == "offline")
        )
    return loggers


def _cli_class():
    """Build the LightningCLI subclass lazily (Lightning imports take seconds)."""
    from pytorch_lightning.cli import LightningCLI
    from pytorch_lightning.plugins.io import CheckpointIO

    from toolkit.data.datamodule import AudioShardDataModule
    from toolkit.training.callbacks import (
        AtomicCheckpointIO,
        CollapseDetector,
        StepCheckpoint,
        ThroughputMonitor,
    )
    from toolkit.training.curve import AdaptationCurve
    from toolkit.training.module import Wav2VecPretraining

    class PretrainCLI(LightningCLI):
        def __init__(self, args: Sequence[str]) -> None:
            super().__init__(
                Wav2VecPretraining,
                AudioShardDataModule,
                args=list(args),
                run=False,
                auto_configure_optimizers=False,
                seed_everything_default=0,
                save_config_kwargs={"overwrite": True},
                trainer_defaults={
                    "enable_checkpointing": False,  # StepCheckpoint writes the checkpoints
                    "use_distributed_sampler": False,  # the shard stream splits by rank itself
                    "max_steps": 400_000,
                    "log_every_n_steps": 10,
                    "num_sanity_val_steps": 0,
                },
                parser_kwargs={
                    "description": __doc__,
                    "exit_on_error": False,
                    "default_config_files": [],
                },
            )

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument(
                "--resume",
                type=str,
                default="auto",
                help="auto: the run's newest complete checkpoint (highest step; hpc_ckpt_* included), if any; none; or a .ckpt path",
            )
            parser.add_lightning_class_args(StepCheckpoint, "checkpoint")
            parser.add_lightning_class_args(CollapseDetector, "collapse")
            parser.add_lightning_class_args(ThroughputMonitor, "throughput")
            parser.add_lightning_class_args(AdaptationCurve, "adaptation")
            parser.add_class_arguments(LoggingOptions, "logging")

        def instantiate_trainer(self, **kwargs: Any):
            trainer_cfg = self._get(self.config_init, "trainer", default={})
            root = trainer_cfg.get("default_root_dir") or os.getcwd()
            if trainer_cfg.get("logger") in (None, True):
                kwargs["logger"] = make_loggers(self._get(self.config_init, "logging"), root) or False
            plugins = trainer_cfg.get("plugins") or []
            plugins = plugins if isinstance(plugins, list) else [plugins]
            if not any(isinstance(p, CheckpointIO) for p in plugins):
                kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
            return super().instantiate_trainer(**kwargs)

    return PretrainCLI


def resolve_resume(option: str | None, checkpoint_dir: str, root_dir: str | None = None) -> str | None:
    """The checkpoint to resume from for ``--resume`` (``auto``, ``none`` or a path).

    ``auto``: the newest complete checkpoint of the run (highest step, periodic ones in
    ``checkpoint_dir`` and preemption ones in ``root_dir``), or ``None`` if there is none
    (:func:`toolkit.checkpoints.newest_in_run`, the same rule a requeued SLURM job uses).
    """
    from toolkit.checkpoints import is_complete_checkpoint, newest_in_run

    if option is None or option.lower() in ("none", "no", "false", "never", ""):
        return None
    if option.lower() == "auto":
        found = newest_in_run(root_dir or os.path.dirname(os.path.abspath(checkpoint_dir)), checkpoint_dir)
        return None if found is None else str(found)
    if not os.path.isfile(option):
        raise ToolkitError(option, "no such checkpoint (--resume)")
    if not is_complete_checkpoint(option):
        raise ToolkitError(option, "incomplete or corrupt checkpoint (--resume)")
    return option


def refuse_fresh_start_over_checkpoints(root_dir: str, checkpoint_dir: str) -> None:
    """A run that starts afresh must not share its folder with an earlier run's checkpoints.

    Pruning would count them with the new ones, ``--resume auto`` would later pick the higher step
    of either run, and under SLURM Lightning resumes a preemption checkpoint by itself whatever
    ``--resume`` says.
    """
    from toolkit.checkpoints import list_checkpoints, run_folders

    found = list_checkpoints(*run_folders(root_dir, checkpoint_dir))
    if found:
        raise ToolkitError(root_dir, f"already holds {len(found)} checkpoint(s) of an earlier run (newest "
                           f"{found[-1].name}): resume it (--resume auto) or start in a new "
                           "trainer.default_root_dir")


def _one_line(err: BaseException) -> str:
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text[:400]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``toolkit pretrain``: parse, build, resume if possible, fit. Returns 0."""
    from jsonargparse import ArgumentError

    argv = list(sys.argv[1:] if argv is None else argv)
    saved_argv = sys.argv
    sys.argv = sys.argv[:1]  # LightningCLI parses `argv` only (and warns if sys.argv has more)
    try:
        cli = _cli_class()(argv)
    except ArgumentError as err:
        raise ToolkitError("config", _one_line(err)) from None
    except FileNotFoundError as err:
        raise ToolkitError(err.filename, "no such file") from None
    except ValueError as err:  # a constructor refusing a configured value
        raise ToolkitError("config", _one_line(err)) from None
    finally:
        sys.argv = saved_argv
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    from toolkit.training.callbacks import StepCheckpoint

    ckpt_dir = next(
        (cb.dirpath for cb in trainer.callbacks if isinstance(cb, StepCheckpoint) and cb.dirpath), None
    ) or os.path.join(trainer.default_root_dir, "checkpoints")
    ckpt_path = resolve_resume(cli.config.get("resume"), ckpt_dir, trainer.default_root_dir)
    if ckpt_path is None:
        refuse_fresh_start_over_checkpoints(trainer.default_root_dir, ckpt_dir)
    if ckpt_path and trainer.is_global_zero:
        print(f"resuming from {ckpt_path}", file=sys.stderr)
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    try:
        train(trainer, model, data, ckpt_path)
    except SIGTERMException:
        if trainer.is_global_zero:
            print("stopped by SIGTERM after writing a checkpoint; rerun the same command to resume", file=sys.stderr)
        return 143
    except OSError as err:  # a full disk under a logger or the config writer: one line, not a traceback
        from toolkit.io import disk_full_error

        full = disk_full_error(err.filename or trainer.default_root_dir, err)
        if full is None:
            raise
        raise full from None
    return 0


def train(trainer, model, datamodule, ckpt_path: str | None = None) -> None:
    """``trainer.fit``, resuming from ``ckpt_path``: the data module's own state (stored in the
    checkpoint) puts the data stream back where it was."""
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
