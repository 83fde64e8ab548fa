"""fairseq wav2vec (v1) checkpoints <-> toolkit models, without fairseq installed.

Import reads the architecture from the checkpoint (old ``args`` Namespace, or newer ``cfg`` dict),
maps every weight through an explicit table, and fails on any key it does not know or any weight
it does not fill. Export writes a checkpoint that fairseq 0.12 loads with
``checkpoint_utils.load_checkpoint_to_cpu`` and builds with ``Wav2VecModel.build_model``.

Example::

    toolkit import-fairseq wav2vec_large.pt --output wav2vec_large.toolkit.pt
    toolkit export-fairseq wav2vec_large.toolkit.pt --output back_to_fairseq.pt
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from toolkit.errors import CheckpointError
from toolkit.io import write_torch
from toolkit.models.checkpoint import load_checkpoint, model_from_fairseq, safe_torch_load, save_model
from toolkit.models.fairseq_format import config_from_fairseq, fairseq_checkpoint
from toolkit.models.wav2vec import Wav2VecModel, auto_offset


def import_fairseq(path: str | os.PathLike, output: str | os.PathLike) -> tuple[Wav2VecModel, Path]:
    """Convert a fairseq wav2vec (v1) checkpoint file to a toolkit checkpoint file."""
    path = Path(path)
    obj = safe_torch_load(path)
    if not isinstance(obj, dict) or "model" not in obj or not ("args" in obj or "cfg" in obj):
        raise CheckpointError(path, "not a fairseq checkpoint (expected 'model' and 'args' or 'cfg')")
    model, step = model_from_fairseq(obj, path)
    _, training = config_from_fairseq(obj, path)
    out = save_model(output, model, step=step, training=training, extra={"imported_from": str(path)})
    return model, out


def export_fairseq(
    source: str | os.PathLike | Wav2VecModel, output: str | os.PathLike, *, loss: str | None = None
) -> Path:
    """Write a toolkit model (or checkpoint file) as a fairseq checkpoint with its training loss.

    The loss comes from the checkpoint's header. ``loss`` is needed only for a bare model or a
    checkpoint written before the loss was recorded; it must agree with a recorded one.
    """
    step, recorded = 0, None
    if isinstance(source, Wav2VecModel):
        model, where = source, "<model>"
    else:
        model, info = load_checkpoint(source)
        step, recorded, where = info.get("step") or 0, info.get("training"), source
    if recorded is not None and loss is not None and loss != recorded["loss"]:
        raise CheckpointError(where, f"was trained with the {recorded['loss']} loss, not {loss} (--loss)")
    if recorded is None and loss is None:
        raise CheckpointError(
            where, "does not record its training loss (written before the toolkit recorded it); "
            "give it: --loss bce (fairseq's default) or --loss infonce"
        )
    training = recorded or {"loss": loss, "balanced": False}
    output = Path(output)
    write_torch(output, fairseq_checkpoint(model, num_updates=step, loss=training["loss"],
                                           balanced=training.get("balanced", False)))
    return output


def summary(model: Wav2VecModel) -> str:
    c = model.config
    params = sum(p.numel() for p in model.parameters())
    return (
        f"wav2vec (v1): {params:,} parameters; encoder {len(c.conv_feature_layers)} convs "
        f"(receptive field {model.encoder.receptive_field} samples, stride {model.encoder.stride}), "
        f"context {len(c.conv_aggregator_layers)} convs (kernels {c.conv_aggregator_layers[0][1]}..{c.conv_aggregator_layers[-1][1]}), "
        f"{c.prediction_steps} steps, {c.num_negatives} negatives, offset {model.offset}"
        + ("" if c.offset is not None else f" (auto={auto_offset(c.conv_feature_layers)})")
    )


# --- CLI ---------------------------------------------------------------------------------------


def add_import_fairseq_arguments(parser: argparse.ArgumentParser) -> None:
    """Convert a fairseq wav2vec (v1) checkpoint (e.g. the released wav2vec_large.pt) to the toolkit's
    self-describing format. fairseq need not be installed; the file is loaded with
    torch.load(weights_only=True) and an allow-list, so no code in it can run.

    Example:
      toolkit import-fairseq wav2vec_large.pt --output checkpoints/wav2vec_large.pt
      # prints: wav2vec (v1): 32,537,088 parameters; ...
    """
    parser.add_argument("checkpoint", type=Path, help="fairseq checkpoint (.pt)")
    parser.add_argument("--output", type=Path, required=True, help="toolkit checkpoint to write")


def run_import_fairseq(args: argparse.Namespace) -> int:
    model, out = import_fairseq(args.checkpoint, args.output)
    print(summary(model))
    print(f"wrote {out}")
    return 0


def add_export_fairseq_arguments(parser: argparse.ArgumentParser) -> None:
    """Write a toolkit checkpoint (or a Lightning checkpoint from `toolkit pretrain`) in fairseq's
    format, loadable by fairseq 0.12 (`checkpoint_utils.load_model_ensemble_and_task`).

    Example:
      toolkit export-fairseq runs/french/last.ckpt --output wav2vec_french_fairseq.pt
    """
    parser.add_argument("checkpoint", type=Path, help="toolkit or Lightning checkpoint")
    parser.add_argument("--output", type=Path, required=True, help="fairseq checkpoint to write")
    parser.add_argument("--loss", choices=("bce", "infonce"), default=None,
                        help="the loss the weights were trained with, for checkpoints that do not record it "
                             "(toolkit checkpoints from before 0.2); must agree with a recorded one")


def run_export_fairseq(args: argparse.Namespace) -> int:
    out = export_fairseq(args.checkpoint, args.output, loss=args.loss)
    print(f"wrote {out}")
    return 0
