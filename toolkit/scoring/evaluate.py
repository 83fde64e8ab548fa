"""Zero-shot evaluation: how well does each uncertainty measure of each checkpoint rank MOS?

Scores every clip of every dataset with every checkpoint (and the controls), then reports utterance-
and system-level SRCC, LCC and Kendall tau with bootstrap 95% intervals for every measure. Scores
are cached per (weights, file, settings), so adding a checkpoint to a finished run only scores that
checkpoint. A positive SRCC means the measure ranks clips the way the method predicts (less
uncertainty, higher MOS); see ``toolkit.scoring.measures`` for each measure's sign.

Example:
    toolkit evaluate runs/pretrain/step-*.pt \\
        --dataset yourtts:../shared/data/mos/yourtts:PT --dataset answers:DIR/label.txt \\
        --control random-init --control acoustic --reference dnsmos --reference distillmos \\
        --output results/eval
    toolkit evaluate --model zh --dataset csv:zh-degraded/manifest.csv --output results/zh --jobs 2

Checkpoints are toolkit checkpoints, Lightning .ckpt files or fairseq wav2vec (v1) checkpoints;
``random:PRESET`` (``random:small``) is a seeded random-weights model of a preset. ``--reference``
adds the field's predictors (DNSMOS, PLCMOS, DistillMOS, and PESQ/STOI where the dataset names a
clean reference per clip; :mod:`toolkit.scoring.references`) as rows with ``role`` ``reference``.

Outputs in --output (:mod:`toolkit.scoring.report`): results.csv / results.json (tidy: one row per scorer x dataset x measure x
level), scores/<scorer>/<dataset>.csv (every measure per clip), answers/<scorer>/<dataset>/<measure>.txt
(VoiceMOS answer format ``utt_id,score``), plots/ (score vs MOS scatters; SRCC vs pretraining step
when several checkpoints carry a step), skipped.csv when clips were skipped, and a W&B run
(offline unless --wandb-mode online).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.models.embedded import embedded_candidates, models_help
from toolkit.scoring import measures as M
from toolkit.scoring.cache import ScoreCache
from toolkit.scoring.candidates import CONTROLS, Candidate, make_candidates
from toolkit.scoring.datasets import SPEC_HELP, DatasetSpec, MosDataset, load_dataset
from toolkit.scoring.metrics import correlate
from toolkit.scoring.references import REFERENCES, check_references
from toolkit.scoring.report import (
    COLUMNS,
    EvaluationResult,
    format_summary,
    log_wandb,
    measure_sign,
    write_outputs,
)
from toolkit.scoring.scorer import resolve_device, runs_in_workers, score_files
from toolkit.scoring.workers import WorkerPool, usable_cores

log = logging.getLogger(__name__)

__all__ = ["COLUMNS", "CONTROLS", "EvaluationResult", "evaluate", "format_summary", "add_arguments", "run"]


def evaluate(
    checkpoints: Sequence[Any],
    datasets: Sequence[str | DatasetSpec | MosDataset],
    measures: Sequence[str] | None = None,
    *,
    controls: Sequence[str] = (),
    references: Sequence[str] = (),
    output_dir: str | os.PathLike | None = None,
    draws: int = 3,
    seed: int = 0,
    device: str | None = "cpu",
    dtype: str | None = None,
    max_batch_seconds: float = 120.0,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    skip_bad: bool = False,
    n_boot: int = 1000,
    limit: int | None = None,
    wandb_mode: str = "offline",
    plots: bool = True,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    extensions: Sequence[str] = (),
    bank: str | os.PathLike | None = None,
    jobs: int = 1,
) -> EvaluationResult:
    """Evaluate N checkpoints (and controls) x M datasets x every selected measure.

    ``checkpoints``: paths, ``random:PRESET`` strings, or ``(name, model[, step])`` tuples where the
    model is a :class:`~toolkit.models.wav2vec.Wav2VecModel` or any scorer object. ``datasets``:
    specs (see :data:`~toolkit.scoring.datasets.SPEC_HELP`) or :class:`MosDataset` objects.
    ``controls``: ``"random-init"`` (the first checkpoint's architecture with seeded random weights)
    and/or ``"acoustic"`` (trivial features). ``references``: names from
    :data:`~toolkit.scoring.references.REFERENCES` (``"dnsmos"``, ``"pesq"``...); the intrusive ones
    score the clips whose :attr:`MosItem.reference` is set. ``limit`` scores a seeded random subset of each dataset.
    Writes everything to ``output_dir`` (nothing when ``None``) and returns the tidy rows.
    ``extensions`` (with ``bank``, a reference bank file) adds the toolkit's extensions beyond the
    paper (:mod:`toolkit.scoring.extensions`) for every wav2vec candidate. ``jobs > 1`` scores on CPU
    in that many worker processes of one thread each, with the same results (see
    :func:`~toolkit.scoring.scorer.score_files`): the wav2vec checkpoints and controls; the
    reference predictors, ``extensions`` and wav2vec 2.0 scorers run in this process.
    """
    start = time.perf_counter()
    check_references(references)  # a missing extra fails before any reading or scoring
    measures = M.select_measures(measures)
    out = Path(output_dir) if output_dir is not None else None
    if use_cache and cache_dir is None and out is not None:
        cache_dir = out / "cache"
    scorer_kwargs = {"measures": measures, "draws": draws, "seed": seed, "device": device, "dtype": dtype}
    candidates = make_candidates(checkpoints, controls, scorer_kwargs, seed, references)
    if extensions:  # toolkit extensions beyond the paper, with a reference bank
        from toolkit.scoring.extensions import extension_candidates

        candidates = extension_candidates(candidates, extensions, bank, cache_dir, scorer_kwargs)
    if not candidates:
        raise ToolkitError("evaluate", "nothing to evaluate: give a checkpoint, random:PRESET, a --control or a --reference")
    # One set of workers for every scorer and dataset, started now (forked where that is safe) while
    # this process reads the datasets and loads the first model.
    pool = WorkerPool(jobs) if jobs > 1 and any(_runs_in_workers(c, device) for c in candidates) else None
    if pool is not None:  # this process waits while the workers score: import what comes after meanwhile
        threading.Thread(target=_import_for_results, args=(plots and out is not None,), daemon=True).start()
    with pool or contextlib.nullcontext():
        loaded: list[MosDataset] = []
        for spec in datasets:
            ds = spec if isinstance(spec, MosDataset) else load_dataset(spec, skip_bad=skip_bad)
            if limit:
                ds = ds.subset(limit, seed)
            loaded.append(ds)
        if len({d.name for d in loaded}) != len(loaded):
            raise ToolkitError("--dataset", f"dataset names must be unique, got {[d.name for d in loaded]} (use NAME=KIND:PATH)")
        result = EvaluationResult([], out)
        for ds in loaded:
            result.skipped += [{"dataset": ds.name, "scorer": "(reader)", "where": w, "problem": p} for w, p in ds.skipped]
            result.notes += [f"{ds.name}: {n}" for n in ds.notes]
            if echo:
                echo(ds.describe())

        for cand in candidates:
            scorer = cand.build()
            cache = ScoreCache(cache_dir, scorer.fingerprint()) if use_cache and cache_dir is not None else None
            for ds in loaded:
                files = _files_for(scorer, ds, result.notes)
                if not files:
                    continue
                run = score_files(
                    scorer, files, cache=cache, max_batch_seconds=max_batch_seconds, skip_bad=skip_bad,
                    progress=progress, desc=f"{cand.name} / {ds.name}", jobs=jobs, pool=pool,
                )
                result.scores[(cand.name, ds.name)] = run.scores
                result.skipped += [
                    {"dataset": ds.name, "scorer": cand.name, "where": s.path, "problem": s.reason} for s in run.skipped
                ]
                for note, count in run.notes.items():
                    result.notes.append(f"{ds.name} ({cand.name}): {count} clip(s) {note}")
                log.info("%s on %s: %d computed, %d from cache, %d skipped", cand.name, ds.name, run.computed, run.cached, len(run.skipped))
                result.rows += correlation_rows(cand, scorer.measures, ds, run.scores, len(run.skipped), n_boot, seed)
            if cache is not None:
                cache.compact()
            del scorer
    result.seconds = time.perf_counter() - start
    if out is not None:
        write_outputs(result, loaded, plots=plots)
        if wandb_mode != "disabled":
            log_wandb(result, out, wandb_mode, {"draws": draws, "seed": seed, "measures": measures, "dtype": dtype})
    if echo:
        echo(format_summary(result))
    return result


def _import_for_results(plots: bool) -> None:
    """Import scipy.stats (the correlations) and matplotlib (the plots), which take about a second."""
    import importlib

    for module in ("scipy.stats",) + (("toolkit.scoring.plots",) if plots else ()):
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - only a head start: a failure shows where the module is used
            return


def _runs_in_workers(cand: Candidate, device: str | None) -> bool:
    """Whether ``score_files(jobs > 1)`` would send this candidate's scorer to worker processes."""
    if cand.role == "reference" or resolve_device(device).type != "cpu":
        return False
    # candidates built from a path or a name (checkpoints, controls, extensions) all say workers = True:
    # no need to load them to know
    return cand.source != "object" or runs_in_workers(cand.build())


def _files_for(scorer, ds: MosDataset, notes: list[str]) -> list[tuple]:
    """``(key, path)`` pairs to score, or ``(key, path, clean reference)`` for an intrusive scorer."""
    if not getattr(scorer, "needs_reference", False):
        return [(it.utt_id, it.path) for it in ds.items]
    files = [(it.utt_id, it.path, it.reference) for it in ds.items if it.reference is not None]
    if len(files) < len(ds.items):
        notes.append(
            f"{ds.name} ({scorer.name}): {len(ds.items) - len(files)} of {len(ds.items)} clip(s) have no clean "
            f"reference, which {scorer.name} needs, and are left out of it (csv: add a 'reference' column)"
        )
    return files


def correlation_rows(
    cand: Candidate, measures: Sequence[str], ds: MosDataset, scores: dict[str, dict[str, float]],
    skipped: int, n_boot: int, seed: int,
) -> list[dict]:
    """The tidy result rows (:data:`COLUMNS`) of one scorer on one dataset: every measure, every level."""
    scored = [it for it in ds.items if it.utt_id in scores]
    mos = [it.mos for it in scored]
    systems = [it.system or "" for it in scored] if ds.has_systems else None
    rows = []
    for measure in measures:
        values = [scores[it.utt_id][measure] for it in scored]
        stats = correlate(values, mos, systems, n_boot=n_boot, seed=seed) if len(values) else {}
        for level, s in stats.items():
            row = {
                "scorer": cand.name, "role": cand.role, "step": cand.step, "dataset": ds.name,
                "measure": measure, "sign": measure_sign(measure), "level": level,
                **{k: s.get(k) for k in COLUMNS if k in s},
                "skipped": skipped,
                "dropped_systems": len(s.get("dropped_systems", [])),
            }
            rows.append({k: row.get(k) for k in COLUMNS})
    return rows


# --------------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT",
                        help="checkpoint files (toolkit .pt, Lightning .ckpt, fairseq wav2vec), or random:PRESET")
    parser.add_argument("--model", action="append", default=[], metavar="NAME", help=f"an embedded model, scored under its name ({models_help()})")
    parser.add_argument("--dataset", action="append", required=True, metavar="SPEC", help=SPEC_HELP)
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--control", action="append", default=[], choices=CONTROLS,
                        help="add a control: random-init (same architecture, seeded random weights), acoustic (trivial features)")
    parser.add_argument("--reference", action="append", default=[], choices=list(REFERENCES), metavar="NAME",
                        help="add a reference predictor (repeatable): "
                        + "; ".join(f"{n}: {r.description}" for n, r in REFERENCES.items())
                        + ". pesq and stoi score clips with a clean reference (degradation suite; csv 'reference' "
                        "column). Needs the [references] extra (scripts/setup.sh --references)")
    parser.add_argument("--measures", default="all",
                        help="comma-separated measure names or patterns (entropy.*,p_pos.mean); default all: "
                        + ", ".join(M.MEASURES))
    parser.add_argument("--draws", type=int, default=3, help="negative draws averaged per clip (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed for negatives, subsets, bootstrap and random init")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    parser.add_argument("--bf16", action="store_true", help="run the network under bf16 autocast")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="worker processes scoring on CPU, one thread each (default: the usable cores, "
                        f"here {usable_cores()}); 1 scores in this process. Same scores, outputs and cache whatever N; "
                        "--reference and --wav2vec2 scorers and GPU runs use one process")
    parser.add_argument("--batch-seconds", type=float, default=120.0, help="audio per batch, padded (default 120 s)")
    parser.add_argument("--cache", default=None, help="score cache folder (default OUTPUT/cache); share it across runs")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the score cache")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unusable clips/rows (counted and listed in skipped.csv) instead of stopping")
    parser.add_argument("--limit", type=int, default=None, help="score a seeded random subset of N clips per dataset")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (default 1000)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--wav2vec2", action="append", default=[], metavar="PATH",
                        help="also score with a local wav2vec 2.0 CTC model (toolkit-saved .pt, fairseq .pt or HF folder): "
                        "CTC-entropy measures")
    parser.add_argument("--handicap", type=float, default=None,
                        help="inference-time dropout p for --wav2vec2 (default 0); only with --wav2vec2")
    parser.add_argument("--passes", type=int, default=None,
                        help="stochastic passes K for --wav2vec2 (default 1); only with --wav2vec2")
    from toolkit.scoring.extensions import add_extension_arguments

    add_extension_arguments(parser)
    parser.add_argument("--wandb-mode", default="offline", choices=("online", "offline", "disabled"),
                        help="W&B logging (default offline: files under OUTPUT/wandb, no network)")


def run(args: argparse.Namespace) -> int:
    measures = [m.strip() for m in args.measures.split(",") if m.strip()]
    try:
        measures = M.select_measures(measures)
    except ValueError as err:
        raise ToolkitError("--measures", str(err)) from None
    if not args.wav2vec2:
        given = [flag for flag, value in (("--handicap", args.handicap), ("--passes", args.passes)) if value is not None]
        if given:
            raise ToolkitError(" and ".join(given), "only applies to --wav2vec2 models: add --wav2vec2 PATH or drop it")
    if args.jobs is not None and args.jobs < 1:
        raise ToolkitError("--jobs", f"must be at least 1, got {args.jobs}")
    handicap = 0.0 if args.handicap is None else args.handicap
    passes = 1 if args.passes is None else args.passes
    if not args.checkpoints and not args.model and not args.control and not args.wav2vec2 and not args.reference:
        raise ToolkitError("evaluate", "nothing to evaluate: give a CHECKPOINT, --model NAME, random:PRESET, a --control or a --reference")
    checkpoints: list = list(args.checkpoints) + embedded_candidates(args.model)
    for path in args.wav2vec2:
        from toolkit.scoring.wav2vec2 import Wav2Vec2CTCScorer, load_wav2vec2

        name = f"{Path(path).stem}-ctc" + (f"-p{handicap:g}x{passes}" if handicap else "")
        scorer = Wav2Vec2CTCScorer(load_wav2vec2(path), dropout=handicap, passes=passes, seed=args.seed,
                                   device=args.device, dtype="bf16" if args.bf16 else None, name=name)
        checkpoints.append((name, scorer))
    evaluate(
        checkpoints, args.dataset, measures, controls=args.control, references=args.reference, output_dir=args.output,
        draws=args.draws, seed=args.seed, device=args.device, dtype="bf16" if args.bf16 else None,
        max_batch_seconds=args.batch_seconds, cache_dir=args.cache, use_cache=not args.no_cache,
        skip_bad=args.skip_bad, n_boot=args.bootstrap, limit=args.limit, wandb_mode=args.wandb_mode,
        plots=not args.no_plots, progress=not args.no_progress, extensions=args.extension, bank=args.bank,
        jobs=usable_cores() if args.jobs is None else args.jobs,
    )
    print(f"results written to {args.output}/results.csv")
    return 0
