"""What ``toolkit evaluate`` scores: checkpoints, controls and reference predictors, built lazily.

One model is in memory at a time: each :class:`Candidate` holds a ``build`` function that the
evaluator calls when it reaches it. Roles: ``checkpoint`` (a model under test), ``control``
(``random-init``: the first checkpoint's architecture with seeded random weights; ``acoustic``:
trivial features) and ``reference`` (the field's predictors, :mod:`toolkit.scoring.references`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toolkit.errors import CheckpointError, ToolkitError
from toolkit.scoring.acoustic import AcousticScorer
from toolkit.scoring.references import REFERENCES, build_reference, check_references
from toolkit.scoring.scorer import Wav2VecScorer

CONTROLS = ("random-init", "acoustic")
ROLES = ("checkpoint", "control", "reference")


@dataclass
class Candidate:
    """Something to evaluate: a checkpoint, a control or a reference, built lazily."""

    name: str
    role: str  # one of ROLES
    build: Callable[[], Any]
    step: int | None = None
    source: str = ""


def step_from_name(path: str | os.PathLike) -> int | None:
    """A step written in a file name (``step=1200.ckpt``, ``step-1200.pt``, ``step_1200``)."""
    match = re.search(r"step[=_-]?(\d+)", Path(path).name)
    return int(match.group(1)) if match else None


def load_checkpoint_model(path: str | os.PathLike) -> tuple[torch.nn.Module, int | None]:
    """``(model, pretraining step)``: the step from the checkpoint header, else from the file name."""
    from toolkit.models.checkpoint import load_checkpoint

    model, info = load_checkpoint(path)
    step = info.get("step")
    return model, int(step) if step is not None else step_from_name(path)


def seeded_random_model(config, seed: int) -> torch.nn.Module:
    """The architecture of ``config`` with weights drawn from torch's default init under ``seed``."""
    from toolkit.models.wav2vec import wav2vec_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return wav2vec_model(config)


def _unique(name: str, taken: set[str]) -> str:
    base, i = name, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def make_candidates(
    checkpoints: Sequence[Any],
    controls: Sequence[str],
    scorer_kwargs: dict,
    seed: int,
    references: Sequence[str] = (),
) -> list[Candidate]:
    """Turn checkpoint paths, ``random:PRESET`` strings, ``(name, model[, step])`` tuples, control
    names and reference names into lazily built scorers, in the order they are evaluated
    (checkpoints, then controls, then references). A reference whose extra is missing fails here,
    before anything is scored."""
    from toolkit.models.wav2vec import PRESETS, build_preset

    out: list[Candidate] = []
    taken: set[str] = set()
    first_config: list = []

    def wav2vec(model, name):
        if not first_config and hasattr(model, "config"):
            first_config.append(model.config)
        return Wav2VecScorer(model, name=name, **scorer_kwargs)

    for item in checkpoints:
        if isinstance(item, tuple):
            name, obj = item[0], item[1]
            step = item[2] if len(item) > 2 else None
            name = _unique(name, taken)
            if hasattr(obj, "score") and hasattr(obj, "fingerprint"):
                out.append(Candidate(name, "checkpoint", lambda o=obj: o, step, "object"))
            else:
                if hasattr(obj, "config") and not first_config:
                    first_config.append(obj.config)
                out.append(Candidate(name, "checkpoint", lambda o=obj, n=name: wav2vec(o, n), step, "object"))
            continue
        text = os.fspath(item)
        if text.startswith("random:"):
            preset = text.split(":", 1)[1]
            if preset not in PRESETS:
                raise ToolkitError(text, f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
            name = _unique(f"random-{preset}", taken)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                config = build_preset(preset).config
            if not first_config:
                first_config.append(config)
            out.append(Candidate(name, "checkpoint", lambda c=config, n=name: wav2vec(seeded_random_model(c, seed), n), None, text))
            continue
        path = Path(text)
        if not path.exists():
            raise CheckpointError(path, "file not found")
        cand = Candidate(_unique(path.stem, taken), "checkpoint", lambda: None, step_from_name(path), str(path))

        def build_path(c=cand, p=path):
            model, c.step = load_checkpoint_model(p)
            return wav2vec(model, c.name)

        cand.build = build_path
        out.append(cand)

    for control in controls:
        if control == "acoustic":
            out.append(Candidate(_unique("acoustic", taken), "control", AcousticScorer, None, "trivial features"))
        elif control == "random-init":
            def build_random(n=None):
                if not first_config:
                    raise ToolkitError("--control random-init", "needs a checkpoint to copy the architecture from (or use random:PRESET)")
                return Wav2VecScorer(seeded_random_model(first_config[0], seed), name="random-init", **scorer_kwargs)

            out.append(Candidate(_unique("random-init", taken), "control", build_random, None, f"seeded random weights (seed {seed})"))
        else:
            raise ToolkitError(control, f"unknown control; choose from {', '.join(CONTROLS)}")

    check_references(references)
    for ref in dict.fromkeys(references):
        out.append(Candidate(_unique(ref, taken), "reference", lambda r=ref: build_reference(r, seed), None,
                             REFERENCES[ref].description))
    # The random-init control copies the first checkpoint's architecture: build checkpoints first.
    return sorted(out, key=lambda c: ROLES.index(c.role))


