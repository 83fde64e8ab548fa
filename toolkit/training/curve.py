"""The adaptation curve: SRCC on a held-out MOS set every N pretraining steps.

The scores come from the evaluator's scorer and the correlations from the evaluator's
:func:`toolkit.scoring.metrics.correlate` (same measures, sign convention, negatives per clip and
system rule), so a point of the curve equals what ``toolkit evaluate`` reports for the checkpoint
saved at that step, whenever the curve scores whole clips (no ``max_clips`` subset, no crop).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from toolkit.audio import SAMPLE_RATE
from toolkit.errors import ToolkitError

log = logging.getLogger(__name__)


def curve_rows(
    scores: dict[str, list[float]], mos: list[float], systems: list[str] | None, step: int
) -> list[dict]:
    """Rows ``{"step", "measure", "level", "n", "srcc"}`` for each measure's quality-oriented scores.

    ``systems`` is ``None`` for a dataset without system labels (utterance level only), as in
    ``toolkit evaluate``.
    """
    from toolkit.scoring.metrics import correlate

    rows = []
    for name, values in scores.items():
        summary = correlate(values, mos, systems, n_boot=0)
        for level, stats in summary.items():
            rows.append({"step": step, "measure": name, "level": level, "n": stats["n"], "srcc": stats["srcc"]})
    return rows


class AdaptationCurve(pl.Callback):
    """Every ``every_n_steps`` optimizer steps, score a held-out MOS set and log SRCC per measure.

    Logged as ``adaptation/<measure>/srcc_utt`` and ``.../srcc_sys`` to every logger (W&B, CSV);
    also written (global rank 0 only) to ``<root>/adaptation/curve.csv`` and ``curve.png`` for users
    without W&B. Disabled when ``dataset`` is ``null``.

    Args:
        dataset: A MOS set spec as accepted by ``toolkit evaluate`` (e.g.
            ``yourtts:../shared/data/mos/yourtts:PT`` or ``csv:mos.csv``), or ``null``.
        every_n_steps: Interval in optimizer steps; also scored before the first step.
        max_clips: Score a seeded random subset of this many clips (bounded cost).
        max_seconds: Crop clips to their first N seconds.
        measures: Measure names or patterns (see ``toolkit.scoring.measures``).
        draws: Negative draws per clip, averaged.
        seed: Subset and negative-sampling seed.
        output: Folder for curve.csv / curve.png (default ``<trainer.default_root_dir>/adaptation``).
    """

    def __init__(
        self,
        dataset: str | None = None,
        every_n_steps: int = 1000,
        max_clips: int = 200,
        max_seconds: float = 10.0,
        measures: list[str] | None = None,
        draws: int = 1,
        seed: int = 0,
        output: str | None = None,
    ) -> None:
        self.dataset = dataset
        self.every_n_steps = every_n_steps
        self.max_clips = max_clips
        self.max_seconds = max_seconds
        self.measures = measures or ["entropy.mean", "p_pos.mean", "loss_bce"]
        self.draws = draws
        self.seed = seed
        self.output = output
        self.history: list[dict] = []
        self._clips: list[tuple[str, torch.Tensor, float, str | None]] | None = None
        self._has_systems = False
        self._last_step: int | None = None
        if dataset is not None:
            from toolkit.scoring.measures import select_measures

            try:
                self.measures = select_measures(self.measures)
            except ValueError as err:
                raise ToolkitError("adaptation.measures", str(err)) from None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.dataset is None:
            return
        if self.output is None:
            self.output = os.path.join(trainer.default_root_dir, "adaptation")
        if trainer.is_global_zero and self._clips is None:
            self._clips = self._load_clips(int(pl_module.model.min_samples))

    def _load_clips(self, min_samples: int) -> list[tuple[str, torch.Tensor, float, str | None]]:
        from toolkit.audio import load_audio
        from toolkit.errors import AudioError
        from toolkit.scoring.datasets import load_dataset
        from toolkit.scoring.scorer import utterance_key

        data = load_dataset(self.dataset).subset(self.max_clips, seed=self.seed)
        self._has_systems = bool(data.has_systems)
        limit = int(self.max_seconds * SAMPLE_RATE)
        clips, skipped = [], 0
        for item in data.items:
            try:
                wave = load_audio(item.path, SAMPLE_RATE).samples
            except AudioError as err:
                log.warning("adaptation curve: skipping %s (%s)", item.path, err)
                skipped += 1
                continue
            wave = torch.as_tensor(wave[:limit], dtype=torch.float32)
            if wave.shape[0] < min_samples:
                log.warning("adaptation curve: skipping %s (%d samples, the model needs %d)",
                            item.path, wave.shape[0], min_samples)
                skipped += 1
                continue
            # The negatives are seeded by the file name, as in `toolkit evaluate`.
            clips.append((utterance_key(item.path), wave, float(item.mos), item.system))
        if len(clips) < 3:
            raise ToolkitError(self.dataset, f"only {len(clips)} usable clips for the adaptation curve (need 3)")
        rank_zero_info(f"adaptation curve: {len(clips)} clips of {data.name} ({skipped} skipped)")
        return clips

    @torch.no_grad()
    def evaluate(self, pl_module: pl.LightningModule, step: int) -> list[dict]:
        """Score the clips with the current weights; returns (and records) the SRCC rows."""
        from toolkit.scoring.scorer import Wav2VecScorer

        model = pl_module.model
        was_training = model.training
        scorer = Wav2VecScorer(model, self.measures, draws=self.draws, seed=self.seed, device=pl_module.device)
        scores: dict[str, list[float]] = {name: [] for name in self.measures}
        try:
            for key, wave, _, _ in self._clips:
                out = scorer.score(wave[None], torch.tensor([wave.shape[0]]), [key])
                for name in self.measures:
                    scores[name].append(float(out[name][0]))
        finally:
            model.train(was_training)
        systems = [c[3] or "" for c in self._clips] if self._has_systems else None
        rows = curve_rows(scores, [c[2] for c in self._clips], systems, step)
        self.history.extend(rows)
        return rows

    def _maybe_run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = int(trainer.global_step)
        if self.dataset is None or step == self._last_step:
            return
        if step % self.every_n_steps != 0 or any(r["step"] == step for r in self.history):
            return
        self._last_step = step
        if not trainer.is_global_zero:
            return
        rows = self.evaluate(pl_module, step)
        metrics = {
            f"adaptation/{r['measure']}/srcc_{'utt' if r['level'] == 'utterance' else 'sys'}": r["srcc"] for r in rows
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        self.write(Path(self.output))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_run(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._maybe_run(trainer, pl_module)

    def write(self, folder: Path) -> None:
        """``curve.csv`` (step, measure, level, n, srcc) and ``curve.png``, both atomically."""
        from toolkit.io import atomic_write

        lines = ["step,measure,level,n,srcc"]
        lines += [f"{r['step']},{r['measure']},{r['level']},{r['n']},{r['srcc']:.6f}" for r in self.history]
        with atomic_write(folder / "curve.csv") as handle:
            handle.write("\n".join(lines) + "\n")
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # pragma: no cover
            return
        levels = sorted({r["level"] for r in self.history}, reverse=True)
        fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 3.5), squeeze=False)
        for ax, level in zip(axes[0], levels):
            for name in self.measures:
                pts = [(r["step"], r["srcc"]) for r in self.history if r["measure"] == name and r["level"] == level]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=name)
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_title(f"{level}-level SRCC with MOS")
            ax.set_xlabel("pretraining step")
            ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_write(folder / "curve.png", "wb") as handle:
            fig.savefig(handle, format="png", dpi=100)
        plt.close(fig)

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(r) for r in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
