"""Self-describing checkpoints and safe loading.

A toolkit checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``)::

    {"format": "wav2vec-toolkit", "format_version": 1, "model": "wav2vec",
     "config": {...Wav2VecConfig fields...}, "step": 1234, "state_dict": {...}, "extra": {...}}

Lightning checkpoints written by :mod:`toolkit.training` carry the same header under the key
``"toolkit"`` and their weights under ``state_dict`` with a ``model.`` prefix. fairseq wav2vec (v1)
checkpoints are converted on the fly through the key tables of :mod:`toolkit.models.fairseq_format`.

Every load goes through :func:`safe_torch_load`: ``weights_only=True`` with an explicit allow-list.
A file that needs any other Python object is refused, and nothing in it runs.
"""

from __future__ import annotations

import argparse
import collections
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from toolkit.errors import CheckpointError
from toolkit.io import write_torch
from toolkit.models.fairseq_format import FAIRSEQ_TO_TOOLKIT, config_from_fairseq, map_state_dict
from toolkit.models.wav2vec import Wav2VecConfig, Wav2VecModel, wav2vec_model

FORMAT = "wav2vec-toolkit"
FORMAT_VERSION = 1


class InertRecord:
    """Stand-in for bookkeeping objects in old fairseq checkpoints (training meters).

    Unpickling builds it from plain state only (``__setstate__`` stores the dict): no code of the
    original class runs. The weights never depend on these objects.
    """

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"InertRecord({self.state!r})"


# fairseq <= 0.9 pickled its training meters into `extra_state["train_meters"]`.
_FAIRSEQ_BOOKKEEPING = [
    f"fairseq.{module}.{name}"
    for module in ("meters", "logging.meters")
    for name in ("AverageMeter", "TimeMeter", "StopwatchMeter", "Meter", "SumMeter")
]
ALLOWED_GLOBALS: list = [argparse.Namespace, collections.OrderedDict] + [
    (InertRecord, name) for name in _FAIRSEQ_BOOKKEEPING
]


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` with the allow-list above, on CPU.

    Raises :class:`CheckpointError` (one line, naming the file) when the file is missing, truncated,
    not a torch file, or needs a Python object outside the allow-list.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, expected a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "empty file (0 bytes)")
    with path.open("rb") as handle:
        magic = handle.read(2)
    if magic == b"PK" and not zipfile.is_zipfile(path):
        raise CheckpointError(path, "truncated or corrupt checkpoint (incomplete zip archive)")
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        match = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"global ([\w.]+)", text)
        if "Weights only load failed" in text and match:
            raise CheckpointError(
                path,
                f"refused: it needs the Python object '{match.group(1)}', which is not on the "
                "allow-list (an untrusted pickle can run code; nothing was executed)",
            ) from None
        if "Weights only load failed" in text:
            detail = text.split("WeightsUnpickler error:")[-1].strip().splitlines()[0][:160]
            raise CheckpointError(path, f"refused: unsafe or unsupported pickle content ({detail})") from None
        raise CheckpointError(path, f"corrupt checkpoint ({text.splitlines()[0][:160]})") from None
    except (EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(path, f"truncated or corrupt checkpoint ({type(err).__name__})") from None
    except RuntimeError as err:
        text = str(err)
        if "zip archive" in text or "central directory" in text or "PytorchStreamReader" in text:
            raise CheckpointError(path, "truncated or corrupt checkpoint (incomplete zip archive)") from None
        raise CheckpointError(path, f"cannot load checkpoint ({text.splitlines()[0][:160]})") from None
    except (ValueError, OSError, KeyError) as err:
        raise CheckpointError(path, f"not a readable torch checkpoint ({type(err).__name__}: {str(err)[:120]})") from None


LOSSES = ("bce", "infonce")


def training_objective(loss: str, balanced: bool = False) -> dict:
    """The ``training`` entry of a header: the contrastive loss the weights were trained with."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return {"loss": loss, "balanced": bool(balanced)}


def checkpoint_header(config: Wav2VecConfig, step: int | None, training: dict | None = None) -> dict:
    """The self-description every toolkit checkpoint carries.

    ``training`` (from :func:`training_objective`) records the loss; export to fairseq needs it.
    Checkpoints written before it was recorded have no ``training`` entry.
    """
    from toolkit.version import __version__

    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": "wav2vec",
        "config": config.to_dict(),
        "step": None if step is None else int(step),
        "toolkit_version": __version__,
    }
    if training is not None:
        header["training"] = training_objective(**training)
    return header


def save_model(
    path: str | os.PathLike,
    model: Wav2VecModel,
    *,
    step: int | None = None,
    training: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model`` as a self-describing toolkit checkpoint, atomically (``training``: the loss)."""
    path = Path(path)
    obj = checkpoint_header(model.config, step, training)
    obj["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj["extra"] = extra or {}
    write_torch(path, obj)
    return path


def _upgrade(header: dict, path: Path) -> dict:
    """Bring an older toolkit header to the current format (only version 1 exists so far)."""
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(path, f"toolkit checkpoint format version {version} is not supported (expected {FORMAT_VERSION})")
    return header


def load_weights(model: Wav2VecModel, weights: dict, path: Path) -> Wav2VecModel:
    """Load ``weights`` into ``model``; every key and shape must match, else one clear error."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            path,
            f"weights do not fit the architecture in its config (missing {missing[:3]}, unexpected {unexpected[:3]})",
        )
    for key, value in weights.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(
                path, f"weight '{key}' has shape {tuple(value.shape)}, the config expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.items()})
    return model


def _model_from_state(config_dict: dict, state_dict: dict, path: Path) -> Wav2VecModel:
    try:
        config = Wav2VecConfig(**config_dict)
    except TypeError as err:
        raise CheckpointError(path, f"unknown model config field ({err})") from None
    return load_weights(wav2vec_model(config), state_dict, path)


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


def describe(obj: Any) -> str:
    """What kind of checkpoint a loaded object is: toolkit, lightning, fairseq, or unknown."""
    if not isinstance(obj, dict):
        return "unknown"
    if obj.get("format") == FORMAT:
        return "toolkit"
    if isinstance(obj.get("toolkit"), dict) and "state_dict" in obj:
        return "lightning"
    if "model" in obj and ("args" in obj or "cfg" in obj):
        return "fairseq"
    return "unknown"


def load_checkpoint(path: str | os.PathLike) -> tuple[Wav2VecModel, dict]:
    """Load any supported checkpoint as ``(model, info)``.

    info has ``source``, ``step``, ``path`` and ``training`` (``{"loss", "balanced"}``, or ``None``
    for toolkit checkpoints written before the loss was recorded).
    """
    path = Path(path)
    obj = safe_torch_load(path)
    kind = describe(obj)
    if kind == "toolkit":
        header = _upgrade(obj, path)
        model = _model_from_state(header["config"], obj["state_dict"], path)
        step = header.get("step")
        training = header.get("training")
    elif kind == "lightning":
        header = _upgrade(obj["toolkit"], path)
        prefix = "model."
        weights = {k[len(prefix) :]: v for k, v in obj["state_dict"].items() if k.startswith(prefix)}
        if not weights:
            raise CheckpointError(path, "Lightning checkpoint has no 'model.*' weights")
        model = _model_from_state(header["config"], weights, path)
        step = header.get("step", obj.get("global_step"))
        training = header.get("training")
    elif kind == "fairseq":
        model, step = model_from_fairseq(obj, path)
        training = config_from_fairseq(obj, path)[1]
    else:
        keys = ", ".join(sorted(map(str, obj))[:6]) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(path, f"not a wav2vec checkpoint (top-level keys: {keys})")
    model.eval()
    return model, {"source": kind, "step": step, "path": str(path), "training": training}


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Wav2VecModel:
    """Load a toolkit, Lightning or fairseq wav2vec (v1) checkpoint as an eval-mode model."""
    model, _ = load_checkpoint(path)
    return model.to(map_location)
