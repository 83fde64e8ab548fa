"""CPU cost of each reference predictor and extension scorer per second of audio, against the wav2vec
scorer, on real clips.

Scores ``--clips`` YourTTS clips (../shared/data/mos/yourtts, a seeded pick, 16 kHz) one at a time
with every reference of ``toolkit evaluate --reference`` (PESQ and STOI compare each clip with
itself: their cost hardly depends on the content) and with the embedded default wav2vec model
(3 negative draws, all measures), and with the extension scorers of ``toolkit evaluate --extension``
beyond the paper (the codebook shipped with the default; ``prediction`` also runs the network over
the clip played backwards). Process CPU time is the figure to compare on a shared machine;
one intra-op thread by default, so that no thread spins waiting for another.

    python bench/bench_references.py [--clips 24] [--threads 1] [--no-record]

Needs the [references] extra (scripts/setup.sh --references). Appends a dated block to
bench/RESULTS.md (unless --no-record).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mos" / "yourtts"))
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    import torch

    from bench.common import append_results, table
    from toolkit.audio import load_audio
    from toolkit.models.checkpoint import load_checkpoint
    from toolkit.scoring.bank import shipped_bank
    from toolkit.scoring.extensions import EXTENSIONS, ExtensionScorer
    from toolkit.scoring.references import REFERENCES, build_reference, check_references
    from toolkit.scoring.scorer import Wav2VecScorer

    torch.set_num_threads(args.threads)
    check_references(list(REFERENCES))
    root = Path(args.data)
    rows = list(csv.DictReader(open(root / "mos.csv", newline="")))
    random.Random(0).shuffle(rows)
    waves = [load_audio(root / "audio" / r["audio_path"]).samples for r in rows[: args.clips]]
    seconds = sum(w.numel() for w in waves) / 16000
    model, _ = load_checkpoint(REPO / "toolkit" / "assets" / "default" / "model.pt")
    scorers = {"wav2vec (embedded default, 3 draws)": Wav2VecScorer(model, draws=3)}
    codebook = shipped_bank(model)
    for family in (e for e in EXTENSIONS if e != "bank"):  # bank needs negatives, which no codebook ships
        scorer = ExtensionScorer(model, codebook, [family], draws=3)
        draws = "draws" in scorer.families[0].fingerprint()  # the families that draw negatives say how many
        scorers[f"--extension {family}" + (" (3 draws)" if draws else "")] = scorer
    for name in REFERENCES:
        scorers[name] = build_reference(name)
    out = []
    for label, scorer in scorers.items():
        intrusive = getattr(scorer, "needs_reference", False)
        scorer.score(waves[0][None], None, ["warm-up"], **({"references": [waves[0]]} if intrusive else {}))
        wall, cpu = time.perf_counter(), time.process_time()
        for i, w in enumerate(waves):
            scorer.score(w[None], None, [str(i)], **({"references": [w]} if intrusive else {}))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        out.append([label, f"{1000 * cpu / seconds:.1f}", f"{seconds / cpu:.0f}", f"{seconds / wall:.0f}"])
    base = float(out[0][1])
    for row in out:
        row.append(f"{float(row[1]) / base:.1f}x")
    text = table(["scorer", "CPU ms per audio-s", "audio-s per CPU-s", "audio-s per wall-s", "CPU vs wav2vec"], out)
    notes = (f"{args.clips} YourTTS clips ({seconds:.0f} s of 16 kHz audio), one clip at a time, {args.threads} "
             f"intra-op thread(s) (onnxruntime keeps its own pool); 1-minute load average {os.getloadavg()[0]:.1f}.")
    print(text + "\n\n" + notes)
    if not args.no_record:
        append_results("bench_references.py: reference predictors and extension scorers vs the wav2vec "
                       "scorer, CPU cost", text, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
