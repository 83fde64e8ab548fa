"""Issue 15: every candidate measure (paper + extensions) with its controls, on one set.

    python recipes/beyond/compare.py demo --demo DEMO --bank bank.pt --output OUT    # selection set
    python recipes/beyond/compare.py yourtts:EN --limit 400 --bank bank.pt --output OUT   # selection set
    python recipes/beyond/compare.py yourtts:PT --bank bank.pt --output OUT          # test set

Runs ``toolkit.scoring.evaluate`` with the extensions (default ``bank``, ``typicality``, ``combo``;
choose with ``--extension``, repeatable) and the controls (random-init with the same measures, acoustic features), caching scores in OUT/cache, and
prints a markdown table: for the degradation suite the within-clip SRCC with -severity per type
(mean over clean clips, bootstrap 95% interval over clips); for YourTTS the utterance- and
system-level SRCC with MOS.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from toolkit.degrade.report import severity_rows
from toolkit.scoring.datasets import MosDataset, MosItem, load_dataset
from toolkit.scoring.evaluate import evaluate
from toolkit.scoring.extensions import merge_extension_scores

PAPER = ["p_pos.mean", "entropy.mean"]
EXTENSIONS = ["bank", "typicality", "combo"]
SHARED = Path(__file__).resolve().parents[3] / "shared"


def demo_dataset(demo: Path):
    from toolkit.degrade import read_manifest

    rows = read_manifest(demo / "degraded" / "manifest.csv")
    keyed = {f"{r.clean_id}/{Path(r.path).stem}": (r.clean_id, r.type, r.severity) for r in rows}
    items = [MosItem(f"{r.clean_id}/{Path(r.path).stem}", Path(r.path), r.mos, r.system) for r in rows]
    return MosDataset("degradation-suite", "degradation", str(demo), items), keyed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("set", help="demo, yourtts:EN or yourtts:PT")
    parser.add_argument("--demo", type=Path, default=Path("/work/runs/demo"))
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--bank", default=None,
                        help="reference bank; default: the codebook shipped with the embedded default (no negatives, "
                             "so not for --extension bank)")
    parser.add_argument("--extension", action="append", default=None,
                        help=f"extension family (repeatable); default {' '.join(EXTENSIONS)}")
    parser.add_argument("--checkpoint", default="toolkit/assets/default/model.pt")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if args.set == "demo":
        dataset, keyed = demo_dataset(args.demo)
    else:
        lang = args.set.split(":")[1]
        dataset = load_dataset(f"yourtts-{lang}=yourtts:{args.shared / 'data/mos/yourtts'}:{lang}")
        if args.limit:
            dataset = dataset.subset(args.limit, 0)
        keyed = None
    result = evaluate(
        [args.checkpoint], [dataset], PAPER, controls=["random-init", "acoustic"],
        output_dir=args.output / dataset.name, cache_dir=args.output / "cache", draws=3, seed=0, n_boot=1000,
        wandb_mode="disabled", plots=False, progress=False, echo=None, extensions=args.extension or EXTENSIONS, bank=args.bank,
    )
    model = Path(args.checkpoint).stem
    if keyed is not None:
        rows = []
        for scorer, role in ((model, "model"), ("random-init", "control")):
            merged = merge_extension_scores(result.scores, scorer, dataset.name)
            rows += severity_rows(merged, keyed, "model" if role == "model" else scorer, role, n_boot=1000, seed=0)
        rows += severity_rows(result.scores[("acoustic", dataset.name)], keyed, "acoustic", "control", n_boot=1000, seed=0)
        (args.output / "severity_rows.json").write_text(json.dumps(rows, indent=1, default=float))
        types = list(dict.fromkeys(r["type"] for r in rows))
        measures = list(dict.fromkeys((r["scorer"], r["measure"]) for r in rows))
        print("| scorer | measure | " + " | ".join(types) + " | mean | min |")
        print("|---|---|" + "---|" * (len(types) + 2))
        for scorer, measure in measures:
            cells = {r["type"]: r for r in rows if (r["scorer"], r["measure"]) == (scorer, measure)}
            vals = [cells[t]["srcc"] for t in types]
            text = [f"{cells[t]['srcc']:+.2f} [{cells[t]['ci_low']:+.2f},{cells[t]['ci_high']:+.2f}]" for t in types]
            print(f"| {scorer} | {measure} | " + " | ".join(text) + f" | {np.mean(vals):+.2f} | {np.min(vals):+.2f} |")
    else:
        print("| scorer | measure | utterance SRCC | system SRCC |")
        print("|---|---|---|---|")
        for r in result.rows:
            if r["level"] != "utterance":
                continue
            sys_row = next((s for s in result.rows if s["level"] == "system" and (s["scorer"], s["measure"]) == (r["scorer"], r["measure"])), None)
            sys_text = f"{sys_row['srcc']:+.3f} [{sys_row['srcc_lo']:+.3f},{sys_row['srcc_hi']:+.3f}]" if sys_row else ""
            print(f"| {r['scorer']} | {r['measure']} | {r['srcc']:+.3f} [{r['srcc_lo']:+.3f},{r['srcc_hi']:+.3f}] (n={r['n']}) | {sys_text} |")
    print(f"\n{result.seconds:.0f} s")


if __name__ == "__main__":
    main()
