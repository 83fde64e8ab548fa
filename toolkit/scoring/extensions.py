"""Toolkit extensions beyond the paper: scorers that compare a clip with clean reference speech.

The paper scores a clip by the uncertainty of wav2vec's contrastive task *within* the clip. These
extensions (issue 15; results in ``docs/results.md``, "Beyond the paper") also use a
:class:`~toolkit.scoring.bank.ReferenceBank` built once from clean real speech:

``bank``        the paper's measures with negatives drawn from the bank (:class:`BankNegatives`)
``typicality``  distance of each frame's latent to a k-means codebook (:class:`Typicality`)
``combo``       ``p_pos.mean`` and ``typ:z.mean``, each standardised by its mean and standard
                deviation over the reference clips, averaged (:class:`Combo`). Fixed in
                advance; no weight is fitted to any rating.
``prediction``  how the predictions behave: their error in latent space, their calibration per
                step, forward/time-reversed agreement, and two-sided predictability against the
                reference clips (:class:`~toolkit.scoring.prediction.PredictionChecks`)
``probe``       how much ``p_pos.mean`` drops when the clip is degraded once more by a fixed
                operation (:class:`~toolkit.scoring.probe.Probes`); needs no reference audio
``dynamics``    how much ``z`` and ``c`` change from one frame to the next
                (:class:`~toolkit.scoring.dynamics.Dynamics`); needs no reference audio

Each family is switched on by name: ``toolkit evaluate CKPT --extension combo --bank bank.pt ...``.
Every wav2vec candidate (checkpoints and the random-init control) then gets one extra scorer,
:class:`ExtensionScorer`, named ``CANDIDATE+beyond``, which runs the network once per clip for all
the families switched on, with the bank rebuilt for its own weights where they differ.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
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
    BankNegatives,
    ReferenceBank,
    bank_for_model,
    load_bank,
    shipped_bank,
    standardise,
    utterance_measures,
)
from toolkit.scoring.dynamics import Dynamics
from toolkit.scoring.measures import MEASURES
from toolkit.scoring.prediction import PREDICTION_SIGNS, PredictionChecks
from toolkit.scoring.probe import Probes
from toolkit.scoring.scorer import Wav2VecScorer, autocast_context, check_batch, resolve_device
from toolkit.scoring.typicality import TYPICALITY_MEASURES, Typicality

# The measure chosen by the protocol in docs/results.md ("Beyond the paper"): what the demo prints.
# Round 1 chose typ:z.mean (highest mean SRCC over the 10 degradation types); round 2 replaced it by
# combo.worse under a rule written before it was computed (+0.85 against +0.82 on the selection set).
# Both were chosen on one synthetic voice and fell behind on real voices. Round 4 chose on three
# real-voice sets instead: combo, the best extension measure there (+0.698 against p_pos.mean's +0.695).
CHOSEN = ("combo", "combo")  # (extension, measure)
SUFFIX = "+beyond"  # the extension scorer of candidate NAME is NAME+beyond

log = logging.getLogger(__name__)


def standardised_parts(values: dict[str, Tensor], reference: dict[str, Sequence[float]], parts: Sequence[str]) -> Tensor:
    """``[len(parts), B]``: each part's ``(values[p] - mean_p) / std_p`` with ``reference[p] = (mean_p, std_p)``.

    Values are quality-oriented scores, so the rows are too. A part whose reference spread is 0
    cannot be standardised: ``ValueError``.
    """
    return torch.stack([standardise(values[part], *reference[part], name=part) for part in parts])


class Combo:
    """The ``combo`` family: ``p_pos.mean`` (negatives from the utterance, as the paper) and
    ``typ:z.mean``, each standardised by the bank's reference statistics, then averaged (``combo``)
    or the lower of the two taken (``combo.worse``: a clip is as good as the part that finds it
    worse, so a degradation one part misses or even rewards, like Vorbis for ``p_pos.mean``, is still
    seen by the other)."""

    measures = ["combo", "combo.worse"]

    def __init__(self, model: torch.nn.Module, bank: ReferenceBank, draws: int = 3, seed: int = 0) -> None:
        self.model, self.bank, self.draws, self.seed = model, bank, draws, seed
        self.typicality = Typicality(bank, ["typ:z.mean"])

    def fingerprint(self) -> dict:
        return {"family": "combo", "version": 2, "parts": list(COMBO_PARTS), "draws": self.draws, "seed": self.seed}

    def compute(self, encoding: tuple[Tensor, Tensor, Tensor, Tensor], key: str) -> dict[str, Tensor]:
        values = {**utterance_measures(self.model, encoding, key, ["p_pos.mean"], self.draws, self.seed),
                  **self.typicality.compute(encoding, key)}
        parts = standardised_parts(values, self.bank.reference, COMBO_PARTS)
        return {"combo": parts.mean(0).float(), "combo.worse": parts.min(0).values.float()}


# name -> (family builder(model, bank, draws, seed), one-line description)
EXTENSIONS: dict[str, tuple[Callable[..., Any], str]] = {
    "bank": (lambda m, b, d, s: BankNegatives(m, b, BANK_MEASURES, d, s),
             "negatives from a bank of clean reference latents: " + ", ".join(BANK_MEASURES)),
    "typicality": (lambda m, b, d, s: Typicality(b, TYPICALITY_MEASURES),
                   "distance of z and c to a k-means codebook of clean speech: typ:{z,c}.{mean,max,std}"),
    "combo": (lambda m, b, d, s: Combo(m, b, d, s),
              "p_pos.mean and typ:z.mean, each standardised on the reference clips: their mean (combo) "
              "and the lower of the two (combo.worse)"),
    "prediction": (lambda m, b, d, s: PredictionChecks(m, b, d, s),
                   "prediction error in latent space, per-step calibration, forward/time-reversed agreement, "
                   "two-sided predictability: pred:{err.mean,calib,rev_agree,two_sided}"),
    "probe": (lambda m, b, d, s: Probes(m, b, d, s),
              "how much p_pos.mean drops when the clip is degraded once more (band limit at 4 kHz, white noise "
              "at 20 dB SNR): probe:{lp.delta,noise.delta,lp.plus,both.plus}"),
    "dynamics": (lambda m, b, d, s: Dynamics(),
                 "how much the latent z and the context c change from one frame to the next: dyn:{z,c}.step"),
}


BANKLESS = frozenset({"probe", "dynamics"})  # families that need no reference bank (nor codebook)


def needs_bank(extensions: Sequence[str]) -> bool:
    """Whether any of ``extensions`` needs a reference bank or a shipped codebook."""
    return any(e not in BANKLESS for e in extensions)


class ExtensionScorer:
    """Scorer contract for the extension families in ``extensions``: one network pass per clip, plus
    the passes a family makes over versions of the clip (``needs_clip``: reversed, probed).

    ``bank`` must be built with ``model``'s weights (:func:`~toolkit.scoring.bank.bank_for_model`); it
    may be ``None`` when every family is in :data:`BANKLESS`.
    Clips are scored one at a time over their true length (padding never matters).
    """

    sample_rate = SAMPLE_RATE
    workers = True  # clips are scored one at a time, seeded by key: the same in any worker (tested)

    def __init__(self, model: torch.nn.Module, bank: ReferenceBank | None, extensions: Sequence[str], draws: int = 3,
                 seed: int = 0, device: str | torch.device | None = "cpu", dtype: str | None = None,
                 name: str = "beyond") -> None:
        unknown = [e for e in extensions if e not in EXTENSIONS]
        if unknown or not extensions:
            raise ValueError(f"extensions must be some of {', '.join(EXTENSIONS)}, got {list(extensions)}")
        if bank is not None:
            bank.check_model(model)
        elif needs_bank(extensions):
            raise ValueError(f"extensions {', '.join(e for e in extensions if e not in BANKLESS)} need a reference bank")
        self.name = name
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.bank, self.dtype = bank, dtype
        self.extensions = list(dict.fromkeys(extensions))
        self.families = [EXTENSIONS[e][0](self.model, bank, draws, seed) for e in self.extensions]
        self.measures = [m for f in self.families for m in f.measures]
        self.signs = {m: sign_of(m) for m in self.measures}
        self.min_samples = int(model.min_samples)

    def fingerprint(self) -> dict:
        bank = self.bank.sha256 if self.bank is not None else None
        return {"scorer": "extensions", "bank_sha256": bank, "dtype": self.dtype or "float32",
                "families": [f.fingerprint() for f in self.families], "sample_rate": self.sample_rate}

    @torch.inference_mode()
    def score(self, wavs: Tensor, lengths: Tensor | None = None, keys: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Quality-oriented scores ``{measure: [B]}`` (float32, CPU) for ``wavs [B, time]`` at 16 kHz."""
        lengths, keys = check_batch(wavs, lengths, keys)
        rows = []
        for i, n in enumerate(lengths.tolist()):
            if n < self.min_samples:
                raise ValueError(f"{keys[i]}: {n} samples, shorter than the model's minimum of {self.min_samples}")
            wav = wavs[i : i + 1, : int(n)].to(self.device, torch.float32)
            length = lengths[i : i + 1].to(self.device)

            def encode(clip: Tensor, length: Tensor = length) -> tuple[Tensor, Tensor, Tensor, Tensor]:
                with autocast_context(self.device, self.dtype):
                    z, c, predictions, frame_lengths = self.model.encode(clip, length)
                return z.float(), c.float(), predictions.float(), frame_lengths

            encoding = encode(wav)
            row: dict[str, Tensor] = {}
            for family in self.families:
                if getattr(family, "needs_clip", False):  # more passes over versions of the clip
                    row.update(family.compute(encoding, keys[i], wav, encode))
                else:
                    row.update(family.compute(encoding, keys[i]))
            rows.append(row)
        return {m: torch.cat([r[m] for r in rows]).float().cpu() for m in self.measures}


def sign_of(measure: str) -> int:
    """The sign applied to an extension measure's raw value (all reported scores are quality-oriented)."""
    if measure.startswith("bank:") and measure[5:] in MEASURES:
        return MEASURES[measure[5:]].sign
    if measure.startswith("typ:"):
        return -1  # a distance
    if measure in PREDICTION_SIGNS:
        return PREDICTION_SIGNS[measure]
    return 1


def extension_candidates(candidates: list, names: Sequence[str], bank_path: str | os.PathLike | None,
                         cache_dir: str | os.PathLike | None, scorer_kwargs: dict) -> list:
    """``candidates`` plus, for each wav2vec one (checkpoints and random-init), one per extension in ``names``.

    Without ``bank_path`` each candidate uses the codebook shipped for its weights
    (:func:`~toolkit.scoring.bank.shipped_bank`: the embedded default and its random-init control);
    a checkpoint without one is left out with a one-line warning (unless every extension in ``names``
    is in :data:`BANKLESS`: then it is scored without a bank), and the random-init control is
    extended only when a checkpoint is. ``--extension bank`` always needs ``bank_path``.

    ``candidates`` are :class:`toolkit.scoring.evaluate.Candidate` objects; each extension candidate is
    a copy named ``NAME+EXTENSION`` whose scorer wraps the base candidate's model.
    """
    unknown = [n for n in names if n not in EXTENSIONS]
    if unknown:
        raise ToolkitError("--extension", f"unknown extension(s) {unknown}; choose from {', '.join(EXTENSIONS)}")
    if bank_path is None and "bank" in names:
        raise ToolkitError("--extension bank", "needs a reference bank with negatives: make one with "
                                               "`toolkit bank AUDIO --checkpoint CKPT --output bank.pt`, pass it with --bank")
    bank = load_bank(bank_path) if bank_path is not None else None
    extra = []
    for cand in candidates:
        if cand.role != "checkpoint" and cand.name != "random-init":
            continue  # acoustic features and reference predictors have no wav2vec latents
        if cand.source == "object" and not isinstance(cand.build(), Wav2VecScorer):
            continue  # a scorer object of another kind (wav2vec 2.0 CTC): cheap to build, nothing to extend
        shipped = None
        if bank is None:  # no --bank: the codebook shipped for these weights, if any (built now to know them)
            if cand.role == "control" and not extra:
                continue  # the random-init control is extended only beside a model that is
            base = cand.build()
            shipped = shipped_bank(base.model) if isinstance(base, Wav2VecScorer) else None
            del base
            if shipped is None and needs_bank(names):
                log.warning("%s: no codebook ships for its weights, so no %s for it; make one with `toolkit bank "
                            "AUDIO --checkpoint CKPT --output bank.pt` and pass --bank", cand.name, ", ".join(names))
                continue
        new = dataclasses.replace(cand, name=f"{cand.name}{SUFFIX}", source=f"{cand.source} (extensions {', '.join(names)})")

        def build(c=cand, new=new, shipped=shipped):
            base = c.build()
            new.step = c.step  # known once a checkpoint is loaded
            if not isinstance(base, Wav2VecScorer):
                raise ToolkitError(c.name, "the extensions need a wav2vec (v1) model")
            own = shipped if shipped is not None or bank is None else bank_for_model(bank, base.model, cache_dir)
            return ExtensionScorer(base.model, own, names, draws=scorer_kwargs["draws"], seed=scorer_kwargs["seed"],
                                   device=scorer_kwargs["device"], dtype=scorer_kwargs["dtype"], name=new.name)

        new.build = build
        extra.append(new)
    return candidates + extra


def merge_extension_scores(scores: dict, base: str, dataset: str) -> dict[str, dict[str, float]]:
    """One ``{key: {measure: score}}`` for scorer ``base`` and its extension scorer on ``dataset``."""
    merged = {k: dict(v) for k, v in scores.get((base, dataset), {}).items()}
    for key, row in scores.get((f"{base}{SUFFIX}", dataset), {}).items():
        merged.setdefault(key, {}).update(row)
    return merged


def add_extension_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--extension", action="append", default=[], choices=list(EXTENSIONS), metavar="NAME",
                        help="toolkit extension beyond the paper (repeatable): "
                        + "; ".join(f"{n}: {d}" for n, (_, d) in EXTENSIONS.items()))
    parser.add_argument("--bank", default=None,
                        help="reference bank for --extension (made by `toolkit bank`); default: the codebook shipped "
                             "with the embedded default model and its random-init control (typicality, combo, prediction); "
                             "probe and dynamics need none")
