"""Zero-shot evaluation: how well does each uncertainty measure of each checkpoint rank MOS?

Scores every clip of every dataset with every checkpoint (and the controls), then reports utterance-
and system-level SRCC, LCC and Kendall tau with bootstrap 95% intervals for every measure. Scores
are cached per (weights, file, settings), so adding a checkpoint to a finished run only scores that
checkpoint. A positive SRCC means the measure ranks clips the way the method predicts (less
uncertainty, higher MOS); see ``toolkit.scoring.measures`` for each measure's sign.

Example:
    toolkit evaluate runs/pretrain/step-*.pt \\
        --dataset yourtts:../shared/data/mos/yourtts:PT --dataset answers:DIR/label.txt \\
        --control random-init --control acoustic --output results/eval

Checkpoints are toolkit checkpoints, Lightning .ckpt files or fairseq wav2vec (v1) checkpoints;
``random:PRESET`` (``random:small``) is a seeded random-weights model of a preset.

Outputs in --output: results.csv / results.json (tidy: one row per scorer x dataset x measure x
level), scores/<scorer>/<dataset>.csv (every measure per clip), answers/<scorer>/<dataset>/<measure>.txt
(VoiceMOS answer format ``utt_id,score``), plots/ (score vs MOS scatters; SRCC vs pretraining step
when several checkpoints carry a step), skipped.csv when clips were skipped, and a W&B run
(offline unless --wandb-mode online).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from toolkit.errors import CheckpointError, ToolkitError
from toolkit.io import write_json, write_text
from toolkit.scoring import measures as M
from toolkit.scoring.acoustic import FEATURES, AcousticScorer
from toolkit.scoring.cache import ScoreCache
from toolkit.scoring.datasets import SPEC_HELP, DatasetSpec, MosDataset, load_dataset
from toolkit.scoring.metrics import correlate
from toolkit.scoring.scorer import Wav2VecScorer, score_files

log = logging.getLogger(__name__)

CONTROLS = ("random-init", "acoustic")
COLUMNS = (
    "scorer", "role", "step", "dataset", "measure", "sign", "level", "n", "srcc", "srcc_lo", "srcc_hi",
    "srcc_p", "lcc", "lcc_lo", "lcc_hi", "ktau", "mse_linear", "skipped", "dropped_systems",
)


@dataclass
class Candidate:
    """Something to evaluate: a checkpoint or a control, built lazily (one model in memory at a time)."""

    name: str
    role: str  # "checkpoint" | "control"
    build: Callable[[], Any]
    step: int | None = None
    source: str = ""


@dataclass
class EvaluationResult:
    rows: list[dict]
    output_dir: Path | None
    scores: dict[tuple[str, str], dict[str, dict[str, float]]] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def row(self, scorer: str, dataset: str, measure: str, level: str = "utterance") -> dict:
        for r in self.rows:
            if (r["scorer"], r["dataset"], r["measure"], r["level"]) == (scorer, dataset, measure, level):
                return r
        raise KeyError((scorer, dataset, measure, level))


# --------------------------------------------------------------------------------------------------
# Candidates


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
) -> list[Candidate]:
    """Turn checkpoint paths, ``random:PRESET`` strings, ``(name, model[, step])`` tuples and control
    names into lazily built scorers."""
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
    return out


def _order_for_random_init(candidates: list[Candidate]) -> list[Candidate]:
    # The random-init control copies the first checkpoint's architecture: build checkpoints first.
    return [c for c in candidates if c.role == "checkpoint"] + [c for c in candidates if c.role == "control"]


# --------------------------------------------------------------------------------------------------
# The evaluation


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "x"


def _sign(scorer, measure: str) -> int:
    if hasattr(scorer, "signs"):  # a scorer that says which sign it applied (toolkit.scoring.extensions)
        return scorer.signs[measure]
    if measure in M.MEASURES:
        return M.MEASURES[measure].sign
    if measure in FEATURES:
        return FEATURES[measure][0]
    return -1 if measure.startswith("ctc_") else 1


def evaluate(
    checkpoints: Sequence[Any],
    datasets: Sequence[str | DatasetSpec | MosDataset],
    measures: Sequence[str] | None = None,
    *,
    controls: Sequence[str] = (),
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
) -> EvaluationResult:
    """Evaluate N checkpoints (and controls) x M datasets x every selected measure.

    ``checkpoints``: paths, ``random:PRESET`` strings, or ``(name, model[, step])`` tuples where the
    model is a :class:`~toolkit.models.wav2vec.Wav2VecModel` or any scorer object. ``datasets``:
    specs (see :data:`~toolkit.scoring.datasets.SPEC_HELP`) or :class:`MosDataset` objects.
    ``controls``: ``"random-init"`` (the first checkpoint's architecture with seeded random weights)
    and/or ``"acoustic"`` (trivial features). ``limit`` scores a seeded random subset of each dataset.
    Writes everything to ``output_dir`` (nothing when ``None``) and returns the tidy rows.
    ``extensions`` (with ``bank``, a reference bank file) adds the toolkit's extensions beyond the
    paper (:mod:`toolkit.scoring.extensions`) for every wav2vec candidate.
    """
    start = time.perf_counter()
    measures = M.select_measures(measures)
    out = Path(output_dir) if output_dir is not None else None
    if use_cache and cache_dir is None and out is not None:
        cache_dir = out / "cache"
    loaded: list[MosDataset] = []
    for spec in datasets:
        ds = spec if isinstance(spec, MosDataset) else load_dataset(spec, skip_bad=skip_bad)
        if limit:
            ds = ds.subset(limit, seed)
        loaded.append(ds)
    if len({d.name for d in loaded}) != len(loaded):
        raise ToolkitError("--dataset", f"dataset names must be unique, got {[d.name for d in loaded]} (use NAME=KIND:PATH)")
    scorer_kwargs = {"measures": measures, "draws": draws, "seed": seed, "device": device, "dtype": dtype}
    candidates = _order_for_random_init(make_candidates(checkpoints, controls, scorer_kwargs, seed))
    if extensions:  # toolkit extensions beyond the paper, with a reference bank
        from toolkit.scoring.extensions import extension_candidates

        candidates = extension_candidates(candidates, extensions, bank, cache_dir, scorer_kwargs)
    if not candidates:
        raise ToolkitError("evaluate", "nothing to evaluate: give a checkpoint, random:PRESET or a --control")
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
            files = [(it.utt_id, it.path) for it in ds.items]
            run = score_files(
                scorer, files, cache=cache, max_batch_seconds=max_batch_seconds, skip_bad=skip_bad,
                progress=progress, desc=f"{cand.name} / {ds.name}",
            )
            result.scores[(cand.name, ds.name)] = run.scores
            result.skipped += [
                {"dataset": ds.name, "scorer": cand.name, "where": s.path, "problem": s.reason} for s in run.skipped
            ]
            for note, count in run.notes.items():
                result.notes.append(f"{ds.name} ({cand.name}): {count} clip(s) {note}")
            log.info("%s on %s: %d computed, %d from cache, %d skipped", cand.name, ds.name, run.computed, run.cached, len(run.skipped))
            scored = [it for it in ds.items if it.utt_id in run.scores]
            mos = [it.mos for it in scored]
            systems = [it.system or "" for it in scored] if ds.has_systems else None
            for measure in scorer.measures:
                values = [run.scores[it.utt_id][measure] for it in scored]
                stats = correlate(values, mos, systems, n_boot=n_boot, seed=seed) if len(values) else {}
                for level, s in stats.items():
                    row = {
                        "scorer": cand.name, "role": cand.role, "step": cand.step, "dataset": ds.name,
                        "measure": measure, "sign": _sign(scorer, measure), "level": level,
                        **{k: s.get(k) for k in COLUMNS if k in s},
                        "skipped": len(run.skipped),
                        "dropped_systems": len(s.get("dropped_systems", [])),
                    }
                    result.rows.append({k: row.get(k) for k in COLUMNS})
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


# --------------------------------------------------------------------------------------------------
# Outputs


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else v


def write_outputs(result: EvaluationResult, datasets: Sequence[MosDataset], plots: bool = True) -> None:
    out = result.output_dir
    assert out is not None
    write_text(out / "results.csv", _csv_text(COLUMNS, [[_fmt(r[c]) for c in COLUMNS] for r in result.rows]))
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in result.rows]
    write_json(out / "results.json", {
        "rows": clean, "skipped": result.skipped, "notes": result.notes, "seconds": round(result.seconds, 2),
        "datasets": [{"name": d.name, "kind": d.kind, "source": d.source, "clips": len(d)} for d in datasets],
    })
    if result.skipped:
        write_text(out / "skipped.csv", _csv_text(("dataset", "scorer", "where", "problem"),
                                                  [[s["dataset"], s["scorer"], s["where"], s["problem"]] for s in result.skipped]))
    by_name = {d.name: d for d in datasets}
    for (scorer, dname), scores in result.scores.items():
        ds = by_name[dname]
        items = [it for it in ds.items if it.utt_id in scores]
        if not items:
            continue
        names = list(next(iter(scores.values())).keys())
        rows = [[it.utt_id, it.system or "", it.mos] + [f"{scores[it.utt_id][m]:.7g}" for m in names] for it in items]
        write_text(out / "scores" / _safe(scorer) / f"{_safe(dname)}.csv", _csv_text(["utt_id", "system", "mos", *names], rows))
        for m in names:
            text = "".join(f"{it.utt_id},{scores[it.utt_id][m]:.7g}\n" for it in items)
            write_text(out / "answers" / _safe(scorer) / _safe(dname) / f"{_safe(m)}.txt", text)
        if plots:
            _scatter(result, out, scorer, ds, items, scores, names)
    if plots:
        _step_plots(result, out)


def _scatter(result, out, scorer, ds, items, scores, names) -> None:
    from toolkit.scoring.plots import scatter_grid

    headline = [m for m in M.HEADLINE if m in names] or names[:6]
    panels = []
    for m in headline:
        rho = next((r["srcc"] for r in result.rows if (r["scorer"], r["dataset"], r["measure"], r["level"]) == (scorer, ds.name, m, "utterance")), math.nan)
        label = m if _sign(None, m) > 0 else f"-{m}"
        panels.append((label, [scores[it.utt_id][m] for it in items], rho if rho is not None else math.nan))
    scatter_grid(out / "plots" / f"scatter_{_safe(scorer)}_{_safe(ds.name)}.png", f"{scorer} on {ds.name} ({len(items)} clips)",
                 [it.mos for it in items], panels)


def _step_plots(result: EvaluationResult, out: Path) -> None:
    from toolkit.scoring.plots import srcc_vs_step

    stepped = {r["scorer"] for r in result.rows if r["role"] == "checkpoint" and r["step"] is not None}
    if len(stepped) < 2:
        return
    for dname in sorted({r["dataset"] for r in result.rows}):
        for level in ("utterance", "system"):
            curves: dict[str, list] = {}
            controls: dict[str, tuple] = {}
            for r in result.rows:
                if r["dataset"] != dname or r["level"] != level or r["measure"] not in M.HEADLINE[:3] or r["srcc"] is None:
                    continue
                if r["scorer"] in stepped:
                    curves.setdefault(r["measure"], []).append((r["step"], r["srcc"], r["srcc_lo"], r["srcc_hi"]))
                elif r["role"] == "control" and r["measure"] == "entropy.mean":
                    controls[f"{r['scorer']} {r['measure']}"] = (r["srcc"], r["srcc_lo"], r["srcc_hi"])
            if curves:
                srcc_vs_step(out / "plots" / f"srcc_vs_step_{_safe(dname)}_{level}.png",
                             f"{dname}, {level} level", curves, controls)


def log_wandb(result: EvaluationResult, out: Path, mode: str, config: dict) -> None:
    """The results table, SRCC-vs-step curves and scatter plots as one W&B run (offline by default)."""
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed: skipping W&B logging")
        return
    run = wandb.init(project="toolkit-evaluate", dir=str(out), mode=mode, config=config, reinit=True)
    try:
        run.log({"results": wandb.Table(columns=list(COLUMNS), data=[[r[c] for c in COLUMNS] for r in result.rows])})
        run.define_metric("pretrain_step")
        run.define_metric("srcc/*", step_metric="pretrain_step")
        steps = sorted({r["step"] for r in result.rows if r["role"] == "checkpoint" and r["step"] is not None})
        for step in steps:
            payload: dict[str, Any] = {"pretrain_step": step}
            for r in result.rows:
                if r["step"] == step and r["role"] == "checkpoint" and r["srcc"] is not None:
                    payload[f"srcc/{r['dataset']}/{r['level']}/{r['measure']}"] = r["srcc"]
            run.log(payload)
        for png in sorted((out / "plots").glob("*.png")) if (out / "plots").is_dir() else []:
            run.log({f"plots/{png.stem}": wandb.Image(str(png))})
    finally:
        run.finish()


def _ci(r: dict | None) -> str:
    if r is None or r["srcc"] is None or (isinstance(r["srcc"], float) and math.isnan(r["srcc"])):
        return "        n/a          "
    lo, hi = r["srcc_lo"], r["srcc_hi"]
    lo_s = f"{lo:+.3f}" if lo is not None and not math.isnan(lo) else "  nan "
    hi_s = f"{hi:+.3f}" if hi is not None and not math.isnan(hi) else "  nan "
    return f"{r['srcc']:+.3f} [{lo_s}, {hi_s}]"


def format_summary(result: EvaluationResult) -> str:
    """A readable table per dataset: utterance and system SRCC with 95% bootstrap intervals."""
    lines: list[str] = []
    index = {(r["scorer"], r["dataset"], r["measure"], r["level"]): r for r in result.rows}
    for dname in dict.fromkeys(r["dataset"] for r in result.rows):
        rows = [r for r in result.rows if r["dataset"] == dname and r["level"] == "utterance"]
        n_utt = rows[0]["n"] if rows else 0
        sys_rows = [r for r in result.rows if r["dataset"] == dname and r["level"] == "system"]
        n_sys = sys_rows[0]["n"] if sys_rows else 0
        lines.append("")
        lines.append(f"== {dname}: SRCC with MOS [95% bootstrap CI]; utterance n={n_utt}, system n={n_sys}; "
                     "positive = ranks as the method predicts")
        width = max([len(r["scorer"]) for r in rows] + [6])
        mwidth = max([len(r["measure"]) for r in rows] + [7])
        lines.append(f"{'scorer':<{width}}  {'measure':<{mwidth}}  {'utterance SRCC':<22} {'system SRCC':<22}")
        for r in rows:
            sys_r = index.get((r["scorer"], dname, r["measure"], "system"))
            lines.append(f"{r['scorer']:<{width}}  {r['measure']:<{mwidth}}  {_ci(r):<22} {_ci(sys_r) if sys_rows else '':<22}")
    if result.skipped:
        lines.append(f"\n{len(result.skipped)} clip(s) skipped (see skipped.csv):")
        for s in result.skipped[:10]:
            lines.append(f"  {s['dataset']}: {s['where']}: {s['problem']}")
        if len(result.skipped) > 10:
            lines.append(f"  ... {len(result.skipped) - 10} more")
    for note in dict.fromkeys(result.notes):
        lines.append(f"note: {note}")
    lines.append(f"\nevaluated in {result.seconds:.1f} s")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT",
                        help="checkpoint files (toolkit .pt, Lightning .ckpt, fairseq wav2vec), or random:PRESET")
    parser.add_argument("--dataset", action="append", required=True, metavar="SPEC", help=SPEC_HELP)
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--control", action="append", default=[], choices=CONTROLS,
                        help="add a control: random-init (same architecture, seeded random weights), acoustic (trivial features)")
    parser.add_argument("--measures", default="all",
                        help="comma-separated measure names or patterns (entropy.*,p_pos.mean); default all: "
                        + ", ".join(M.MEASURES))
    parser.add_argument("--draws", type=int, default=3, help="negative draws averaged per clip (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed for negatives, subsets, bootstrap and random init")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    parser.add_argument("--bf16", action="store_true", help="run the network under bf16 autocast")
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
    parser.add_argument("--handicap", type=float, default=0.0, help="inference-time dropout p for --wav2vec2 (default 0)")
    parser.add_argument("--passes", type=int, default=1, help="stochastic passes K for --wav2vec2 (default 1)")
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
    if not args.checkpoints and not args.control and not args.wav2vec2:
        raise ToolkitError("evaluate", "nothing to evaluate: give a CHECKPOINT, random:PRESET or a --control")
    checkpoints: list = list(args.checkpoints)
    for path in args.wav2vec2:
        from toolkit.scoring.wav2vec2 import Wav2Vec2CTCScorer, load_wav2vec2

        name = f"{Path(path).stem}-ctc" + (f"-p{args.handicap:g}x{args.passes}" if args.handicap else "")
        scorer = Wav2Vec2CTCScorer(load_wav2vec2(path), dropout=args.handicap, passes=args.passes, seed=args.seed,
                                   device=args.device, dtype="bf16" if args.bf16 else None, name=name)
        checkpoints.append((name, scorer))
    evaluate(
        checkpoints, args.dataset, measures, controls=args.control, output_dir=args.output,
        draws=args.draws, seed=args.seed, device=args.device, dtype="bf16" if args.bf16 else None,
        max_batch_seconds=args.batch_seconds, cache_dir=args.cache, use_cache=not args.no_cache,
        skip_bad=args.skip_bad, n_boot=args.bootstrap, limit=args.limit, wandb_mode=args.wandb_mode,
        plots=not args.no_plots, progress=not args.no_progress, extensions=args.extension, bank=args.bank,
    )
    print(f"results written to {args.output}/results.csv")
    return 0
