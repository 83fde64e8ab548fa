"""Round 4's rule (docs/results.md section 6, "Round 4"): the extension measure with the highest mean,
over the selection sets, of the mean within-clip SRCC over the degradation types.

    python recipes/beyond/choose.py SEVERITY_CSV [SEVERITY_CSV ...]

Each argument is a ``severity_<set>.csv`` written by ``recipes/severity_table.py``; a set may come in
several files (round 3's results and round 4's), named ``severity_<set>.csv`` alike. Only the
embedded model's rows count (scorers ``model`` and ``model+beyond``). A figure present in two files
of one set must agree. Prints one Markdown table (a row per measure, best first) and the choice.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

BASELINES = ("p_pos.mean", "entropy.mean")  # the paper's measures: reported, never chosen
SCORERS = ("model", "model+beyond")


def read(paths: list[Path]) -> dict[str, dict[str, dict[str, float]]]:
    """``{set: {measure: {type: srcc}}}`` over the given files."""
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for path in paths:
        name = path.stem.removeprefix("severity_")
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row["scorer"] not in SCORERS:
                    continue
                value, types = float(row["srcc"]), table[name][row["measure"]]
                if row["type"] in types and not math.isclose(types[row["type"]], value, abs_tol=1e-9):
                    raise SystemExit(f"{path}: {row['measure']} on {row['type']} is {value}, another file says "
                                     f"{types[row['type']]}")
                types[row["type"]] = value
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="+", type=Path)
    args = parser.parse_args()
    table = read(args.csv)
    sets = sorted(table)
    types = sorted({t for s in sets for m in table[s].values() for t in m})
    means: dict[str, dict[str, float]] = defaultdict(dict)
    for s in sets:
        for measure, by_type in table[s].items():
            if set(by_type) == set(types):  # a measure scored on every type of the set
                means[measure][s] = sum(by_type.values()) / len(by_type)
    complete = {m: v for m, v in means.items() if set(v) == set(sets)}
    overall = {m: sum(v.values()) / len(v) for m, v in complete.items()}
    print("| measure | " + " | ".join(sets) + " | mean over sets |")
    print("|---|" + "---|" * (len(sets) + 1))
    for m in sorted(overall, key=lambda m: -overall[m]):
        label = f"{m} (paper, baseline)" if m in BASELINES else m
        print(f"| {label} | " + " | ".join(f"{complete[m][s]:+.3f}" for s in sets) + f" | {overall[m]:+.3f} |")
    candidates = {m: v for m, v in overall.items() if m not in BASELINES}
    chosen = max(candidates, key=candidates.get)
    print(f"\nchosen by the rule: {chosen} ({candidates[chosen]:+.3f}); "
          f"p_pos.mean {overall.get('p_pos.mean', math.nan):+.3f}, "
          f"margin {candidates[chosen] - overall.get('p_pos.mean', math.nan):+.3f}")


if __name__ == "__main__":
    main()
