"""wav2vec (v1) model, presets, checkpoints and fairseq conversion."""

from toolkit.models.wav2vec import (
    PRESETS,
    Wav2VecConfig,
    Wav2VecModel,
    Wav2VecOutput,
    build_preset,
    wav2vec_large,
    wav2vec_medium,
    wav2vec_model,
    wav2vec_small,
    wav2vec_tiny,
)

__all__ = [
    "PRESETS",
    "Wav2VecConfig",
    "Wav2VecModel",
    "Wav2VecOutput",
    "build_preset",
    "wav2vec_large",
    "wav2vec_medium",
    "wav2vec_model",
    "wav2vec_small",
    "wav2vec_tiny",
]
