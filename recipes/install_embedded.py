"""Ship a recipe's checkpoint inside the toolkit as an embedded model: toolkit/assets/NAME/model.pt.

Weights are stored in float16 (half the size; tests/test_embedded_models.py checks that this changes
no ranking) unless --fp32. Write toolkit/assets/NAME/MODEL_CARD.md by hand: its data, minutes, steps,
CPU hours, results, every training source with its licence, and a `Use:` line that `--help` shows.

    python recipes/install_embedded.py /work/runs/zh-adapted/run/checkpoints/step-000001000.ckpt zh
    toolkit evaluate --model zh --dataset ... --output ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit.models.checkpoint import load_checkpoint
from toolkit.models.embedded import ASSETS, save_embedded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="toolkit .pt or Lightning .ckpt")
    parser.add_argument("name", help="the name users select it by (toolkit evaluate --model NAME)")
    parser.add_argument("--fp32", action="store_true", help="store float32 weights")
    args = parser.parse_args(argv)
    model, info = load_checkpoint(args.checkpoint)
    target = ASSETS / args.name / "model.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    save_embedded(model, target, step=info["step"], source=str(args.checkpoint), half=not args.fp32)
    print(f"installed {args.checkpoint} (step {info['step']}) as {target} ({target.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
