"""Domain-adaptive wav2vec (v1) pretraining and zero-shot speech-quality (MOS) evaluation.

The same operations as the ``toolkit`` command, as plain functions (imported lazily)::

    from toolkit import load_model, evaluate, build_manifest, write_shards, pretrain
    model = load_model("wav2vec_large.pt")      # fairseq, toolkit or Lightning checkpoint
    evaluate(["wav2vec_large.pt"], ["yourtts:../shared/data/mos/yourtts:PT"], output_dir="results")

| command                  | function                                                  |
|--------------------------|-----------------------------------------------------------|
| toolkit manifest         | build_manifest (toolkit.data.manifest)                    |
| toolkit shard            | write_shards (toolkit.data.shards)                        |
| toolkit pretrain         | pretrain (argument list, as on the command line)          |
| toolkit evaluate         | evaluate (toolkit.scoring.evaluate)                       |
| toolkit import-fairseq   | import_fairseq / export_fairseq (toolkit.models.convert)  |
| toolkit degrade          | degrade_files (toolkit.degrade.suite)                     |
| toolkit submit           | submit_pretrain / submit_evaluate (toolkit.slurm.jobs)    |
| toolkit demo             | demo (toolkit.demo)                                       |
"""

from __future__ import annotations

import importlib
from typing import Any

from toolkit.version import __version__ as __version__

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
    "build_manifest": "toolkit.data.manifest",
    "write_shards": "toolkit.data.shards",
    "evaluate": "toolkit.scoring.evaluate",
    "degrade_files": "toolkit.degrade.suite",
    "submit_pretrain": "toolkit.slurm.jobs",
    "submit_evaluate": "toolkit.slurm.jobs",
    "demo": "toolkit.demo",
    "ToolkitError": "toolkit.errors",
}


def pretrain(args: list[str]) -> int:
    """Run ``toolkit pretrain`` with these arguments (e.g. ``["--config", "recipes/french/pretrain.yaml"]``)."""
    from toolkit.training.cli import main

    return main(args)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))
