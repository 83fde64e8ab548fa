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
import ast
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from toolkit.errors import CheckpointError
from toolkit.io import write_torch
from toolkit.models.checkpoint import load_checkpoint, load_weights, safe_torch_load, save_model
from toolkit.models.wav2vec import Wav2VecConfig, Wav2VecModel, auto_offset, wav2vec_model

log = logging.getLogger(__name__)

# fairseq 0.12 Wav2VecConfig defaults, used for fields an old Namespace lacks.
FAIRSEQ_DEFAULTS: dict[str, Any] = {
    "prediction_steps": 12,
    "sample_distance": None,
    "cross_sample_negatives": 0,
    "num_negatives": 10,
    "conv_feature_layers": "[(512, 10, 5), (512, 8, 4), (512, 4, 2), (512, 4, 2), (512, 4, 2), (512, 1, 1), (512, 1, 1), (512, 1, 1)]",
    "conv_aggregator_layers": "[(512, 2, 1), (512, 3, 1), (512, 4, 1), (512, 5, 1), (512, 6, 1), (512, 7, 1), (512, 8, 1), (512, 9, 1), (512, 10, 1), (512, 11, 1), (512, 12, 1), (512, 13, 1)]",
    "dropout": 0.0,
    "dropout_features": 0.0,
    "dropout_agg": 0.0,
    "aggregator": "cnn",
    "encoder": "cnn",
    "no_conv_bias": False,
    "agg_zero_pad": False,
    "skip_connections_feat": False,
    "skip_connections_agg": True,
    "residual_scale": 0.5,
    "log_compression": True,
    "balanced_classes": False,
    "project_features": "none",
    "non_affine_group_norm": False,
    "offset": "auto",
    "activation": "relu",
    "vq_type": "none",
}

WAV2VEC2_NAMES = {"wav2vec2", "wav2vec_ctc", "wav2vec_seq2seq", "wav2vec2_laser", "data2vec_audio", "hubert"}


# --- architecture ------------------------------------------------------------------------------


def parse_layers(text: str | list, field: str, path: Path) -> tuple[tuple[int, int, int], ...]:
    """Parse fairseq's layer strings without ``eval``.

    Accepts list literals and the ``+`` / ``* n`` forms older fairseq defaults used, e.g.
    ``"[(512, 10, 5)] + [(512, 4, 2)] * 3"``. Anything else is rejected.
    """
    if isinstance(text, (list, tuple)):
        value = [tuple(x) for x in text]
    else:
        try:
            value = _literal(ast.parse(str(text), mode="eval").body)
        except (SyntaxError, ValueError) as err:
            raise CheckpointError(path, f"cannot parse {field}={text!r} ({err})") from None
    if not isinstance(value, list) or not all(
        isinstance(x, tuple) and len(x) == 3 and all(isinstance(v, int) for v in x) for x in value
    ):
        raise CheckpointError(path, f"{field} must be a list of (channels, kernel, stride), got {text!r}")
    return tuple(value)


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal(node.left) + _literal(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _literal(node.left), _literal(node.right)
        if isinstance(right, int) and isinstance(left, list):
            return left * right
        raise ValueError("only list * int is allowed")
    raise ValueError(f"unsupported expression {ast.dump(node)[:60]}")


def fairseq_model_args(obj: dict, path: Path) -> dict[str, Any]:
    """The model's fairseq arguments as a plain dict, from ``cfg["model"]`` or ``args``."""
    cfg = obj.get("cfg")
    if cfg is not None and not isinstance(cfg, dict):
        raise CheckpointError(path, f"unsupported 'cfg' of type {type(cfg).__name__}")
    if cfg and cfg.get("model") is not None:
        model_cfg = dict(cfg["model"])
        name = model_cfg.get("_name")
    elif obj.get("args") is not None:
        model_cfg = vars(obj["args"]).copy()
        name = model_cfg.get("arch")
    else:
        raise CheckpointError(path, "fairseq checkpoint has neither 'cfg.model' nor 'args'")
    if name in WAV2VEC2_NAMES or (isinstance(name, str) and name.startswith("wav2vec2")) or _looks_like_wav2vec2(obj):
        raise CheckpointError(
            path,
            f"this is a wav2vec 2.0 checkpoint (model '{name}'), but wav2vec (v1) was expected; "
            "score it with the wav2vec2 scorer instead",
        )
    if name is not None and name != "wav2vec":
        raise CheckpointError(path, f"model '{name}' is not fairseq's wav2vec (v1)")
    return model_cfg


def _looks_like_wav2vec2(obj: dict) -> bool:
    keys = obj.get("model", {}).keys() if isinstance(obj.get("model"), dict) else []
    return any(k.startswith(("mask_emb", "encoder.layers.", "w2v_encoder.", "quantizer.")) for k in keys)


def config_from_fairseq(obj: dict, path: Path) -> tuple[Wav2VecConfig, dict]:
    """The toolkit config for a fairseq checkpoint, and the loss settings (infonce, balanced)."""
    args = fairseq_model_args(obj, path)
    defaulted = sorted(k for k in FAIRSEQ_DEFAULTS if k not in args)
    if defaulted:
        log.warning("%s: fields absent from the checkpoint, fairseq defaults used: %s", path, ", ".join(defaulted))
    a = {**FAIRSEQ_DEFAULTS, **{k: v for k, v in args.items() if v is not None or k == "sample_distance"}}
    unsupported = {
        "vq_type": a["vq_type"] != "none",
        "aggregator": a["aggregator"] != "cnn",
        "encoder": a.get("encoder", "cnn") != "cnn",
        "cross_sample_negatives": int(a["cross_sample_negatives"]) > 0,
        "sample_distance": a["sample_distance"] is not None,
    }
    bad = [f"{k}={a[k]!r}" for k, is_bad in unsupported.items() if is_bad]
    if bad:
        raise CheckpointError(path, f"unsupported wav2vec variant ({', '.join(bad)}); only the cnn/cnn model without vq is supported")
    offset = a["offset"]
    encoder_layers = parse_layers(a["conv_feature_layers"], "conv_feature_layers", path)
    config = Wav2VecConfig(
        conv_feature_layers=encoder_layers,
        conv_aggregator_layers=parse_layers(a["conv_aggregator_layers"], "conv_aggregator_layers", path),
        prediction_steps=int(a["prediction_steps"]),
        num_negatives=int(a["num_negatives"]),
        offset=None if offset in ("auto", None) else int(offset),
        log_compression=bool(a["log_compression"]),
        skip_connections_feat=bool(a["skip_connections_feat"]),
        skip_connections_agg=bool(a["skip_connections_agg"]),
        residual_scale=float(a["residual_scale"]),
        non_affine_group_norm=bool(a["non_affine_group_norm"]),
        agg_zero_pad=bool(a["agg_zero_pad"]),
        conv_bias=not bool(a["no_conv_bias"]),
        activation=str(a["activation"]),
        project_features=str(a["project_features"]),
        dropout=float(a["dropout"]),
        dropout_features=float(a["dropout_features"]),
        dropout_agg=float(a["dropout_agg"]),
    )
    criterion = (obj.get("cfg") or {}).get("criterion") or {}
    infonce = criterion.get("infonce", args.get("infonce", False))
    loss = {"infonce": infonce is True, "balanced": bool(a["balanced_classes"])}
    return config, loss


# --- weights -----------------------------------------------------------------------------------

Transform = Callable[[Tensor], Tensor]


def _steps_to_toolkit(w: Tensor) -> Tensor:
    return w.squeeze(2).permute(2, 1, 0).contiguous()  # [in, out, 1, K] -> [K, out, in]


def _steps_to_fairseq(w: Tensor) -> Tensor:
    return w.permute(2, 1, 0).unsqueeze(2).contiguous()  # [K, out, in] -> [in, out, 1, K]


# One rule per fairseq key family: (fairseq regex, toolkit template or None to drop, transform).
FAIRSEQ_TO_TOOLKIT: list[tuple[str, str | None, Transform | None]] = [
    # feature_extractor.conv_layers.0.0.weight -> encoder.layers.0.conv.weight
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.weight", r"encoder.layers.\1.conv.weight", None),
    # feature_extractor.conv_layers.0.2.bias -> encoder.layers.0.norm.bias (Fp32GroupNorm)
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)", r"encoder.layers.\1.norm.\2", None),
    # feature_aggregator.conv_layers.0.1.weight -> context.layers.0.conv.weight (index 0 is the pad)
    (r"feature_aggregator\.conv_layers\.(\d+)\.1\.(weight|bias)", r"context.layers.\1.conv.\2", None),
    # feature_aggregator.conv_layers.0.3.weight -> context.layers.0.norm.weight
    (r"feature_aggregator\.conv_layers\.(\d+)\.3\.(weight|bias)", r"context.layers.\1.norm.\2", None),
    # feature_aggregator.residual_proj.0.weight -> context.layers.0.residual_proj.weight
    (r"feature_aggregator\.residual_proj\.(\d+)\.weight", r"context.layers.\1.residual_proj.weight", None),
    # project_features="new": a second aggregator for the targets
    (r"project_features\.conv_layers\.(\d+)\.1\.(weight|bias)", r"target_projection.layers.\1.conv.\2", None),
    (r"project_features\.conv_layers\.(\d+)\.3\.(weight|bias)", r"target_projection.layers.\1.norm.\2", None),
    (r"project_features\.residual_proj\.(\d+)\.weight", r"target_projection.layers.\1.residual_proj.weight", None),
    # wav2vec_predictions.project_to_steps.weight [in, out, 1, K] -> prediction.weight [K, out, in]
    (r"wav2vec_predictions\.project_to_steps\.weight", "prediction.weight", _steps_to_toolkit),
    (r"wav2vec_predictions\.project_to_steps\.bias", "prediction.bias", None),
]

TOOLKIT_TO_FAIRSEQ: list[tuple[str, str, Transform | None]] = [
    (r"encoder\.layers\.(\d+)\.conv\.weight", r"feature_extractor.conv_layers.\1.0.weight", None),
    (r"encoder\.layers\.(\d+)\.norm\.(weight|bias)", r"feature_extractor.conv_layers.\1.2.\2", None),
    (r"context\.layers\.(\d+)\.conv\.(weight|bias)", r"feature_aggregator.conv_layers.\1.1.\2", None),
    (r"context\.layers\.(\d+)\.norm\.(weight|bias)", r"feature_aggregator.conv_layers.\1.3.\2", None),
    (r"context\.layers\.(\d+)\.residual_proj\.weight", r"feature_aggregator.residual_proj.\1.weight", None),
    (r"target_projection\.layers\.(\d+)\.conv\.(weight|bias)", r"project_features.conv_layers.\1.1.\2", None),
    (r"target_projection\.layers\.(\d+)\.norm\.(weight|bias)", r"project_features.conv_layers.\1.3.\2", None),
    (r"target_projection\.layers\.(\d+)\.residual_proj\.weight", r"project_features.residual_proj.\1.weight", None),
    (r"prediction\.weight", "wav2vec_predictions.project_to_steps.weight", _steps_to_fairseq),
    (r"prediction\.bias", "wav2vec_predictions.project_to_steps.bias", None),
]


def map_state_dict(
    state: dict[str, Tensor], rules: list, path: Path, drop: Callable[[str], bool] = lambda k: False
) -> dict[str, Tensor]:
    """Rename every key through ``rules``; an unknown key raises."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if drop(key):
            continue
        for pattern, template, transform in rules:
            match = re.fullmatch(pattern, key)
            if match:
                if template is not None:
                    new = match.expand(template)
                    out[new] = transform(value) if transform else value
                break
        else:
            raise CheckpointError(path, f"unknown weight '{key}' (not part of fairseq's wav2vec v1)")
    return out


def model_from_fairseq(obj: dict, path: str | os.PathLike = "<checkpoint>") -> tuple[Wav2VecModel, int | None]:
    """Build a toolkit model from a loaded fairseq checkpoint dict. Returns ``(model, num_updates)``."""
    path = Path(path)
    config, _ = config_from_fairseq(obj, path)
    state = obj["model"]
    if not isinstance(state, dict):
        raise CheckpointError(path, "fairseq checkpoint 'model' entry is not a state dict")
    # project_features="same" shares the aggregator: fairseq stores it twice.
    same = config.project_features == "same"
    weights = map_state_dict(state, FAIRSEQ_TO_TOOLKIT, path, drop=lambda k: same and k.startswith("project_features."))
    model = load_weights(wav2vec_model(config), weights, path)
    history = obj.get("optimizer_history") or [{}]
    step = history[-1].get("num_updates") if isinstance(history[-1], dict) else None
    return model, step


def fairseq_checkpoint(model: Wav2VecModel, *, num_updates: int = 0, infonce: bool = False) -> dict:
    """A fairseq-0.12-style checkpoint dict (``cfg`` as a plain dict) for ``model``."""
    c = model.config
    model_cfg = {
        "_name": "wav2vec",
        **{k: v for k, v in FAIRSEQ_DEFAULTS.items()},
        "conv_feature_layers": str([tuple(x) for x in c.conv_feature_layers]),
        "conv_aggregator_layers": str([tuple(x) for x in c.conv_aggregator_layers]),
        "prediction_steps": c.prediction_steps,
        "num_negatives": c.num_negatives,
        "offset": "auto" if c.offset is None else str(c.offset),
        "log_compression": c.log_compression,
        "skip_connections_feat": c.skip_connections_feat,
        "skip_connections_agg": c.skip_connections_agg,
        "residual_scale": c.residual_scale,
        "non_affine_group_norm": c.non_affine_group_norm,
        "agg_zero_pad": c.agg_zero_pad,
        "no_conv_bias": not c.conv_bias,
        "activation": c.activation,
        "project_features": c.project_features,
        "dropout": c.dropout,
        "dropout_features": c.dropout_features,
        "dropout_agg": c.dropout_agg,
        "infonce": infonce,
        "gru_dim": 512,
        "vq_vars": 320,
        "vq_groups": 2,
        "vq_dim": 0,
        "vq_depth": 1,
        "combine_groups": False,
        "vq_temp": [2.0, 0.5, 0.999995],
        "vq_gamma": 0.25,
    }
    state = map_state_dict(model.state_dict(), TOOLKIT_TO_FAIRSEQ, Path("<model>"))
    if c.project_features == "same":
        for key in list(state):
            if key.startswith("feature_aggregator."):
                state["project_features." + key[len("feature_aggregator.") :]] = state[key]
    return {
        "args": None,
        "cfg": {
            "_name": None,
            "model": model_cfg,
            "task": {"_name": "audio_pretraining", "data": "", "sample_rate": 16000},
            "criterion": {"_name": "wav2vec", "infonce": infonce},
        },
        "model": {k: v.detach().cpu().contiguous() for k, v in state.items()},
        "optimizer_history": [
            {"criterion_name": "Wav2vecCriterion", "optimizer_name": "FairseqAdam", "lr_scheduler_state": {}, "num_updates": int(num_updates)}
        ],
        "extra_state": {},
    }


def import_fairseq(path: str | os.PathLike, output: str | os.PathLike) -> tuple[Wav2VecModel, Path]:
    """Convert a fairseq wav2vec (v1) checkpoint file to a toolkit checkpoint file."""
    path = Path(path)
    obj = safe_torch_load(path)
    if not isinstance(obj, dict) or "model" not in obj or not ("args" in obj or "cfg" in obj):
        raise CheckpointError(path, "not a fairseq checkpoint (expected 'model' and 'args' or 'cfg')")
    model, step = model_from_fairseq(obj, path)
    _, loss = config_from_fairseq(obj, path)
    out = save_model(output, model, step=step, extra={"imported_from": str(path), "fairseq_loss": loss})
    return model, out


def export_fairseq(source: str | os.PathLike | Wav2VecModel, output: str | os.PathLike) -> Path:
    """Write a toolkit model (or checkpoint file) as a fairseq checkpoint."""
    step = 0
    if isinstance(source, Wav2VecModel):
        model = source
    else:
        model, info = load_checkpoint(source)
        step = info.get("step") or 0
    output = Path(output)
    write_torch(output, fairseq_checkpoint(model, num_updates=step))
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


def run_export_fairseq(args: argparse.Namespace) -> int:
    out = export_fairseq(args.checkpoint, args.output)
    print(f"wrote {out}")
    return 0
