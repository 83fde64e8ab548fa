"""The models shipped inside the toolkit, by name: ``toolkit/assets/<name>/model.pt`` + ``MODEL_CARD.md``.

``default`` is the English model every command uses when none is named; the others are domain-adapted
copies of it (``zh``, ``singing``, ``fr``), made by the recipes in ``recipes/``. Each card has a line
``Use: ...`` that says what the model is for and under which terms its training audio may be used; the
command-line help shows it, so a model trained on research-use-only audio says so before it is chosen.

    >>> from toolkit.models.embedded import embedded_model
    >>> embedded_model("zh").path            # doctest: +SKIP
    PosixPath('.../toolkit/assets/zh/model.pt')

Weights may be stored in half precision to keep the package small; loading casts them to float32
(:func:`toolkit.models.checkpoint.load_weights`), and :func:`save_embedded` is how they are written.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from toolkit.errors import CheckpointError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT = "default"
WEIGHTS = "model.pt"
CARD = "MODEL_CARD.md"


@dataclass(frozen=True)
class EmbeddedModel:
    """One shipped model: its name, weights, model card and the card's ``Use:`` line."""

    name: str
    path: Path
    card: Path | None
    use: str


def _use_line(card: Path | None) -> str:
    if card is None:
        return ""
    for line in card.read_text(encoding="utf-8").splitlines():
        if line.startswith("Use:"):
            return line[len("Use:") :].strip()
    return ""


def embedded_models(folder: str | os.PathLike = ASSETS) -> dict[str, EmbeddedModel]:
    """Every shipped model under ``folder`` (a sub-folder holding ``model.pt``), ``default`` first."""
    folder = Path(folder)
    found: dict[str, EmbeddedModel] = {}
    names = sorted(p.name for p in folder.iterdir() if (p / WEIGHTS).is_file()) if folder.is_dir() else []
    for name in sorted(names, key=lambda n: (n != DEFAULT, n)):
        card = folder / name / CARD
        card = card if card.is_file() else None
        found[name] = EmbeddedModel(name, folder / name / WEIGHTS, card, _use_line(card))
    return found


def embedded_model(name: str, folder: str | os.PathLike = ASSETS) -> EmbeddedModel:
    """The shipped model called ``name``; an unknown name is an error that lists the known ones."""
    models = embedded_models(folder)
    if name not in models:
        known = ", ".join(models) or "none"
        raise CheckpointError(f"--model {name}", f"no embedded model of that name (embedded: {known})")
    return models[name]


def embedded_candidates(names: list[str], folder: str | os.PathLike = ASSETS) -> list[tuple[str, torch.nn.Module]]:
    """``(name, model)`` for each shipped model named, as ``toolkit evaluate`` takes them."""
    from toolkit.models.checkpoint import load_model

    return [(name, load_model(embedded_model(name, folder).path)) for name in names]


def models_help(folder: str | os.PathLike = ASSETS) -> str:
    """One line per shipped model for ``--help``: its name and the ``Use:`` line of its card."""
    return "; ".join(f"{m.name}: {m.use.rstrip('.')}" if m.use else m.name for m in embedded_models(folder).values())


def save_embedded(model: torch.nn.Module, path: str | os.PathLike, *, step: int | None, source: str,
                  half: bool = True, **header) -> Path:
    """Write ``model`` as a shipped checkpoint (float16 weights when ``half``) through
    :func:`~toolkit.models.checkpoint.save_model` (``header``: its other keywords)."""
    from toolkit.models.checkpoint import save_model

    stored = copy.deepcopy(model).to(torch.float16 if half else torch.float32)
    extra = {"source": source, "stored_dtype": "float16" if half else "float32"}
    return save_model(path, stored, step=step, extra=extra, **header)
