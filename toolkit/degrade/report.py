"""Tables of a scored degradation set: SRCC with the known quality order (-severity) per type, for
each scorer and measure (tidy rows), the fixed-width table the demo prints and its heatmap."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from toolkit.degrade.analysis import severity_srcc

log = logging.getLogger(__name__)


def severity_rows(
    scores: dict[str, dict[str, float]],
    keyed_rows: dict[str, tuple[str, str, int]],
    scorer: str,
    role: str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """Tidy rows (scorer, measure, type, srcc, ci, pooled...) for one scorer's ``{key: {measure: value}}``."""
    keys = [k for k in keyed_rows if k in scores]
    if not keys:
        return []
    clean_ids = [keyed_rows[k][0] for k in keys]
    types = [keyed_rows[k][1] for k in keys]
    severity = [keyed_rows[k][2] for k in keys]
    rows = []
    for measure in scores[keys[0]]:
        values = [scores[k][measure] for k in keys]
        for name, r in severity_srcc(values, severity, clean_ids, types, bootstrap=n_boot, seed=seed).items():
            if r.nonfinite:
                log.warning("%s %s, %s: %d of %d clips have a NaN/Inf score and are left out of its SRCC",
                            scorer, measure, name, r.nonfinite, r.nonfinite + r.rows)
            rows.append(
                {
                    "scorer": scorer,
                    "role": role,
                    "measure": measure,
                    "type": name,
                    "srcc": r.srcc,
                    "ci_low": r.ci_low,
                    "ci_high": r.ci_high,
                    "pooled": r.pooled,
                    "clips": r.clips,
                    "rows": r.rows,
                    "constant_clips": r.constant_clips,
                    "nonfinite": r.nonfinite,
                }
            )
    return rows


def _cell(row: dict | None, label: str = "") -> str:
    if row is None or not math.isfinite(row["srcc"]):
        return "n/a"
    text = f"{row['srcc']:+.2f} [{row['ci_low']:+.2f},{row['ci_high']:+.2f}]"
    return f"{text} {label}".rstrip()


def format_table(
    rows: Sequence[dict],
    types: Sequence[str],
    model_name: str,
    measures: Sequence[str],
    others: Sequence[str] = ("random-init", "acoustic"),
) -> str:
    """A fixed-width table: one line per type; the model's headline measures, then the controls and
    references (``others``).

    Controls and references are shown at their *best* (largest |SRCC| over their measures, named),
    which favours them: a claim for the model has to clear that.
    """
    index = {(r["scorer"], r["measure"], r["type"]): r for r in rows}

    def best(scorer: str, name: str) -> str:
        candidates = [
            r for r in rows if r["scorer"] == scorer and r["type"] == name and math.isfinite(r["srcc"])
        ]
        if not candidates:
            return "n/a"
        top = max(candidates, key=lambda r: abs(r["srcc"]))
        return _cell(top, f"({top['measure']})")

    headers = ["type", *[f"{model_name}: {m}" for m in measures], *[f"{o}: best" for o in others]]
    lines = []
    for name in types:
        cells = [name] + [_cell(index.get((model_name, m, name))) for m in measures]
        cells += [best(o, name) for o in others]
        lines.append(cells)
    means = ["mean"]
    for m in measures:
        vals = [index[(model_name, m, t)]["srcc"] for t in types if (model_name, m, t) in index]
        means.append(f"{np.mean(vals):+.2f}" if vals else "n/a")
    means += [""] * len(others)
    lines.append(means)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*headers), fmt.format(*["-" * w for w in widths])]
    out += [fmt.format(*cells) for cells in lines]
    return "\n".join(out)


def plot_heatmap(
    rows: Sequence[dict],
    types: Sequence[str],
    path: str | os.PathLike,
    model_name: str,
    title: str,
    measures: Sequence[str],
) -> None:
    """SRCC heatmap: the model's and random-init's ``measures``, then every acoustic feature (rows) x
    degradation types."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = {(r["scorer"], r["measure"], r["type"]): r["srcc"] for r in rows}
    labels: list[tuple[str, str]] = [(model_name, m) for m in measures]
    labels += [("random-init", m) for m in measures]
    labels += sorted({(r["scorer"], r["measure"]) for r in rows if r["scorer"] == "acoustic"})
    labels = [lab for lab in labels if any((lab[0], lab[1], t) in index for t in types)]
    grid = np.array([[index.get((s, m, t), np.nan) for t in types] for s, m in labels])
    fig, ax = plt.subplots(figsize=(1.0 * len(types) + 3.5, 0.42 * len(labels) + 1.8))
    image = ax.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(types)), types, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), [f"{s}: {m}" for s, m in labels])
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:+.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="SRCC with -severity (within clip)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
