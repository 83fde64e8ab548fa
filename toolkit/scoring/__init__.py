"""Zero-shot MOS evaluation: uncertainty measures, scorers, score cache, MOS datasets and metrics.

    >>> from toolkit.scoring import evaluate
    >>> result = evaluate(["step-1000.pt"], ["yourtts:../shared/data/mos/yourtts:PT"],
    ...                   controls=["random-init", "acoustic"], output_dir="results/eval")

Modules: :mod:`~toolkit.scoring.measures` (pure functions over contrastive logits),
:mod:`~toolkit.scoring.scorer` (batching, the ``score(wavs, lengths, keys)`` contract),
:mod:`~toolkit.scoring.cache`, :mod:`~toolkit.scoring.datasets`, :mod:`~toolkit.scoring.metrics`,
:mod:`~toolkit.scoring.acoustic` (trivial-feature controls), :mod:`~toolkit.scoring.wav2vec2`
(CTC uncertainty of wav2vec 2.0 ASR models), :mod:`~toolkit.scoring.evaluate` (the ``toolkit
evaluate`` command).
"""

from toolkit.scoring.evaluate import EvaluationResult, evaluate

__all__ = ["EvaluationResult", "evaluate"]
