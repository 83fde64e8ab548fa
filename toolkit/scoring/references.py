"""Reference predictors: what the field already uses, scored through the same contract as our models.

``toolkit evaluate --reference NAME`` puts these next to the zero-shot measures, on the same clips,
with the same bootstrap intervals (``role`` = ``reference`` in the results):

``dnsmos``      DNSMOS P.835 (signal, background, overall) and P.808, non-intrusive (``speechmos``)
``plcmos``      PLCMOS v2, non-intrusive, averaged over seeded rater embeddings (``speechmos``)
``distillmos``  DistillMOS v7, non-intrusive (``distillmos``)
``pesq``        wide-band PESQ against the clip's clean reference, intrusive (``pesq``)
``stoi``        STOI against the clip's clean reference, intrusive (``pystoi``)

Every measure name ends in ``.higher_better``: each of these predicts quality on a scale where a
higher value means better speech, so its sign is +1 and its SRCC with MOS should be positive.
The models ship inside the packages (ONNX files and a ``.pt`` state dict); nothing is downloaded.
They are the optional extra ``[references]`` (see :data:`INSTALL`); a missing extra fails with one
line naming it. Scores are computed one clip at a time over its true length, at 16 kHz.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import io
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from toolkit.audio import SAMPLE_RATE
from toolkit.errors import ToolkitError
from toolkit.scoring.scorer import check_batch, key_seed

INSTALL = "scripts/setup.sh --references (or: pip install '.[references]' && pip install --no-deps distillmos==0.9.1 xls-r-sqa==0.1.0)"
ADAPTER_VERSION = 1  # bump when the way a reference is called changes: invalidates its cache entries
BETTER = ".higher_better"


@dataclass(frozen=True)
class ReferenceSpec:
    """One reference predictor: its measures, the modules it needs and the distribution that holds them."""

    name: str
    measures: tuple[str, ...]
    modules: tuple[str, ...]
    distribution: str
    intrusive: bool
    description: str


REFERENCES: dict[str, ReferenceSpec] = {
    s.name: s
    for s in (
        ReferenceSpec("dnsmos", tuple(f"dnsmos.{m}{BETTER}" for m in ("overall", "signal", "background", "p808")),
                      ("speechmos.dnsmos", "librosa", "onnxruntime"), "speechmos", False,
                      "DNSMOS P.835 overall/signal/background and P.808 (speechmos 0.0.1.1)"),
        ReferenceSpec("plcmos", (f"plcmos{BETTER}",), ("speechmos.plcmos", "onnxruntime"), "speechmos", False,
                      "PLCMOS v2 (speechmos 0.0.1.1)"),
        ReferenceSpec("distillmos", (f"distillmos{BETTER}",), ("distillmos",), "distillmos", False,
                      "DistillMOS v7 (distillmos 0.9.1)"),
        ReferenceSpec("pesq", (f"pesq.wb{BETTER}",), ("pesq",), "pesq", True,
                      "wide-band PESQ (ITU-T P.862.2) against the clean reference (pesq)"),
        ReferenceSpec("stoi", (f"stoi{BETTER}",), ("pystoi",), "pystoi", True,
                      "STOI against the clean reference (pystoi)"),
    )
}
MEASURES: frozenset[str] = frozenset(m for s in REFERENCES.values() for m in s.measures)


def missing_modules(name: str) -> list[str]:
    """The modules of reference ``name`` that do not import here (empty when it is usable)."""
    missing = []
    for module in REFERENCES[name].modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


def available_references(names: Sequence[str] | None = None) -> list[str]:
    """The references (of ``names``, default all) whose packages are installed here, in table order.

    For callers that show the references when the extra is there and stay quiet when it is not
    (the demo): ``evaluate(..., references=available_references())``."""
    return [n for n in (names if names is not None else REFERENCES) if n in REFERENCES and not missing_modules(n)]


def check_references(names: Sequence[str]) -> None:
    """Raise :class:`ToolkitError` (one line: the extra and how to install it) unless all are usable."""
    unknown = [n for n in names if n not in REFERENCES]
    if unknown:
        raise ToolkitError("--reference", f"unknown reference {unknown[0]!r}; choose from {', '.join(REFERENCES)}")
    for name in names:
        missing = missing_modules(name)
        if missing:
            raise ToolkitError(
                f"--reference {name}",
                f"needs the optional extra [references] (missing: {', '.join(missing)}); install it with {INSTALL}",
            )


def _files_sha256(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _package_dir(module: str) -> Path:
    return Path(importlib.import_module(module).__file__).resolve().parent


class ReferenceScorer:
    """Base of the reference predictors: ``score(wavs, lengths, keys, references)`` one clip at a time.

    Subclasses implement :meth:`score_clip` on float64 numpy audio at 16 kHz. A clip the predictor
    cannot score (PESQ finds no speech, say) gets NaN and a counted note (see :meth:`take_notes`);
    the correlations leave non-finite scores out and count them.
    """

    sample_rate = SAMPLE_RATE
    min_samples = SAMPLE_RATE // 10  # 0.1 s
    spec: ReferenceSpec

    def __init__(self, seed: int = 0) -> None:
        self.name = self.spec.name
        self.measures = list(self.spec.measures)
        self.needs_reference = self.spec.intrusive
        self.seed = seed
        self._notes: Counter = Counter()

    def settings(self) -> dict:
        return {}

    def model_files(self) -> list[Path]:
        return []

    def fingerprint(self) -> dict:
        files = self.model_files()
        return {
            "scorer": "reference",
            "reference": self.name,
            "distribution": self.spec.distribution,
            "version": importlib.metadata.version(self.spec.distribution),
            "models_sha256": _files_sha256(files) if files else None,
            "settings": self.settings(),
            "adapter_version": ADAPTER_VERSION,
            "measures": sorted(self.measures),
            "sample_rate": self.sample_rate,
        }

    def take_notes(self) -> Counter:
        """Notes counted since the last call (``"pesq: no speech found ...": 2``), then cleared."""
        notes, self._notes = self._notes, Counter()
        return notes

    def score_clip(self, wave: np.ndarray, reference: np.ndarray | None, key: str) -> dict[str, float]:
        raise NotImplementedError

    @torch.inference_mode()
    def score(
        self, wavs: Tensor, lengths: Tensor | None = None, keys: Sequence[str] | None = None,
        references: Sequence[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """``{measure: [B]}`` (float32) for ``wavs [B, time]`` at 16 kHz; ``references``: one clean
        waveform per clip (intrusive references only)."""
        lengths, keys = check_batch(wavs, lengths, keys)
        batch = wavs.shape[0]
        if self.needs_reference and (references is None or len(references) != batch):
            raise ValueError(f"{self.name} needs one clean reference per clip")
        rows = []
        for i in range(batch):
            wave = wavs[i, : int(lengths[i])].double().cpu().numpy()
            ref = references[i].double().cpu().numpy() if self.needs_reference else None
            rows.append(self.score_clip(wave, ref, keys[i]))
        return {m: torch.tensor([r[m] for r in rows], dtype=torch.float32) for m in self.measures}


def _in_unit_range(x: np.ndarray) -> np.ndarray:
    # speechmos refuses samples outside [-1, 1] (float WAVs can overshoot); clip them.
    return np.clip(x, -1.0, 1.0)


class DnsmosScorer(ReferenceScorer):
    spec = REFERENCES["dnsmos"]

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        from speechmos.dnsmos import DNSMOS

        root = _package_dir("speechmos")
        self._files = [root / "dnsmos_models" / "sig_bak_ovr.onnx", root / "dnsmos_models" / "model_v8.onnx"]
        self._model = DNSMOS(str(self._files[0]), str(self._files[1]))

    def model_files(self) -> list[Path]:
        return self._files

    def settings(self) -> dict:
        return {"personalized": False}

    def score_clip(self, wave, reference, key):
        out = self._model(_in_unit_range(wave).astype(np.float32), SAMPLE_RATE, False)
        names = {"overall": "ovrl_mos", "signal": "sig_mos", "background": "bak_mos", "p808": "p808_mos"}
        return {f"dnsmos.{k}{BETTER}": float(out[v]) for k, v in names.items()}


class PlcmosScorer(ReferenceScorer):
    """PLCMOS averages its network over random rater embeddings; they are seeded by ``(seed, key)``."""

    spec = REFERENCES["plcmos"]
    embed_rounds = 15  # speechmos' default

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        from speechmos.plcmos import PLCMOS

        self._model = PLCMOS(embed_rounds=self.embed_rounds)
        self._files = [Path(self._model.model_path)]

    def model_files(self) -> list[Path]:
        return self._files

    def settings(self) -> dict:
        return {"embed_rounds": self.embed_rounds, "seed": self.seed, "rater_embeddings": "seeded per clip"}

    def score_clip(self, wave, reference, key):

        # speechmos draws the embeddings from numpy's global generator: seed it per clip, then restore it.
        state = np.random.get_state()
        try:
            np.random.seed(key_seed(self.seed, key) % (2**32))
            value = self._model.get_mos(_in_unit_range(wave).astype(np.float32))
        finally:
            np.random.set_state(state)
        return {f"plcmos{BETTER}": float(value)}


class DistillmosScorer(ReferenceScorer):
    spec = REFERENCES["distillmos"]

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        import distillmos.sqa as sqa

        with contextlib.redirect_stdout(io.StringIO()):  # it prints where it loaded the weights from
            self._model = sqa.ConvTransformerSQAModel().eval()
        self._files = [Path(sqa.DEFAULT_WEIGHTS_CHKPT)]

    def model_files(self) -> list[Path]:
        return self._files

    def score_clip(self, wave, reference, key):
        x = torch.from_numpy(wave.astype(np.float32))[None]
        return {f"distillmos{BETTER}": float(self._model(x)[0])}


class PesqScorer(ReferenceScorer):
    spec = REFERENCES["pesq"]
    min_samples = SAMPLE_RATE // 4  # P.862 needs at least 1/4 s

    def settings(self) -> dict:
        return {"mode": "wb", "rate": SAMPLE_RATE, "length": "shorter of clip and reference"}

    def score_clip(self, wave, reference, key):
        from pesq import PesqError, pesq

        n = min(len(wave), len(reference))
        try:
            value = float(pesq(SAMPLE_RATE, reference[:n], wave[:n], "wb"))
        except PesqError as err:
            self._notes[f"pesq could not score the clip ({type(err).__name__}): NaN"] += 1
            value = float("nan")
        return {f"pesq.wb{BETTER}": value}


class StoiScorer(ReferenceScorer):
    spec = REFERENCES["stoi"]
    min_samples = SAMPLE_RATE // 2  # STOI needs at least 30 frames of 25.6 ms after silence removal

    def settings(self) -> dict:
        return {"extended": False, "rate": SAMPLE_RATE, "length": "shorter of clip and reference"}

    def score_clip(self, wave, reference, key):
        from pystoi import stoi

        n = min(len(wave), len(reference))
        return {f"stoi{BETTER}": float(stoi(reference[:n], wave[:n], SAMPLE_RATE, extended=False))}


_CLASSES: dict[str, Callable[[int], ReferenceScorer]] = {
    "dnsmos": DnsmosScorer, "plcmos": PlcmosScorer, "distillmos": DistillmosScorer,
    "pesq": PesqScorer, "stoi": StoiScorer,
}


def build_reference(name: str, seed: int = 0) -> ReferenceScorer:
    """The scorer of reference ``name`` (after :func:`check_references`)."""
    check_references([name])
    return _CLASSES[name](seed)
