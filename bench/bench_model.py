"""Model throughput: fairseq's wav2vec (v1) against the toolkit's, in the same run, same device.

Training = forward + fairseq's BCE loss + backward + Adam step on a batch of random crops.
Scoring = forward without gradients (negatives and logits included).
One utterance at a time = how the paper's authors' script scores (fairseq, fp32, batch of one).

    python bench/bench_model.py --preset large --batch 10 --crop 150000      # GPU, fairseq's max_tokens
    python bench/bench_model.py --preset small --batch 4 --crop 48000        # CPU

Prints one table (audio-seconds per second, peak memory, speed-up) and appends it to RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_results, median_time, table  # noqa: E402

from toolkit.models.fairseq_format import fairseq_checkpoint  # noqa: E402
from toolkit.models.loss import contrastive_loss  # noqa: E402
from toolkit.models.wav2vec import build_preset  # noqa: E402

SR = 16_000


def fairseq_reference(model):
    """The same weights in fairseq's own model code, or None when fairseq is not installed."""
    try:
        from fairseq.models.wav2vec.wav2vec import Wav2VecConfig, Wav2VecModel
    except ImportError:
        return None
    cfg = fairseq_checkpoint(model)["cfg"]["model"]
    fields = {k: v for k, v in cfg.items() if k in Wav2VecConfig.__dataclass_fields__}
    fs = Wav2VecModel(Wav2VecConfig(**fields))
    fs.load_state_dict(fairseq_checkpoint(model)["model"])
    return fs


def autocast(device: str, dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)


def train_step_fn(model, is_fairseq: bool, wav, device: str, dtype: str):
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            if is_fairseq:
                out = model(wav)
                logits, target = out["cpc_logits"], out["cpc_targets"]
                loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="sum")
                loss = loss / target.sum()
            else:
                out = model(wav)
                total, n = contrastive_loss(out.logits, out.mask)
                loss = total / n
        loss.backward()
        opt.step()
        step.loss = float(loss.detach())

    return step


def score_fn(model, is_fairseq: bool, wav, device: str, dtype: str, one_at_a_time: bool = False):
    model.eval()

    @torch.no_grad()
    def run():
        with autocast(device, dtype):
            chunks = wav.split(1) if one_at_a_time else [wav]
            for chunk in chunks:
                out = model(chunk)
                _ = out["cpc_logits"] if is_fairseq else out.logits

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=4, help="training crops per batch")
    parser.add_argument("--crop", type=int, default=48_000, help="samples per training crop")
    parser.add_argument("--score-batch", type=int, default=8, help="3 s utterances per scoring batch")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--dtypes", default=None, help="default: fp32 on CPU (no fast bf16 there), fp32,bf16,fp16 on GPU")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    args.dtypes = args.dtypes or ("fp32,bf16,fp16" if device == "cuda" else "fp32")
    sync = device == "cuda"
    torch.manual_seed(0)
    ours = build_preset(args.preset).to(device)
    reference = fairseq_reference(ours)
    if reference is not None:
        reference = reference.to(device)
    train_wav = torch.randn(args.batch, args.crop, device=device) * 0.1
    score_wav = torch.randn(args.score_batch, 3 * SR, device=device) * 0.1
    train_seconds = args.batch * args.crop / SR
    score_seconds = args.score_batch * 3

    rows = []

    def measure(name, impl, fn, seconds):
        if sync:
            torch.cuda.reset_peak_memory_stats()
        try:
            t = median_time(fn, args.steps, sync=sync)
        except Exception as err:  # e.g. fp16 overflow in the reference: record, don't crash
            rows.append([name, impl, "failed", "-", type(err).__name__])
            return None
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if sync else "-"
        loss = getattr(fn, "loss", None)
        rows.append([name, impl, f"{seconds / t:,.0f}", peak, "" if loss is None else f"loss {loss:.3f}"])
        return seconds / t

    for dtype in args.dtypes.split(","):
        base = None
        if reference is not None:
            base = measure(f"train {dtype}", "fairseq", train_step_fn(reference, True, train_wav, device, dtype), train_seconds)
        speed = measure(f"train {dtype}", "toolkit", train_step_fn(ours, False, train_wav, device, dtype), train_seconds)
        if base and speed:
            rows[-1][-1] += f" ({speed / base:.2f}x fairseq)"
    for dtype in args.dtypes.split(","):
        base = None
        if reference is not None:
            base = measure(f"score {dtype}, batch {args.score_batch}x3s", "fairseq", score_fn(reference, True, score_wav, device, dtype), score_seconds)
        speed = measure(f"score {dtype}, batch {args.score_batch}x3s", "toolkit", score_fn(ours, False, score_wav, device, dtype), score_seconds)
        if base and speed:
            rows[-1][-1] += f" ({speed / base:.2f}x fairseq)"
    if reference is not None:
        measure("score fp32, one 3 s utterance at a time", "fairseq", score_fn(reference, True, score_wav, device, "fp32", True), score_seconds)

    headers = ["what", "code", "audio-s per s", "peak GPU memory", "notes"]
    text = table(headers, rows)
    print(text)
    if not args.no_record:
        params = sum(p.numel() for p in ours.parameters())
        append_results(
            f"bench_model.py: {args.preset} preset ({params:,} parameters)",
            text,
            f"Training batch {args.batch} x {args.crop} samples; scoring batch {args.score_batch} x 3 s; "
            f"median of {args.steps} steps; random audio.",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
