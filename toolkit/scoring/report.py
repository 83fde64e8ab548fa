"""The evaluator's outputs: the tidy rows, results.csv/json, per-clip scores, answers, plots, W&B, summary.

Every scorer (checkpoint, control or reference) lands in the same places:

- ``results.csv`` / ``results.json``: one row per scorer x dataset x measure x level (:data:`COLUMNS`);
- ``scores/<scorer>/<dataset>.csv``: every measure per clip;
- ``answers/<scorer>/<dataset>/<measure>.txt``: VoiceMOS answer format ``utt_id,score``;
- ``plots/``: score-vs-MOS scatters per scorer and dataset, and SRCC vs pretraining step (controls
  and references as horizontal bands) when several checkpoints carry a step;
- ``skipped.csv`` when clips were skipped.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import DataError
from toolkit.io import write_json, write_text
from toolkit.scoring import measures as M
from toolkit.scoring.acoustic import FEATURES
from toolkit.scoring.datasets import MosDataset
from toolkit.scoring.references import MEASURES as REFERENCE_MEASURES

log = logging.getLogger(__name__)

COLUMNS = (
    "scorer", "role", "step", "dataset", "measure", "sign", "level", "n", "srcc", "srcc_lo", "srcc_hi",
    "srcc_p", "lcc", "lcc_lo", "lcc_hi", "ktau", "mse_linear", "skipped", "dropped_systems",
)


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


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "x"


def measure_sign(measure: str) -> int:
    """+1 when the reported score grows with predicted quality as measured, -1 when it is negated."""
    if measure in M.MEASURES:
        return M.MEASURES[measure].sign
    if measure in FEATURES:
        return FEATURES[measure][0]
    if measure in REFERENCE_MEASURES:
        return 1
    if ":" in measure:  # bank:..., typ:...: an extension beyond the paper
        from toolkit.scoring.extensions import sign_of

        return sign_of(measure)
    return -1 if measure.startswith("ctc_") else 1


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


def read_scores(path: str | Path) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """A ``scores/<scorer>/<dataset>.csv`` that :func:`write_outputs` wrote, read back:
    ``({utt_id: {measure: score}}, {utt_id: mos})``; an empty or ``nan`` cell reads as NaN."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "scores file not found")

    def number(text: str) -> float:
        return math.nan if text in ("", "nan") else float(text)

    scores: dict[str, dict[str, float]] = {}
    mos: dict[str, float] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for rec in csv.DictReader(handle):
            utt = rec.pop("utt_id")
            rec.pop("system", None)
            mos[utt] = number(rec.pop("mos"))
            scores[utt] = {m: number(v) for m, v in rec.items()}
    return scores, mos


def _scatter(result, out, scorer, ds, items, scores, names) -> None:
    from toolkit.scoring.plots import scatter_grid

    headline = [m for m in M.HEADLINE if m in names] or names[:6]
    panels = []
    for m in headline:
        rho = next((r["srcc"] for r in result.rows if (r["scorer"], r["dataset"], r["measure"], r["level"]) == (scorer, ds.name, m, "utterance")), math.nan)
        label = m if measure_sign(m) > 0 else f"-{m}"
        panels.append((label, [scores[it.utt_id][m] for it in items], rho if rho is not None else math.nan))
    scatter_grid(out / "plots" / f"scatter_{_safe(scorer)}_{_safe(ds.name)}.png", f"{scorer} on {ds.name} ({len(items)} clips)",
                 [it.mos for it in items], panels)


def _step_plots(result: EvaluationResult, out: Path) -> None:
    from toolkit.scoring.plots import srcc_vs_step

    stepped = {r["scorer"] for r in result.rows if r["role"] == "checkpoint" and r["step"] is not None}
    if len(stepped) < 2:
        return
    first_measure: dict[str, str] = {}
    for r in result.rows:
        first_measure.setdefault(r["scorer"], r["measure"])
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
            for r in result.rows:  # each reference's first measure, as a band like the controls
                if (r["role"] == "reference" and r["dataset"] == dname and r["level"] == level
                        and r["srcc"] is not None and r["measure"] == first_measure.get(r["scorer"])):
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


