"""Contrastive wav2vec (v1) pretraining with Lightning: ``toolkit pretrain``.

- :mod:`toolkit.training.module`: :class:`Wav2VecPretraining` (loss, Adam + fairseq's cosine
  schedule, non-finite step skipping, continued pretraining) and the pure schedule/statistics.
- :mod:`toolkit.training.callbacks`: atomic checkpoints (every N steps, at the end, on SIGTERM;
  last K kept), throughput, collapse detection.
- :mod:`toolkit.training.curve`: the adaptation curve (SRCC on a held-out MOS set every N steps,
  computed by the evaluator's scorer and :func:`toolkit.scoring.metrics.correlate`).
- :mod:`toolkit.training.cli`: the LightningCLI entry point and YAML configs in
  ``toolkit/configs/pretrain/``.

Resume, and how close it is
    ``--resume auto`` (default) restores, from the newest complete ``step-*.ckpt``: the weights,
    Adam's moments, the schedule position, the global step, the epoch and the loop counters, the
    skipped-step / collapse / audio-hour counters and the adaptation-curve history. The data
    stream of :class:`~toolkit.data.datamodule.AudioShardDataModule` is a deterministic function
    of ``(seed, epoch, rank, worker)``, so the resumed run re-reads (decodes without training on)
    the batches of the current epoch that were already used and continues with exactly the
    next batch, provided the world size and ``data.num_workers`` are unchanged. Negatives are
    drawn from a generator seeded by ``(model.seed, global step, rank)``. With dropout 0 (the
    default) a resumed run therefore reproduces the uninterrupted loss curve up to float noise.
    Not restored: the global torch RNG (dropout masks differ after a resume when dropout > 0).
    With ``data.resampled: true`` the same holds (the resampled stream is seeded the same way).
"""

from toolkit.training.module import Wav2VecPretraining, fairseq_cosine_lr

__all__ = ["Wav2VecPretraining", "fairseq_cosine_lr"]
