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
    ``--resume auto`` (default) restores, from the newest complete checkpoint: the weights,
    Adam's moments, the schedule position, the global step, the epoch and the loop counters, the
    skipped-step / collapse / audio-hour counters, the adaptation-curve history and the data
    stream's position. :class:`~toolkit.data.datamodule.AudioShardDataModule` stores in the
    checkpoint the epoch, the number of training batches consumed in it and the settings the
    stream depends on (world size, ``data.num_workers``, seed, shards, batching); on resume it
    checks them (a changed stream is an error naming the difference, or with
    ``data.on_stream_mismatch: restart`` the epoch starts afresh) and skips exactly the consumed
    batches. The stream is a deterministic function of ``(seed, epoch, rank, worker)`` and the
    negatives of ``(model.seed, global step, rank)``, so with dropout 0 (the default) a resumed
    run reproduces the uninterrupted loss curve up to float noise. Not restored: the global torch
    RNG (dropout masks differ after a resume when dropout > 0).
"""

from toolkit.training.module import Wav2VecPretraining, fairseq_cosine_lr

__all__ = ["Wav2VecPretraining", "fairseq_cosine_lr"]
