"""The end-to-end demo: synthetic clean speech -> graded degradations -> zero-shot ranking, with controls.

1. Synthesises clean English speech from sentences written for this project (Piper's bundled CC0
   voice, else espeak-ng). **The clean speech is synthetic**; the output says so everywhere.
2. Expands it into a graded set with the degradation suite (``toolkit degrade``): noise, babble,
   clipping, band-limiting, Opus/Vorbis/MP3, mu-law, reverberation, packet loss.
3. Scores every clip with a wav2vec model's contrastive uncertainty, next to two controls: the same
   architecture with random weights, and trivial acoustic features.
4. Reports, per degradation type, the SRCC between each score and the known quality order
   (``-severity``; +1 = the score falls exactly as the degradation grows), mean within clip with a
   bootstrap 95% interval over clips.

Model: ``--checkpoint`` if given, else the embedded default in ``toolkit/assets/default/``. The
output names the model used.

Writes to DIR: ``clean/`` (synthetic speech), ``degraded/`` (graded set and manifest.csv),
``evaluate/`` (per-clip scores; SRCC against a pseudo-MOS pooled over all types),
``severity_srcc.csv``/``.json`` (every scorer x measure x type), ``severity_srcc.png``, ``summary.txt``.

Example:
  toolkit demo --output demo_out
  toolkit demo --output demo_out --checkpoint runs/pretrain/last.pt --sentences 20 --levels 5
  toolkit demo --output demo_singing --model singing     # an embedded domain model, by name
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from toolkit.degrade import DEGRADATIONS, degrade_files, parse_types, read_manifest
from toolkit.degrade.report import format_table, plot_heatmap, severity_rows
from toolkit.errors import CheckpointError, ToolkitError
from toolkit.io import atomic_write, write_json, write_text
from toolkit.models.embedded import ASSETS as EMBEDDED_ASSETS
from toolkit.models.embedded import DEFAULT as EMBEDDED_DEFAULT

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = EMBEDDED_ASSETS / EMBEDDED_DEFAULT
CHECKPOINT_SUFFIXES = (".pt", ".ckpt")
HEADLINE_MEASURES = ("entropy.mean", "p_pos.mean", "loss_bce")
DEMO_SENTENCES = 10
DEMO_LEVELS = 4


@dataclass
class ModelChoice:
    """The model the demo scores with, and a plain description of where it came from."""

    name: str
    model: torch.nn.Module
    description: str
    kind: str  # "checkpoint" | "embedded-default"
    step: int | None = None
    path: str | None = None
    training: dict = field(default_factory=dict)

    def info(self) -> dict:
        """Where the model came from, as written to the results (no weights)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "path": self.path,
            "step": self.step,
            "training": self.training,
        }


@dataclass
class DemoResult:
    output_dir: str
    rows: list[dict]
    summary: str
    model: dict
    synthesis: dict
    seconds: dict


# --------------------------------------------------------------------------------------------------
# The model


def find_default_checkpoint(folder: str | os.PathLike = DEFAULT_MODEL_DIR) -> Path | None:
    """The embedded default checkpoint: ``model.pt`` in ``folder``, else its only ``*.pt``/``*.ckpt``."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if (folder / "model.pt").is_file():
        return folder / "model.pt"
    found = sorted(p for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
    if len(found) > 1:
        raise CheckpointError(
            folder, f"several checkpoints ({', '.join(p.name for p in found)}); name one model.pt"
        )
    return found[0] if found else None


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_choice(path: str | os.PathLike, kind: str) -> ModelChoice:
    """Load a checkpoint as the demo's model (``kind``: ``checkpoint`` or ``embedded-default``)."""
    from toolkit.models.checkpoint import load_checkpoint

    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    model, info = load_checkpoint(path)
    step = info.get("step")
    card = next((p for p in (path.parent / "MODEL_CARD.md", path.parent / "README.md") if p.is_file()), None)
    what = "the embedded default model" if kind == "embedded-default" else "checkpoint"
    description = (
        f"{what} {path} ({info.get('source')} format, {_parameters(model):,} parameters"
        f"{f', step {step}' if step is not None else ''})" + (f"; model card: {card}" if card else "")
    )
    return ModelChoice("model", model, description, kind, step, str(path))


# --------------------------------------------------------------------------------------------------
# The demo


def demo(
    output_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    sentences: int = DEMO_SENTENCES,
    levels: int = DEMO_LEVELS,
    types: str | Sequence[str] | None = None,
    engine: str = "auto",
    seed: int = 0,
    draws: int = 2,
    measures: Sequence[str] | None = None,
    n_boot: int = 1000,
    default_dir: str | os.PathLike = DEFAULT_MODEL_DIR,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    bank: str | os.PathLike | None = None,
    references: Sequence[str] | None = None,
) -> DemoResult:
    """Run the whole demo into ``output_dir`` and return its rows and the printed summary.

    ``measures`` defaults to every registered measure. ``references`` (default: every reference
    predictor whose extra is installed, :func:`toolkit.scoring.references.available_references`)
    are scored on the same clips and shown beside the model; ``()`` leaves them out. The measure chosen
    beyond the paper (:data:`toolkit.scoring.extensions.CHOSEN`) is scored too, for the model and the
    random-init control, and printed beside the paper's: with the codebooks shipped for the embedded
    default, or with ``bank`` (a reference bank from ``toolkit bank``) for any model.
    """
    from toolkit.scoring.datasets import MosDataset, MosItem
    from toolkit.scoring.evaluate import evaluate
    from toolkit.scoring.extensions import CHOSEN, merge_extension_scores
    from toolkit.synth import SENTENCES, synthesize

    say = echo or (lambda _text: None)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = parse_types(types)
    if not 1 <= sentences <= len(SENTENCES):
        raise ToolkitError("--sentences", f"choose 1..{len(SENTENCES)}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CheckpointError(checkpoint, "file not found")
    timings: dict[str, float] = {}

    # 1. Clean speech: synthetic, from our own sentences.
    t0 = time.perf_counter()
    say(
        "NOTE: the clean speech in this demo is SYNTHETIC (text-to-speech), made now from sentences written for this project."
    )
    clips = synthesize(out / "clean", SENTENCES[:sentences], engine=engine, seed=seed)
    synthesis = {
        "synthetic": True,
        "engine": clips[0].engine,
        "voice": clips[0].voice,
        "sentences": len(clips),
        "seconds_of_audio": round(sum(c.duration for c in clips), 1),
    }
    say(
        f"synthesised {len(clips)} sentences ({synthesis['seconds_of_audio']} s) with {synthesis['engine']} ({synthesis['voice']})"
    )
    timings["synthesis"] = time.perf_counter() - t0

    # 2. The model.
    t0 = time.perf_counter()
    if checkpoint is not None:
        choice = load_choice(checkpoint, "checkpoint")
    elif (default := find_default_checkpoint(default_dir)) is not None:
        choice = load_choice(default, "embedded-default")
    else:
        raise CheckpointError(
            default_dir, "the embedded default model is missing from this installation (expected model.pt); "
            "reinstall the toolkit or pass --checkpoint"
        )
    say(f"model: {choice.description}")
    timings["model"] = time.perf_counter() - t0

    # 3. The graded set.
    t0 = time.perf_counter()
    result = degrade_files([c.path for c in clips], out / "degraded", types=names, levels=levels, seed=seed)
    rows = read_manifest(result.manifest)
    keyed = {f"{r.clean_id}/{Path(r.path).stem}": (r.clean_id, r.type, r.severity) for r in rows}
    clean_of = {r.clean_id: Path(r.path) for r in rows if r.type == "clean"}  # PESQ's and STOI's reference
    dataset = MosDataset(
        "degradation-suite",
        "degradation",
        result.manifest,
        [MosItem(f"{r.clean_id}/{Path(r.path).stem}", Path(r.path), r.mos, r.system, clean_of.get(r.clean_id))
         for r in rows],
    )
    say(
        f"degraded: {len(rows)} clips ({len(clips)} clean x {len(names)} types x up to {levels} levels, plus clean)"
    )
    timings["degrade"] = time.perf_counter() - t0

    # 4. Scores, with controls (the evaluator: batching, cache, skips).
    t0 = time.perf_counter()
    if references is None:
        from toolkit.scoring.references import available_references

        references = available_references()
    if references:
        say(f"reference predictors: {', '.join(references)}")
    evaluation = evaluate(
        [(choice.name, choice.model, choice.step)],
        [dataset],
        measures,
        controls=["random-init", "acoustic"],
        references=references,
        output_dir=out / "evaluate",
        draws=draws,
        seed=seed,
        n_boot=200,
        wandb_mode="disabled",
        plots=False,
        progress=progress,
        echo=None,
        # the measure chosen beyond the paper (docs/results.md, section 6), with the codebooks shipped for the
        # embedded default and its random-init control, or ``bank``; a model with neither is left out of it
        extensions=[CHOSEN[0]],
        bank=bank,
    )
    timings["scoring"] = time.perf_counter() - t0

    # 5. SRCC against severity per type.
    t0 = time.perf_counter()
    table_rows: list[dict] = []
    roles = [(choice.name, "model"), ("random-init", "control"), ("acoustic", "control")]
    roles += [(name, "reference") for name in references]
    for scorer, role in roles:
        scores = merge_extension_scores(evaluation.scores, scorer, dataset.name)
        table_rows += severity_rows(scores, keyed, scorer, role, n_boot=n_boot, seed=seed)
    present = [t for t in names if any(r["type"] == t for r in table_rows)]
    headline = [
        m
        for m in HEADLINE_MEASURES + (CHOSEN[1],)
        if any(r["measure"] == m and r["scorer"] == choice.name for r in table_rows)
    ]
    table = format_table(table_rows, present, choice.name, headline, [name for name, role in roles[1:]])
    header = (
        "Degradation demo: SRCC between each score and the known quality order (-severity), mean over "
        f"{len(clips)} clean clips of the within-clip SRCC [95% bootstrap CI]; +1 = the score falls exactly as "
        "the degradation grows.\n"
        f"Clean speech: SYNTHETIC ({synthesis['engine']}, voice {synthesis['voice']}, {len(clips)} sentences written for this project).\n"
        f"Model: {choice.description}\n"
        f"Controls: the same architecture with seeded random weights ('random-init') and trivial acoustic features; "
        "controls are shown at their best measure per type (named), which favours them."
        + (f"\nReference predictors (toolkit evaluate --reference): {', '.join(references)}, also at their best "
           "measure per type; pesq and stoi compare each clip with its clean version (intrusive)." if references else "")
    )
    summary = header + "\n\n" + table
    _write_outputs(out, table_rows, summary, choice, synthesis, timings, levels, seed, present)
    plot_heatmap(
        table_rows,
        present,
        out / "severity_srcc.png",
        choice.name,
        f"SRCC with -severity, synthetic speech ({synthesis['engine']}); model: {choice.kind}",
        HEADLINE_MEASURES,
    )
    timings["analysis"] = time.perf_counter() - t0
    say("")
    say(summary)
    say(f"\nwrote {out / 'severity_srcc.csv'}, {out / 'severity_srcc.png'}, {out / 'summary.txt'}")
    return DemoResult(
        str(out), table_rows, summary, choice.info(), synthesis, {k: round(v, 1) for k, v in timings.items()}
    )


def _write_outputs(out, rows, summary, choice, synthesis, timings, levels, seed, types) -> None:
    columns = [
        "scorer",
        "role",
        "measure",
        "type",
        "srcc",
        "ci_low",
        "ci_high",
        "pooled",
        "clips",
        "rows",
        "constant_clips",
        "nonfinite",
    ]
    with atomic_write(out / "severity_srcc.csv", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    write_json(
        out / "severity_srcc.json",
        {
            "synthetic_speech": True,
            "synthesis": synthesis,
            "model": choice.info(),
            "levels": levels,
            "seed": seed,
            "types": {t: asdict(DEGRADATIONS[t]) for t in types},
            "seconds": {k: round(v, 1) for k, v in timings.items()},
            "rows": rows,
        },
    )
    write_text(out / "summary.txt", summary + "\n")


# --------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="folder for everything the demo writes")
    from toolkit.models.embedded import models_help

    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--checkpoint", default=None, help="score with this checkpoint instead of the embedded default"
    )
    which.add_argument("--model", default=None, metavar="NAME",
                       help=f"score with the embedded model NAME instead of the default ({models_help()})")
    parser.add_argument(
        "--sentences",
        type=int,
        default=DEMO_SENTENCES,
        help=f"synthetic test sentences (default {DEMO_SENTENCES})",
    )
    parser.add_argument(
        "--levels",
        type=int,
        default=DEMO_LEVELS,
        help=f"severities per degradation type (default {DEMO_LEVELS})",
    )
    parser.add_argument("--types", default=None, help="comma-separated degradation types (default: all)")
    parser.add_argument(
        "--engine", default="auto", choices=["auto", "piper", "espeak-ng"], help="speech synthesiser"
    )
    parser.add_argument(
        "--measures", nargs="*", default=None, help="uncertainty measures or patterns (default: all)"
    )
    parser.add_argument("--draws", type=int, default=2, help="negative draws averaged per clip (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bank", default=None,
                        help="reference bank (toolkit bank) for the measure chosen beyond the paper; default: the "
                             "codebook shipped with the embedded default (another checkpoint needs one)")
    parser.add_argument("--no-references", action="store_true",
                        help="leave out the reference predictors (shown by default when the [references] extra "
                             "is installed: scripts/setup.sh --references)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from toolkit.models.embedded import embedded_model

    result = demo(
        args.output,
        checkpoint=embedded_model(args.model).path if args.model else args.checkpoint,
        sentences=args.sentences,
        levels=args.levels,
        types=args.types,
        engine=args.engine,
        seed=args.seed,
        draws=args.draws,
        measures=args.measures,
        progress=not args.no_progress,
        bank=args.bank,
        references=() if args.no_references else None,
    )
    print("timings (s): " + ", ".join(f"{k} {v:g}" for k, v in result.seconds.items()))
    return 0
