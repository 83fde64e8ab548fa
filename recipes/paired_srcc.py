"""Paired comparison of two scorers on the same clips: SRCC(A) - SRCC(B) with a cluster bootstrap.

Two unpaired intervals can overlap while one scorer beats the other on every resample of the same
clips; this is the test for "did adaptation help on this held-out set". Each argument is a per-clip
scores file written by `toolkit evaluate` (``RESULTS/scores/<scorer>/<dataset>.csv``); the clips
both files share are compared. With ``--manifest`` (a `toolkit degrade` manifest) the clips of one
clean recording are resampled together, since its 41 versions are not independent.

    python recipes/paired_srcc.py runs/zh-adapted/results/scores/step-000001000/zh.csv \\
        runs/zh-adapted/results/scores/step-0/zh.csv --manifest zh-degraded/manifest.csv

Prints one line per measure: the difference, its 95% interval, the clips and clusters compared.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from toolkit.degrade import rows_by_utt_id
from toolkit.errors import DataError
from toolkit.scoring.metrics import paired_srcc_difference
from toolkit.scoring.report import read_scores


def read_measure(path: Path, measure: str) -> dict[str, tuple[float, float]]:
    """``{utt_id: (score, mos)}`` of one measure from a scores file."""
    scores, mos = read_scores(path)
    if scores and measure not in next(iter(scores.values())):
        raise DataError(path, f"no column {measure!r}")
    return {utt: (row[measure], mos[utt]) for utt, row in scores.items()}


def compare(a: Path, b: Path, measure: str, manifest: Path | None, n_boot: int, seed: int) -> dict:
    """The paired difference of ``measure`` between scores files ``a`` and ``b``."""
    sa, sb = read_measure(a, measure), read_measure(b, measure)
    keys = sorted(k for k in set(sa) & set(sb) if math.isfinite(sa[k][0]) and math.isfinite(sb[k][0]))
    if len(keys) < 3:
        raise DataError(b, f"only {len(keys)} clip(s) with finite scores shared with {a}")
    groups = None
    if manifest is not None:
        rows = rows_by_utt_id(manifest)
        unknown = [k for k in keys if k not in rows]
        if unknown:
            raise DataError(manifest, f"{len(unknown)} scored clip(s) are not in it, e.g. {unknown[0]!r}")
        groups = [rows[k].clean_id for k in keys]
    mos = [sa[k][1] for k in keys]
    result = paired_srcc_difference([sa[k][0] for k in keys], [sb[k][0] for k in keys], mos, groups,
                                    n_boot=n_boot, seed=seed)
    return {**result, "clips": len(keys), "only_a": len(set(sa) - set(sb)), "only_b": len(set(sb) - set(sa))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="scores file of scorer A")
    parser.add_argument("b", type=Path, help="scores file of scorer B (the difference is A - B)")
    parser.add_argument("--measure", action="append", help="measure(s) to compare (default: p_pos.mean)")
    parser.add_argument("--manifest", type=Path, help="toolkit degrade manifest: resample clean recordings")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        for measure in args.measure or ["p_pos.mean"]:
            r = compare(args.a, args.b, measure, args.manifest, args.bootstrap, args.seed)
            extra = f"; {r['only_a']} clip(s) only in A, {r['only_b']} only in B" if r["only_a"] or r["only_b"] else ""
            print(f"{measure}: {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}] "
                  f"({r['clips']} clips, {r['groups']} clusters{extra})")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
