"""The evaluator's own speed on CPU, end to end, on real 48 kHz WAV: a baseline checkout against this
one, fp32 and bf16, in the same run.

Input: ``--clips`` rated clips of the YourTTS listening test (../shared/data/mos/yourtts, both
languages, a seeded random pick), resampled to 48 kHz mono 16-bit WAV into a temporary folder at
run time (never into the repository), as a ``csv:`` dataset. Model: the embedded default
(toolkit/assets/default/model.pt), 3 negative draws, all measures, 1000 bootstrap resamples, no
score cache, plots on, W&B off: what ``toolkit evaluate`` does.

Each end-to-end run is ``toolkit.scoring.evaluate.evaluate`` in a fresh Python process importing
the toolkit from its checkout (``--baseline``, then this one with ``--jobs N``, default the usable
cores, and with ``--with-jobs-1`` also ``--jobs 1``), with torch's default threads, as a user's ``toolkit evaluate`` runs.
Wall time, and CPU time of the process and its workers (RUSAGE_CHILDREN), are measured from
outside; the per-clip scores come back at full precision and are compared with the baseline's.
The parts are also timed alone in this process with one thread (what one worker does): decoding +
resampling, the model's forward pass, and the scorer. Wall time depends on the machine's load;
run it under /work/runs/quiet.sh on the shared machine.

    python bench/bench_evaluate.py --baseline ../base [--clips 384] [--jobs 2] [--with-jobs-1] [--no-parts]
        [--data ../shared/data/mos/yourtts] [--no-record]

Appends a dated block to bench/RESULTS.md (unless --no-record).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_wavs(source: Path, out: Path, clips: int, seed: int = 0) -> tuple[Path, float]:
    """``clips`` YourTTS clips as 48 kHz WAV in ``out``; returns the CSV and the seconds of audio."""
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    rows = list(csv.DictReader(open(source / "mos.csv", newline="")))
    random.Random(seed).shuffle(rows)
    lines, total = ["path,mos,system"], 0.0
    (out / "wav").mkdir(parents=True)
    for i, r in enumerate(rows[:clips]):
        x, rate = sf.read(source / "audio" / r["audio_path"], dtype="float32")
        y = AF.resample(torch.from_numpy(x), rate, 48000).clamp(-1, 1).numpy()
        sf.write(out / "wav" / f"{i:04d}.wav", y, 48000, subtype="PCM_16")
        total += len(y) / 48000
        lines.append(f"wav/{i:04d}.wav,{r['mos']},{r['language']}-{r['system']}")
    (out / "set.csv").write_text("\n".join(lines) + "\n")
    return out / "set.csv", total


def commit_of(repo: Path) -> str:
    import subprocess

    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=repo)
    return out.stdout.strip() or "unknown"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


# Runs one evaluation in a fresh process: argv = checkout, keyword arguments (JSON), scores file.
DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from toolkit.scoring.evaluate import evaluate
kw = json.loads(sys.argv[2])
checkpoint, dataset = kw.pop("checkpoint"), kw.pop("dataset")
result = evaluate([checkpoint], [dataset], wandb_mode="disabled", progress=False, echo=None, **kw)
json.dump({f"{c}|{d}|{u}": row for (c, d), rows in result.scores.items() for u, row in rows.items()},
          open(sys.argv[3], "w"))
"""


def run_evaluate(repo: Path, out: Path, **kw) -> tuple[dict, float, float]:
    """``(scores, wall s, CPU s of the process and its children)`` of one evaluation from ``repo``."""
    import json
    import resource
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONPATH")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run([sys.executable, "-c", DRIVER, str(repo), json.dumps({**kw, "output_dir": str(out)}),
                    str(out / "scores.json")], check=True, cwd=repo, env=env)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads((out / "scores.json").read_text()), wall, cpu


def largest_difference(a: dict, b: dict) -> float:
    if a.keys() != b.keys():
        return float("inf")
    return max(abs(a[k][m] - b[k][m]) for k in a for m in a[k])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(os.environ.get("TOOLKIT_SHARED", REPO.parent / "shared"))  # as tests/conftest.py finds it
    parser.add_argument("--data", default=str(shared / "data" / "mos" / "yourtts"))
    parser.add_argument("--clips", type=int, default=384)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--baseline", required=True, help="the checkout to compare with (e.g. a git worktree of f23016d)")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes for this checkout (default: usable cores)")
    parser.add_argument("--no-parts", action="store_true", help="skip timing the parts alone")
    parser.add_argument("--with-jobs-1", action="store_true", help="also run this checkout with --jobs 1 (in-process)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    from bench.common import append_results, table
    from toolkit.scoring.workers import usable_cores

    jobs = args.jobs or usable_cores()
    baseline = Path(args.baseline).resolve()
    model_path = REPO / "toolkit" / "assets" / "default" / "model.pt"
    tmp = Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    rows, scores, walls = [], {}, {}
    try:
        table_csv, seconds = make_wavs(Path(args.data), tmp / "data", args.clips)
        if not args.no_parts:
            rows += time_parts(tmp / "data" / "wav", model_path, args.draws, seconds)
        runs = [("baseline", baseline, None)] + [("this, --jobs 1", REPO, 1)] * args.with_jobs_1 + [
            (f"this, --jobs {jobs}", REPO, jobs)]
        for dtype in ("fp32", "bf16"):
            for label, repo, n in runs:
                kw = {"checkpoint": str(model_path), "dataset": f"csv:{table_csv}", "draws": args.draws,
                      "dtype": None if dtype == "fp32" else dtype, "device": "cpu", "use_cache": False}
                if n is not None:
                    kw["jobs"] = n
                out = tmp / f"{label.split(',')[0]}-{n}-{dtype}"
                scores[label, dtype], wall, cpu = run_evaluate(repo, out, **kw)
                walls[label, dtype] = wall
                same = largest_difference(scores[label, dtype], scores["baseline", dtype])
                rows.append([f"end to end, {label}, {dtype}", f"{wall:.1f}", f"{cpu:.1f}", f"{seconds / wall:.0f}",
                             f"{walls['baseline', dtype] / wall:.2f}x", f"{same:.3g}"])
                print(rows[-1], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bf16 = largest_difference(scores[f"this, --jobs {jobs}", "fp32"], scores[f"this, --jobs {jobs}", "bf16"])
    load = os.getloadavg()[0]
    text = table(["what", "wall (s)", "CPU (s)", "audio-s per wall-s", "speed-up vs baseline (wall, same dtype)",
                  "largest |score - baseline's|"], rows)
    notes = (
        f"{args.clips} YourTTS clips resampled to 48 kHz mono WAV ({seconds:.0f} s of audio), embedded default "
        f"model, {args.draws} negative draws, all measures, no cache, plots on. Baseline: {baseline} (commit "
        f"{commit_of(baseline)}); this: commit {commit_of(REPO)}. End-to-end runs: a fresh process each, torch's "
        f"default threads ({torch.get_num_threads()}) in the evaluating process, one thread per --jobs worker; CPU = "
        f"that process and its workers. Parts: this checkout, one thread. Largest |fp32 - bf16| score difference "
        f"(this, --jobs {jobs}): {bf16:.3g}. 1-minute load average at the end: {load:.1f}."
    )
    print(text + "\n\n" + notes)
    if not args.no_record:
        append_results("bench_evaluate.py: toolkit evaluate end to end on 48 kHz WAV, baseline vs this, fp32 and bf16",
                       text, notes)
    return 0


def time_parts(folder: Path, model_path: Path, draws: int, seconds: float) -> list[list[str]]:
    """Decoding + resampling, the forward pass and the scorer alone, one thread (what a worker does)."""
    import torch

    from toolkit.audio import load_audio
    from toolkit.models.checkpoint import load_checkpoint
    from toolkit.scoring.scorer import Wav2VecScorer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    files = sorted(folder.glob("*.wav"))
    rows = []
    waves, wall, cpu = timed(lambda: [load_audio(f).samples for f in files])
    rows.append(["decode + resample 48->16 kHz only (1 thread)", f"{wall:.1f}", f"{cpu:.1f}", f"{seconds / wall:.0f}", "", ""])
    model, _ = load_checkpoint(model_path)
    model.eval()

    def forward():
        with torch.inference_mode():
            for w in waves:
                model.encode(w[None], torch.tensor([w.numel()]))

    _, wall, cpu = timed(forward)
    rows.append(["model forward only (encode, 1 thread)", f"{wall:.1f}", f"{cpu:.1f}", f"{seconds / wall:.0f}", "", ""])
    for dtype in (None, "bf16"):
        scorer = Wav2VecScorer(model, draws=draws, dtype=dtype)
        _, wall, cpu = timed(lambda s=scorer: [s.score(w[None], None, [str(i)]) for i, w in enumerate(waves)])
        rows.append([f"scorer.score, {draws} draws, {dtype or 'fp32'} (1 thread)", f"{wall:.1f}", f"{cpu:.1f}",
                     f"{seconds / wall:.0f}", "", ""])
    torch.set_num_threads(threads)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
