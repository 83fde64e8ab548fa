"""Domain-adaptive wav2vec (v1) pretraining and zero-shot speech-quality (MOS) evaluation.

The same operations as the ``toolkit`` command, as plain functions (imported lazily)::

    from toolkit import load_model, import_fairseq, export_fairseq
    model = load_model("wav2vec_large.pt")      # fairseq, toolkit or Lightning checkpoint
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "load_model": "toolkit.models.checkpoint",
    "load_checkpoint": "toolkit.models.checkpoint",
    "save_model": "toolkit.models.checkpoint",
    "import_fairseq": "toolkit.models.convert",
    "export_fairseq": "toolkit.models.convert",
    "wav2vec_model": "toolkit.models.wav2vec",
    "build_preset": "toolkit.models.wav2vec",
    "load_audio": "toolkit.audio",
    "ToolkitError": "toolkit.errors",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))
