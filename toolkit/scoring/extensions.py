"""Toolkit extensions beyond the paper: scorers that compare a clip with clean reference speech.

The paper scores a clip by the uncertainty of wav2vec's contrastive task *within* the clip. These
extensions (issue 15; results in ``docs/results.md``, "Beyond the paper") also use a
:class:`~toolkit.scoring.bank.ReferenceBank` built once from clean real speech:

``bank``        the paper's measures with negatives drawn from the bank (:class:`BankScorer`)
``typicality``  distance of each frame's latent to a k-means codebook (:class:`TypicalityScorer`)
``combo``       ``p_pos.mean`` and ``typ:z.mean``, each standardised by its mean and standard
                deviation over the reference clips, averaged (:class:`ComboScorer`). Fixed in
                advance; no weight is fitted to any rating.

Each is switched on by name: ``toolkit evaluate CKPT --extension combo --bank bank.pt ...``. Every
wav2vec candidate (checkpoints and the random-init control) then gets an extra scorer named
``CANDIDATE+EXTENSION``, with the bank rebuilt for its own weights where they differ.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from toolkit.audio import SAMPLE_RATE
from toolkit.errors import ToolkitError
from toolkit.scoring.bank import (
    BANK_MEASURES,
    COMBO_PARTS,
    BankScorer,
    ReferenceBank,
    bank_for_model,
    load_bank,
)
from toolkit.scoring.measures import MEASURES
from toolkit.scoring.scorer import Wav2VecScorer
from toolkit.scoring.typicality import TYPICALITY_MEASURES, TypicalityScorer

# The measure chosen by the protocol in docs/results.md ("Beyond the paper"): what the demo prints.
CHOSEN = ("combo", "combo")  # (extension, measure)


def standardised_mean(values: dict[str, Tensor], reference: dict[str, Sequence[float]], parts: Sequence[str]) -> Tensor:
    """Mean over ``parts`` of ``(values[p] - mean_p) / std_p`` with ``reference[p] = (mean_p, std_p)``.

    Values are quality-oriented scores, so the result is too. A part whose reference spread is 0
    cannot be standardised: ``ValueError``.
    """
    total = None
    for part in parts:
        mean, std = reference[part]
        if not std > 0:
            raise ValueError(f"reference spread of {part} is {std}: cannot standardise")
        z = (values[part].double() - mean) / std
        total = z if total is None else total + z
    return (total / len(parts)).float()


class ComboScorer:
    """``combo``: the paper's ``p_pos.mean`` and ``typ:z.mean``, standardised on the reference clips, averaged."""

    sample_rate = SAMPLE_RATE
    measures = ["combo"]
    signs = {"combo": 1}

    def __init__(self, model: torch.nn.Module, bank: ReferenceBank, draws: int = 3, seed: int = 0,
                 device: str | torch.device | None = "cpu", dtype: str | None = None, name: str = "combo") -> None:
        self.name = name
        self.bank = bank
        self.paper = Wav2VecScorer(model, ["p_pos.mean"], draws=draws, seed=seed, device=device, dtype=dtype)
        self.typicality = TypicalityScorer(model, bank, ["typ:z.mean"], device=device, dtype=dtype)
        self.min_samples = self.paper.min_samples

    def fingerprint(self) -> dict:
        return {"scorer": "combo", "version": 1, "parts": list(COMBO_PARTS), "paper": self.paper.fingerprint(),
                "typicality": self.typicality.fingerprint()}

    def score(self, wavs: Tensor, lengths: Tensor | None = None, keys: Sequence[str] | None = None) -> dict[str, Tensor]:
        values = {**self.paper.score(wavs, lengths, keys), **self.typicality.score(wavs, lengths, keys)}
        return {"combo": standardised_mean(values, self.bank.reference, COMBO_PARTS)}


def _bank(model, bank, kwargs, name):
    return BankScorer(model, bank, BANK_MEASURES, draws=kwargs["draws"], seed=kwargs["seed"],
                      device=kwargs["device"], dtype=kwargs["dtype"], name=name)


def _typicality(model, bank, kwargs, name):
    return TypicalityScorer(model, bank, TYPICALITY_MEASURES, device=kwargs["device"], dtype=kwargs["dtype"], name=name)


def _combo(model, bank, kwargs, name):
    return ComboScorer(model, bank, draws=kwargs["draws"], seed=kwargs["seed"], device=kwargs["device"],
                       dtype=kwargs["dtype"], name=name)


# name -> (builder(model, bank, scorer kwargs, scorer name), one-line description)
EXTENSIONS: dict[str, tuple[Callable[..., Any], str]] = {
    "bank": (_bank, "negatives from a bank of clean reference latents: " + ", ".join(BANK_MEASURES)),
    "typicality": (_typicality, "distance of z and c to a k-means codebook of clean speech: typ:{z,c}.{mean,max,std}"),
    "combo": (_combo, "mean of p_pos.mean and typ:z.mean, each standardised on the reference clips: combo"),
}


def sign_of(measure: str) -> int:
    """The sign applied to an extension measure's raw value (all reported scores are quality-oriented)."""
    if measure.startswith("bank:") and measure[5:] in MEASURES:
        return MEASURES[measure[5:]].sign
    if measure.startswith("typ:"):
        return -1  # a distance
    return 1


def extension_candidates(candidates: list, names: Sequence[str], bank_path: str | os.PathLike | None,
                         cache_dir: str | os.PathLike | None, scorer_kwargs: dict) -> list:
    """``candidates`` plus, for each wav2vec one (checkpoints and random-init), one per extension in ``names``.

    ``candidates`` are :class:`toolkit.scoring.evaluate.Candidate` objects; each extension candidate is
    a copy named ``NAME+EXTENSION`` whose scorer wraps the base candidate's model.
    """
    unknown = [n for n in names if n not in EXTENSIONS]
    if unknown:
        raise ToolkitError("--extension", f"unknown extension(s) {unknown}; choose from {', '.join(EXTENSIONS)}")
    if bank_path is None:
        raise ToolkitError("--bank", "the extensions need a reference bank: make one with `toolkit bank AUDIO --output bank.pt`")
    bank = load_bank(bank_path)
    extra = []
    for cand in candidates:
        if cand.role == "control" and cand.name != "random-init":
            continue  # acoustic features have no latents
        for ext in names:
            new = dataclasses.replace(cand, name=f"{cand.name}+{ext}", source=f"{cand.source} ({ext} extension)")

            def build(c=cand, e=ext, new=new):
                base = c.build()
                new.step = c.step  # known once a checkpoint is loaded
                if not isinstance(base, Wav2VecScorer):
                    raise ToolkitError(c.name, f"the {e} extension needs a wav2vec (v1) model")
                return EXTENSIONS[e][0](base.model, bank_for_model(bank, base.model, cache_dir), scorer_kwargs, new.name)

            new.build = build
            extra.append(new)
    return candidates + extra


def merge_extension_scores(scores: dict, base: str, dataset: str, extensions: Sequence[str]) -> dict[str, dict[str, float]]:
    """One ``{key: {measure: score}}`` for ``base`` and its ``base+EXTENSION`` scorers on ``dataset``."""
    merged = {k: dict(v) for k, v in scores.get((base, dataset), {}).items()}
    for ext in extensions:
        for key, row in scores.get((f"{base}+{ext}", dataset), {}).items():
            merged.setdefault(key, {}).update(row)
    return merged


def add_extension_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--extension", action="append", default=[], choices=list(EXTENSIONS), metavar="NAME",
                        help="toolkit extension beyond the paper (repeatable): "
                        + "; ".join(f"{n}: {d}" for n, (_, d) in EXTENSIONS.items()))
    parser.add_argument("--bank", default=None, help="reference bank for --extension (made by `toolkit bank`)")
