"""Issue 15's hypothesis test: why do codecs fool the within-utterance uncertainty?

Reads the demo's graded set (``toolkit demo --output DEMO``) and a reference bank (``toolkit bank``),
encodes every clip once with the model, and measures:

(a) within-clip SRCC of ``p_pos.mean`` with -severity, per type, with negatives drawn from the
    utterance itself (the paper), from its clean twin (same clean clip, same positions) and from the
    bank, over several independent single draws (mean, range over draws, and the bootstrap
    interval over clean clips of the draw-averaged score);
(b) the same SRCC for the positive logit and the negative logits separately (utterance negatives),
    and for ``typ:z.mean``, to see which side moves;
(c) the half-degraded utterance: each clean clip with one half replaced by its most degraded
    version (each half in turn). Per-prediction ``p_pos`` is averaged over the predictions whose
    *target* lies in each half, leaving out ``--margin`` frames around the splice, and compared
    with the same frames of the clean clip.

    python recipes/beyond/hypothesis.py DEMO/degraded/manifest.csv --bank bank.pt --output OUT

Writes OUT/hypothesis.json and prints markdown tables. Sign convention: positive SRCC = the score
falls as the degradation grows (as the method predicts).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from toolkit.audio import load_audio
from toolkit.degrade import read_manifest, severity_srcc
from toolkit.models.checkpoint import load_checkpoint
from toolkit.scoring.bank import load_bank, pooled_logits
from toolkit.scoring.scorer import key_seed
from toolkit.scoring.typicality import nearest_distance

SOURCES = ("utterance", "clean twin", "bank")
HALF_TYPES = ("opus", "vorbis", "mp3", "noise", "bandlimit")


def p_pos_per_prediction(model, enc, pool, idx):
    """``p_pos [K, T]``, positive logit and mean negative logit ``[K, T]``, mask ``[K, T]`` for one clip."""
    z, _, pred, fl = enc
    logits, mask = pooled_logits(z, pred, fl, model.offset, pool, idx)
    p = torch.softmax(logits, -1)[..., 0]
    return p[0], logits[0, ..., 0], logits[0, ..., 1:].mean(-1), mask[0]


def draw(model, enc, source, g, bank_z, twin):
    z = enc[0]
    frames = z.shape[-1]
    n = model.num_negatives
    if source == "bank":
        return bank_z[None], torch.randint(bank_z.shape[0], (1, frames, n), generator=g)
    pool_z = z if source == "utterance" else twin[0]
    idx = model.sample_negatives(torch.tensor([frames]), frames, [g])
    return pool_z.transpose(1, 2), idx


def masked_mean(x, mask):
    return float(x[mask].mean())


def half_masks(model, frames, mid_frame, margin, steps):
    """Masks ``[K, T]`` of predictions whose target lies in the first / second half, away from the splice."""
    t = torch.arange(frames - model.offset)
    target = t[None, :] + model.offset + torch.arange(steps)[:, None]
    return target < mid_frame - margin, (target >= mid_frame + margin) & (target < frames)


def bootstrap_mean(values, n_boot=1000, seed=0):
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
    return float(v.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("--bank", required=True)
    parser.add_argument("--checkpoint", default="toolkit/assets/default/model.pt")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--margin", type=int, default=40, help="frames left out on each side of the splice")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    model, _ = load_checkpoint(args.checkpoint)
    model.eval()
    bank = load_bank(args.bank)
    bank.check_model(model)
    rows = read_manifest(args.manifest)
    encode = torch.inference_mode()(lambda wav: model.encode(wav[None], torch.tensor([wav.numel()])))
    waves = {r.path: load_audio(r.path).samples for r in rows}
    enc = {r.path: encode(waves[r.path]) for r in rows}
    clean_of = {r.clean_id: r.path for r in rows if r.type == "clean"}
    keys = [f"{r.clean_id}/{Path(r.path).stem}" for r in rows]
    meta = ([r.clean_id for r in rows], [r.type for r in rows], [r.severity for r in rows])

    def srcc_table(values):
        res = severity_srcc(values, meta[2], meta[0], meta[1], bootstrap=1000, seed=0)
        return {t: (r.srcc, r.ci_low, r.ci_high) for t, r in res.items()}

    # (a) and (b)
    per_draw = {s: np.zeros((args.draws, len(rows))) for s in SOURCES}
    pos_logit = np.zeros(len(rows))
    neg_logit = np.zeros(len(rows))
    with torch.inference_mode():
        for i, (r, key) in enumerate(zip(rows, keys)):
            twin = enc[clean_of[r.clean_id]]
            for s_i, source in enumerate(SOURCES):
                g = torch.Generator().manual_seed(key_seed(100 + s_i, key))
                for d in range(args.draws):
                    pool, idx = draw(model, enc[r.path], source, g, bank.frames_z, twin)
                    p, pos, neg, mask = p_pos_per_prediction(model, enc[r.path], pool, idx)
                    per_draw[source][d, i] = masked_mean(p, mask)
                    if source == "utterance":
                        pos_logit[i] += masked_mean(pos, mask) / args.draws
                        neg_logit[i] += masked_mean(neg, mask) / args.draws
        typ = np.array([-float(nearest_distance(enc[r.path][0][0].T, bank.centroids_z).mean()) for r in rows])
    result = {"draws": args.draws, "sources": {}, "sides": {}}
    for source in SOURCES:
        draws = [srcc_table(per_draw[source][d]) for d in range(args.draws)]
        averaged = srcc_table(per_draw[source].mean(0))
        result["sources"][source] = {
            t: {"mean_over_draws": float(np.mean([dr[t][0] for dr in draws])),
                "min": float(np.min([dr[t][0] for dr in draws])), "max": float(np.max([dr[t][0] for dr in draws])),
                "averaged": averaged[t]}
            for t in averaged
        }
    # quality-oriented: a larger positive logit = "easier" = scored as better
    result["sides"] = {"positive logit": srcc_table(pos_logit), "-mean negative logit": srcc_table(-neg_logit),
                       "typ:z.mean": srcc_table(typ)}

    # (c) half-degraded utterances
    worst = {}
    for r in rows:
        if r.type in HALF_TYPES and r.severity == max(x.severity for x in rows if x.type == r.type):
            worst[(r.clean_id, r.type)] = r.path
    halves: dict = {}
    with torch.inference_mode():
        for (clean_id, kind), path in sorted(worst.items()):
            clean_path = clean_of[clean_id]
            clean, deg = waves[clean_path], waves[path]
            frames = enc[clean_path][0].shape[-1]
            mid_frame = frames // 2
            mid = mid_frame * 160  # samples (stride 160)
            masks = half_masks(model, frames, mid_frame, args.margin, model.config.prediction_steps)
            for degraded_half in (0, 1):
                spliced = torch.cat([deg[:mid], clean[mid:]]) if degraded_half == 0 else torch.cat([clean[:mid], deg[mid:]])
                e_s = encode(spliced)
                if e_s[0].shape[-1] != frames:
                    raise RuntimeError(f"{path}: spliced clip has {e_s[0].shape[-1]} frames, clean {frames}")
                for source in ("utterance", "bank"):
                    vals = {"spliced": [0.0, 0.0], "clean": [0.0, 0.0], "degraded": [0.0, 0.0]}
                    for name, e in (("spliced", e_s), ("clean", enc[clean_path]), ("degraded", enc[path])):
                        g = torch.Generator().manual_seed(key_seed(7, f"{clean_id}/{kind}/{degraded_half}/{source}"))
                        for _ in range(args.draws):
                            pool, idx = draw(model, e, source, g, bank.frames_z, None)
                            p, _, _, mask = p_pos_per_prediction(model, e, pool, idx)
                            for h in (0, 1):
                                vals[name][h] += masked_mean(p, mask & masks[h]) / args.draws
                    dh, ch = degraded_half, 1 - degraded_half
                    case = {
                        "degraded half, spliced - clean": vals["spliced"][dh] - vals["clean"][dh],
                        "clean half, spliced - clean": vals["spliced"][ch] - vals["clean"][ch],
                        "degraded half, fully degraded - clean": vals["degraded"][dh] - vals["clean"][dh],
                    }
                    case["within utterance: degraded - clean half, minus the same in the clean clip"] = (
                        case["degraded half, spliced - clean"] - case["clean half, spliced - clean"])
                    halves.setdefault(kind, {}).setdefault(source, []).append(case)
                # typicality per half (no negatives)
                d_s = nearest_distance(e_s[0][0].T, bank.centroids_z)
                d_c = nearest_distance(enc[clean_path][0][0].T, bank.centroids_z)
                first = torch.arange(frames) < mid_frame - args.margin
                second = torch.arange(frames) >= mid_frame + args.margin
                sel = first if degraded_half == 0 else second
                halves[kind].setdefault("typ:z", []).append(
                    {"degraded half, spliced - clean": -float(d_s[sel].mean() - d_c[sel].mean())})
    result["halves"] = {
        kind: {src: {q: bootstrap_mean([c[q] for c in cases]) for q in cases[0]} for src, cases in by.items()}
        for kind, by in halves.items()
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hypothesis.json").write_text(json.dumps(result, indent=2))
    types = list(result["sources"]["utterance"])
    print("| negatives from | " + " | ".join(types) + " | mean |")
    print("|---|" + "---|" * (len(types) + 1))
    for source in SOURCES:
        cells = [result["sources"][source][t] for t in types]
        print(f"| {source} | " + " | ".join(
            f"{c['mean_over_draws']:+.2f} ({c['min']:+.2f}..{c['max']:+.2f})" for c in cells)
            + f" | {np.mean([c['mean_over_draws'] for c in cells]):+.2f} |")
    print()
    for source in SOURCES:
        cells = [result["sources"][source][t]["averaged"] for t in types]
        print(f"| {source}, {args.draws} draws averaged | " + " | ".join(f"{c[0]:+.2f} [{c[1]:+.2f},{c[2]:+.2f}]" for c in cells) + " |")
    print()
    for side, table in result["sides"].items():
        print(f"| {side} | " + " | ".join(f"{table[t][0]:+.2f} [{table[t][1]:+.2f},{table[t][2]:+.2f}]" for t in types) + " |")
    print()
    for kind, by in result["halves"].items():
        for src, q in by.items():
            for name, (m, lo, hi) in q.items():
                print(f"| {kind} | {src} | {name} | {m:+.4f} [{lo:+.4f},{hi:+.4f}] |")


if __name__ == "__main__":
    main()
