"""Per degradation type: SRCC of each scorer against the known severity, from a `toolkit evaluate` run.

The last step of a recipe evaluated on a held-out degradation set (`toolkit degrade` output, given to
`toolkit evaluate` as ``csv:DIR/manifest.csv``): `toolkit evaluate` reports the pooled SRCC against the
pseudo-MOS; this adds the per-type view (mean within-clip SRCC against -severity, bootstrap interval
over clean clips; the same analysis as `toolkit demo`, in ``toolkit.degrade.severity_srcc``).

    python recipes/severity_table.py RESULTS_DIR DATASET_NAME DIR/manifest.csv [--measure p_pos.mean]

Writes RESULTS_DIR/severity_<DATASET_NAME>.csv (every scorer x measure x type) and prints a Markdown
table for --measure: one column per scorer, a row per type, then the mean over types and the worst
type. The acoustic control is shown at its best feature by mean over types (chosen after the fact,
which favours the control).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from toolkit.degrade import rows_by_utt_id
from toolkit.degrade.report import severity_rows
from toolkit.io import atomic_write
from toolkit.scoring.report import read_scores

FIELDS = ["scorer", "measure", "type", "srcc", "ci_low", "ci_high", "pooled", "clips", "nonfinite"]


def scorer_rows(scores_csv: Path, manifest: Path, scorer: str, bootstrap: int = 1000) -> list[dict]:
    """Every measure of one scorer's per-clip scores, per degradation type (the demo's
    :func:`toolkit.degrade.report.severity_rows` on a `toolkit evaluate` scores file)."""
    keyed = {utt: (r.clean_id, r.type, r.severity) for utt, r in rows_by_utt_id(manifest).items()}
    scores = {utt: row for utt, row in read_scores(scores_csv)[0].items() if utt in keyed}
    return severity_rows(scores, keyed, scorer, "", n_boot=bootstrap, seed=0)


def markdown(rows: list[dict], measure: str) -> str:
    """Types x scorers at ``measure`` (acoustic: its best feature by mean over types)."""
    def order(name: str) -> tuple:
        digits = "".join(c for c in name if c.isdigit())
        return (0, int(digits)) if name.startswith("step-") and digits else (1, name)

    scorers = sorted(dict.fromkeys(r["scorer"] for r in rows), key=order)
    types = list(dict.fromkeys(r["type"] for r in rows))
    columns: dict[str, dict[str, dict]] = {}
    for scorer in scorers:
        mine = [r for r in rows if r["scorer"] == scorer]
        chosen = measure
        if scorer == "acoustic":
            means = {}
            for m in dict.fromkeys(r["measure"] for r in mine):
                vals = [r["srcc"] for r in mine if r["measure"] == m and math.isfinite(r["srcc"])]
                means[m] = sum(vals) / len(vals) if vals else -math.inf
            chosen = max(means, key=means.get)
        columns[f"{scorer} {chosen}"] = {r["type"]: r for r in mine if r["measure"] == chosen}
    head = "| type | " + " | ".join(columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for t in types:
        cells = []
        for col in columns.values():
            r = col.get(t)
            ok = r is not None and math.isfinite(r["srcc"])
            cells.append(f"{r['srcc']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]" if ok else "n/a")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    means, worst = [], []
    for col in columns.values():
        vals = {t: r["srcc"] for t, r in col.items() if math.isfinite(r["srcc"])}
        means.append(f"**{sum(vals.values()) / len(vals):+.2f}**" if vals else "n/a")
        low = min(vals, key=vals.get) if vals else None
        worst.append(f"{vals[low]:+.2f} ({low})" if low else "n/a")
    lines.append("| **mean over types** | " + " | ".join(means) + " |")
    lines.append("| worst type | " + " | ".join(worst) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Example: python recipes/severity_table.py runs/zh/results zh-degraded "
                                            "evalsets/zh-degraded/manifest.csv")
    parser.add_argument("results", type=Path, help="a `toolkit evaluate --output` folder")
    parser.add_argument("dataset", help="the dataset name in that run (the NAME= of its --dataset)")
    parser.add_argument("manifest", type=Path, help="the degradation set's manifest.csv")
    parser.add_argument("--measure", default="p_pos.mean", help="measure shown in the table")
    args = parser.parse_args(argv)
    rows = []
    for scores in sorted((args.results / "scores").glob(f"*/{args.dataset}.csv")):
        rows += scorer_rows(scores, args.manifest, scores.parent.name)
    if not rows:
        parser.error(f"no scores for {args.dataset} under {args.results / 'scores'}")
    out = args.results / f"severity_{args.dataset}.csv"
    with atomic_write(out, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(markdown(rows, args.measure))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
