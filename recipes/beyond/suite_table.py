"""Per-type table of the degradation suite from `toolkit evaluate` outputs: within-clip SRCC of each
chosen (scorer, measure) with -severity, the mean over the clean clips [bootstrap 95% interval].

    python recipes/beyond/suite_table.py OUT_MODEL OUT_REFS --manifest DEMO/degraded/manifest.csv \
        --column model:p_pos.mean --column model+beyond:typ:z.mean --column distillmos:distillmos.higher_better

Each OUT is an ``--output`` folder of ``toolkit evaluate --dataset suite=csv:MANIFEST``; its
``scores/<scorer>/suite.csv`` are read (the same clips may be scored in several runs). Prints one
markdown row per degradation type and the mean over types (severity rows as the demo makes them:
:func:`toolkit.degrade.report.severity_rows`).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from toolkit.degrade.report import severity_rows


def read_scores(outputs: list[Path], dataset: str) -> dict[str, dict[str, dict[str, float]]]:
    """``{scorer: {utt_id: {measure: value}}}`` over every output folder."""
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for out in outputs:
        for table in sorted((out / "scores").glob(f"*/{dataset}.csv")):
            rows = scores.setdefault(table.parent.name, {})
            for row in csv.DictReader(table.open()):
                values = {k: float(v) for k, v in row.items() if k not in ("utt_id", "system", "mos") and v != ""}
                rows.setdefault(row["utt_id"], {}).update(values)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outputs", nargs="+", type=Path)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--dataset", default="suite")
    parser.add_argument("--column", action="append", required=True, metavar="SCORER:MEASURE")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    keyed = {str(Path(r["path"]).with_suffix("")): (r["clean_id"], r["type"], int(r["severity"]))
             for r in csv.DictReader(args.manifest.open())}
    scores = read_scores(args.outputs, args.dataset)
    cells: dict[str, dict[str, dict]] = {}
    for column in args.column:
        scorer, measure = column.split(":", 1)
        chosen = {k: {measure: v[measure]} for k, v in scores[scorer].items() if measure in v}
        for row in severity_rows(chosen, keyed, scorer, "", n_boot=args.bootstrap, seed=0):
            cells.setdefault(row["type"], {})[column] = row
    clips = {len({keyed[k][0] for k in scores[c.split(":", 1)[0]]}) for c in args.column}
    print(f"clean clips per type: {sorted(clips)}")
    print("| type | " + " | ".join(args.column) + " |")
    print("|---|" + "---|" * len(args.column))
    for kind, row in cells.items():
        text = [f"{row[c]['srcc']:+.2f} [{row[c]['ci_low']:+.2f}, {row[c]['ci_high']:+.2f}]" for c in args.column]
        print(f"| {kind} | " + " | ".join(text) + " |")
    means = [np.mean([row[c]["srcc"] for row in cells.values()]) for c in args.column]
    print("| **mean over types** | " + " | ".join(f"**{m:+.2f}**" for m in means) + " |")


if __name__ == "__main__":
    main()
