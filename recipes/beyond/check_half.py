"""Does storing a codebook in float16 change any ranking? The chosen measure beyond the paper
(``typ:z.mean``, and the other typicality measures) with a float32 bank against its float16 copy,
on real sets, for every (float16, float32) pair of banks given (each pair built with one model's weights).

    python recipes/beyond/check_half.py \
        toolkit/assets/default/codebook.pt:runs/beyond/bank.pt \
        toolkit/assets/default/codebook-random-init.pt:runs/beyond/compare/cache/banks/RANDOM.pt \
        --dataset csv:DEMO/degraded/manifest.csv --dataset yourtts:../shared/data/mos/yourtts:PT

Each clip is encoded once per model; both codebooks score the same encoding. Prints, per dataset,
model and measure: the largest absolute difference, the pairs of clips whose order differs (of all
pairs), and the SRCC with MOS under each codebook.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.stats import spearmanr

from toolkit.audio import SAMPLE_RATE, load_audio
from toolkit.models.checkpoint import load_checkpoint
from toolkit.scoring.bank import load_bank
from toolkit.scoring.candidates import seeded_random_model
from toolkit.scoring.datasets import load_dataset
from toolkit.scoring.scorer import state_dict_hash
from toolkit.scoring.typicality import TYPICALITY_MEASURES, typicality_measures


def model_for(weights: str, checkpoint: str, seeds: range = range(4)) -> torch.nn.Module:
    """The default checkpoint or one of its random-init controls, whichever has these weights."""
    model, _ = load_checkpoint(checkpoint)
    for candidate in [model] + [seeded_random_model(model.config, s) for s in seeds]:
        if state_dict_hash(candidate) == weights:
            return candidate.eval()
    raise SystemExit(f"no model with weights {weights[:12]} (checkpoint {checkpoint} or its random-init seeds {seeds})")


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", nargs="+", metavar="F16:F32")
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--checkpoint", default="toolkit/assets/default/model.pt")
    args = parser.parse_args()
    datasets = [load_dataset(spec) for spec in args.dataset]
    print("| dataset | bank (float16) | measure | clips | max abs diff | pairs in another order | SRCC float32 | SRCC float16 |")
    print("|---|---|---|---|---|---|---|---|")
    for pair in args.pairs:
        half, full = (load_bank(p) for p in pair.split(":"))
        if half.weights_sha256 != full.weights_sha256:
            raise SystemExit(f"{pair}: the two banks were built with different weights")
        model = model_for(half.weights_sha256, args.checkpoint)
        for ds in datasets:
            values = {bank: {m: [] for m in TYPICALITY_MEASURES} for bank in ("half", "full")}
            for item in ds.items:
                wave = load_audio(item.path, SAMPLE_RATE).samples
                z, c, _, frames = model.encode(wave[None], torch.tensor([wave.numel()]))
                for name, bank in (("half", half), ("full", full)):
                    scores = typicality_measures(z.float(), c.float(), frames, bank.centroids_z, bank.centroids_c)
                    for m in TYPICALITY_MEASURES:
                        values[name][m].append(float(scores[m][0]))
            mos = [item.mos for item in ds.items]
            for m in TYPICALITY_MEASURES:
                a, b = np.array(values["full"][m]), np.array(values["half"][m])
                flipped = int((np.sign(a[:, None] - a[None]) != np.sign(b[:, None] - b[None])).sum()) // 2
                pairs = len(a) * (len(a) - 1) // 2
                print(f"| {ds.name} | {half.sha256[:12]} | {m} | {len(a)} | {np.abs(a - b).max():.2e} | {flipped} of {pairs} | "
                      f"{spearmanr(a, mos)[0]:+.4f} | {spearmanr(b, mos)[0]:+.4f} |", flush=True)


if __name__ == "__main__":
    main()
