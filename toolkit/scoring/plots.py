"""Figures of an evaluation (matplotlib, Agg backend: no display needed). Drawing only, no maths."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from toolkit.io import atomic_write  # noqa: E402


def _save(fig, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def scatter_grid(
    path: str | os.PathLike,
    title: str,
    mos: Sequence[float],
    panels: Sequence[tuple[str, Sequence[float], float]],
) -> None:
    """One scatter per measure: score (x) against MOS (y). ``panels`` are ``(measure, scores, srcc)``."""
    n = max(len(panels), 1)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, scores, rho) in zip(axes.flat, panels):
        ax.scatter(scores, mos, s=6, alpha=0.5)
        ax.set_xlabel(f"{name} (higher = better predicted)")
        ax.set_ylabel("MOS")
        ax.set_title(f"{name}: SRCC {rho:+.3f}", fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def srcc_vs_step(
    path: str | os.PathLike,
    title: str,
    curves: dict[str, list[tuple[int, float, float, float]]],
    controls: dict[str, tuple[float, float, float]] | None = None,
) -> None:
    """SRCC against pretraining step. ``curves[measure] = [(step, srcc, lo, hi), ...]``;
    ``controls[label] = (srcc, lo, hi)`` are drawn as horizontal dashed lines."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in curves.items():
        points = sorted(points)
        steps = [p[0] for p in points]
        ax.plot(steps, [p[1] for p in points], marker="o", label=name)
        ax.fill_between(steps, [p[2] for p in points], [p[3] for p in points], alpha=0.15)
    for label, (rho, lo, hi) in (controls or {}).items():
        line = ax.axhline(rho, linestyle="--", linewidth=1, label=f"control: {label}")
        ax.axhspan(lo, hi, color=line.get_color(), alpha=0.07)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("pretraining step")
    ax.set_ylabel("SRCC with MOS (95% CI)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    _save(fig, path)
