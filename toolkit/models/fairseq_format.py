"""fairseq's wav2vec (v1) checkpoint format as data: its config defaults, the key tables that map
its weights to the toolkit's and back, and the pure functions that read and build its dicts.

Nothing here reads or writes files: :mod:`toolkit.models.checkpoint` loads fairseq files through
these tables, and :mod:`toolkit.models.convert` (``import-fairseq`` / ``export-fairseq``) writes them.
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from toolkit.errors import CheckpointError
from toolkit.models.wav2vec import Wav2VecConfig, Wav2VecModel

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
    """The toolkit config for a fairseq checkpoint, and its training objective (``{"loss", "balanced"}``)."""
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
    # fairseq's dataclass default is an unresolved '${criterion.infonce}' string: only True counts.
    training = {"loss": "infonce" if infonce is True else "bce", "balanced": bool(a["balanced_classes"])}
    return config, training


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


def fairseq_checkpoint(
    model: Wav2VecModel, *, num_updates: int = 0, loss: str = "bce", balanced: bool = False
) -> dict:
    """A fairseq-0.12-style checkpoint dict (``cfg`` as a plain dict) for ``model``.

    ``loss`` (``bce`` or ``infonce``) and ``balanced`` are the objective the weights were trained
    with: fairseq's model computes different outputs for each, so they must be the recorded ones.
    """
    if loss not in ("bce", "infonce"):
        raise ValueError(f"loss must be 'bce' or 'infonce', got {loss!r}")
    infonce = loss == "infonce"
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
        "balanced_classes": bool(balanced),
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
