"""Scoring audio with a model: one contract, ``score(wavs, lengths, keys) -> {measure: [B]}``.

Every scorer (wav2vec v1 uncertainty, wav2vec2 CTC uncertainty, trivial acoustic features) returns
*quality-oriented* scores: higher means higher predicted quality (see :mod:`toolkit.scoring.measures`
for the signs). :func:`score_files` drives any scorer over files: it batches by total audio length,
reads the cache, loads and checks audio, and counts every skip.

    >>> scorer = Wav2VecScorer(model, draws=3, seed=0)
    >>> scores = scorer.score(wavs, lengths, keys=["a", "b"])   # wavs [B, time] at 16 kHz
    >>> scores["entropy.mean"].shape                             # [B]
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from toolkit.audio import SAMPLE_RATE, audio_info, load_audio
from toolkit.batching import pack_by_padded_size, pad_right
from toolkit.errors import AudioError
from toolkit.scoring.measures import compute_measures, oriented, select_measures

log = logging.getLogger(__name__)

WORKER_BATCH_SECONDS = 20.0  # audio per batch sent to a worker process (score_files with jobs > 1)
MEASURES_VERSION = 1  # bump when a measure's definition changes: invalidates every cache entry


class Scorer(Protocol):
    """What :func:`score_files` needs from a scorer."""

    name: str
    measures: list[str]
    min_samples: int
    sample_rate: int

    def fingerprint(self) -> dict: ...

    def score(self, wavs: Tensor, lengths: Tensor, keys: Sequence[str] | None = None) -> dict[str, Tensor]: ...


def utterance_key(path: str | os.PathLike) -> str:
    """The name that seeds a file's negatives (its file name): the same for every caller of a scorer."""
    return Path(path).name


# Optional scorer attributes that score_files honours:
#   needs_reference = True   score(wavs, lengths, keys, references=[clean waveform per clip]) (PESQ, STOI)
#   take_notes() -> Counter  notes counted while scoring ("pesq could not score the clip": 2)
#   workers = True           score_files(jobs > 1) may send a pickled copy to worker processes (CPU only);
#                            set where scores are checked to be the same as in one process


def runs_in_workers(scorer) -> bool:
    """Whether :func:`score_files` may send ``scorer`` to worker processes: CPU scorers that say
    ``workers = True`` (checked to score the same there); one GPU is fed best by one process."""
    device = getattr(scorer, "device", None)
    return bool(getattr(scorer, "workers", False)) and (device is None or torch.device(device).type == "cpu")


def key_seed(seed: int, key: str) -> int:
    """A 63-bit seed from ``(seed, key)``: each utterance draws its own negatives, whatever the batch."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def state_dict_hash(module: torch.nn.Module) -> str:
    """SHA-256 over parameter and buffer names, shapes, dtypes and bytes (the weights' identity)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_batch(wavs: Tensor, lengths: Tensor | None, keys: Sequence[str] | None) -> tuple[Tensor, list[str]]:
    """Validate a scorer's inputs ``wavs [B, time]``; returns ``(lengths [B], keys)`` with defaults
    (full length; ``"0"``, ``"1"``...) filled in."""
    if wavs.ndim != 2:
        raise ValueError(f"wavs must be [batch, time], got {tuple(wavs.shape)}")
    batch = wavs.shape[0]
    if lengths is None:
        lengths = torch.full((batch,), wavs.shape[1], dtype=torch.long)
    keys = list(keys) if keys is not None else [str(i) for i in range(batch)]
    if len(keys) != batch:
        raise ValueError(f"got {len(keys)} keys for a batch of {batch}")
    return lengths, keys


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def scoring_logits_impl(device: torch.device) -> str:
    """How scorers compute contrastive logits on ``device`` (:attr:`Wav2VecModel.logits_impl`): on
    CPU each target frame's candidates once for all steps (a tenth of the frame-pair work;
    docs/performance.md), on GPU one frame-pair matmul per step, as in training."""
    return "targets" if device.type == "cpu" else "matmul"


def autocast_context(device: torch.device, dtype: str | None):
    """bf16 autocast for the network, or nothing. Measures are always computed in float32."""
    if dtype in (None, "float32", "fp32"):
        return contextlib.nullcontext()
    if dtype in ("bf16", "bfloat16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"dtype must be float32 or bf16, got {dtype!r}")


class Wav2VecScorer:
    """Contrastive-uncertainty scores of a wav2vec (v1) model.

    The network runs once per batch (``model.encode``); negatives are then drawn ``draws`` times from
    per-utterance generators seeded by ``(seed, key)``, and each measure is averaged over the draws.
    The contrastive logits of all draws come from one pass (the positive, and on GPU the frame-pair
    scores, are shared between draws).
    Scores therefore do not depend on how utterances are batched; on CPU each clip is run alone, so
    they are bit-identical whatever the batching (on GPU they agree to float rounding).

    ``padded``: ``None`` (default) runs whole padded batches on GPU and one clip at a time on CPU;
    ``True`` forces the padded :meth:`score_batch` path on any device (what a GPU runs), ``False``
    forces one clip at a time.
    """

    sample_rate = SAMPLE_RATE
    workers = True  # score_files(jobs > 1) may score it in worker processes (on CPU)

    def __init__(
        self,
        model: torch.nn.Module,
        measures: Sequence[str] | None = None,
        draws: int = 3,
        seed: int = 0,
        device: str | torch.device | None = "cpu",
        dtype: str | None = None,
        name: str = "wav2vec",
        padded: bool | None = None,
    ) -> None:
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        self.name = name
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.measures = select_measures(measures)
        self.draws = draws
        self.seed = seed
        self.dtype = dtype
        self.padded = self.device.type != "cpu" if padded is None else bool(padded)
        autocast_context(self.device, dtype)  # validate early
        self.min_samples = int(model.min_samples)
        self._weights_hash: str | None = None

    def fingerprint(self) -> dict:
        if self._weights_hash is None:
            self._weights_hash = state_dict_hash(self.model)
        config = getattr(self.model, "config", None)
        return {
            "scorer": "wav2vec",
            "weights_sha256": self._weights_hash,
            "config": config.to_dict() if hasattr(config, "to_dict") else None,
            "draws": self.draws,
            "seed": self.seed,
            "negatives": "uniform",
            "dtype": self.dtype or "float32",
            "measures": sorted(self.measures),
            "measures_version": MEASURES_VERSION,
            "sample_rate": self.sample_rate,
        }

    @torch.inference_mode()
    def score(self, wavs: Tensor, lengths: Tensor | None = None, keys: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Quality-oriented scores ``{measure: [B]}`` (float32, CPU) for ``wavs [B, time]`` at 16 kHz."""
        lengths, keys = check_batch(wavs, lengths, keys)
        batch = wavs.shape[0]
        short = [(k, int(n)) for k, n in zip(keys, lengths.tolist()) if n < self.min_samples]
        if short:
            raise ValueError(
                f"inputs shorter than the model's minimum of {self.min_samples} samples: "
                + ", ".join(f"{k} ({n})" for k, n in short)
            )
        if not self.padded and batch > 1:
            # CPU conv/matmul kernels sum in an order that depends on the tensor sizes, so a clip's
            # scores would change in the last bits with the batch it lands in. Scoring each clip
            # alone makes them bit-identical whatever the batching, and on CPU it costs nothing
            # (no padding either; bench/bench_batching.py).
            parts = [self.score_batch(wavs[i : i + 1, : int(n)], lengths[i : i + 1], keys[i : i + 1])
                     for i, n in enumerate(lengths.tolist())]
            return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
        return self.score_batch(wavs, lengths, keys)

    @torch.inference_mode()
    def score_batch(self, wavs: Tensor, lengths: Tensor, keys: Sequence[str]) -> dict[str, Tensor]:
        """:meth:`score` of a whole padded batch in one network pass (what :meth:`score` does on GPU)."""
        wavs = wavs.to(self.device, torch.float32)
        lengths = lengths.to(self.device)
        with autocast_context(self.device, self.dtype):
            z, _, predictions, frame_lengths = self.model.encode(wavs, lengths)
        z, predictions = z.float(), predictions.float()
        generators = [torch.Generator().manual_seed(key_seed(self.seed, k)) for k in keys]
        # All draws in one contrastive pass: the positive is scored once and every draw's distractors
        # come from the same pass. The negatives are drawn draw by draw from the same generators as
        # one pass per draw would, so the draws are those of separate passes.
        n = self.model.num_negatives
        negatives = [self.model.sample_negatives(frame_lengths, z.shape[-1], generators, "uniform") for _ in range(self.draws)]
        logits, mask = self.model.contrastive_logits(z, predictions, frame_lengths, torch.cat(negatives, dim=-1),
                                                     scoring_logits_impl(z.device))
        # Measures of every draw in one call: the draws stacked along the batch axis ([D*B, K, T, 1+N]).
        draws = torch.cat([torch.cat([logits[..., :1], logits[..., 1 + d * n : 1 + (d + 1) * n]], dim=-1)
                           for d in range(self.draws)])
        per_draw = compute_measures(draws, mask.repeat(self.draws, 1, 1), self.measures)
        total: dict[str, Tensor] = {}
        for name, value in per_draw.items():
            parts = value.view(self.draws, -1)  # [D, B]
            total[name] = parts[0]
            for d in range(1, self.draws):
                total[name] = total[name] + parts[d]
        return {n: v.cpu() / self.draws for n, v in oriented(total).items()}


# --------------------------------------------------------------------------------------------------
# Driving a scorer over files


@dataclass
class Skip:
    """A file that was not scored, and why."""

    key: str
    path: str
    reason: str


@dataclass
class ScoreRun:
    """Scores per key, skipped files, and counted notes (``"resampled 22050 Hz to 16000 Hz": 12``)."""

    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: list[Skip] = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)
    cached: int = 0
    computed: int = 0


def plan_batches(lengths: Sequence[int], max_batch_samples: int) -> list[list[int]]:
    """Group indices, longest first, so that ``len(batch) * longest <= max_batch_samples``.

    A single input longer than the budget forms its own batch.
    """
    return pack_by_padded_size(lengths, max_batch_samples, longest_first=True)


def score_files(
    scorer: Scorer,
    files: Sequence[tuple[str, str | os.PathLike] | tuple[str, str | os.PathLike, str | os.PathLike]],
    *,
    cache=None,
    max_batch_seconds: float = 120.0,
    skip_bad: bool = False,
    progress: bool = True,
    desc: str | None = None,
    on_batch: Callable[[int], None] | None = None,
    jobs: int = 1,
    pool=None,
) -> ScoreRun:
    """Score ``files`` (``(key, path)`` pairs) with ``scorer``; returns a :class:`ScoreRun`.

    ``cache`` (a :class:`~toolkit.scoring.cache.ScoreCache` for this scorer) is read first and written
    after every batch, so a killed run resumes where it stopped. Unusable audio (missing, undecodable,
    empty, NaN, shorter than ``scorer.min_samples``) raises :class:`AudioError` naming the file, or,
    with ``skip_bad``, is counted in ``ScoreRun.skipped``. Resampling and downmixing are counted in
    ``ScoreRun.notes``. The key seeds the utterance's negatives: use a stable name (the file name).
    A scorer with ``needs_reference`` takes ``(key, path, clean reference path)`` triples; the
    reference is loaded beside the clip and is part of the cache key.

    ``jobs > 1`` decodes and scores the batches in that many worker processes of one thread each
    (:mod:`toolkit.scoring.workers`) when the scorer runs on CPU and says ``workers = True`` (the
    wav2vec scorer and the acoustic control; others run here). The batches are
    planned and merged here in the same order as with one process, and only this process writes
    the cache, so scores, skips, notes, errors and cache are the same as with ``jobs=1``. ``pool``
    (a :class:`~toolkit.scoring.workers.WorkerPool`) runs them in workers that are already started
    (``toolkit evaluate`` keeps one for all its scorers and datasets); ``jobs`` then does not matter.
    Batches for workers hold at most :data:`WORKER_BATCH_SECONDS` of audio, so that the workers
    finish together (on CPU a clip's scores do not depend on its batch); when a bad file stops the
    run, the batches cached before it can therefore differ from those of ``jobs=1``.
    """
    from tqdm.auto import tqdm

    from toolkit.scoring.workers import ordered_map

    run = ScoreRun()
    intrusive = bool(getattr(scorer, "needs_reference", False))
    todo: list[tuple[str, Path, Path | None, str | None]] = []
    for entry in files:
        key, path = entry[0], Path(entry[1])
        reference = Path(entry[2]) if intrusive else None
        if intrusive and len(entry) < 3:
            raise ValueError(f"{scorer.name} needs (key, path, reference) triples, got {entry!r}")
        file_key = cache.file_key(path, reference) if cache is not None else None
        hit = cache.get(file_key) if cache is not None and file_key is not None else None
        if hit is not None and all(m in hit for m in scorer.measures):
            run.scores[key] = {m: hit[m] for m in scorer.measures}
            run.cached += 1
        else:
            todo.append((key, path, reference, file_key))

    # Plan batches from headers (no decoding); estimated lengths at the scorer's rate.
    sized: list[tuple[str, Path, Path | None, str | None, int]] = []
    for key, path, reference, file_key in todo:
        try:
            info = audio_info(path)
        except AudioError as err:
            if not skip_bad:
                raise
            run.skipped.append(_skip(key, path, err.problem))
            continue
        sized.append((key, path, reference, file_key, int(info.frames * scorer.sample_rate / max(info.sample_rate, 1))))
    if not runs_in_workers(scorer):
        jobs, pool = 1, None
    parallel = jobs > 1 or (pool is not None and not pool.closed)
    seconds = min(max_batch_seconds, WORKER_BATCH_SECONDS) if parallel else max_batch_seconds
    batches = plan_batches([s[4] for s in sized], int(seconds * scorer.sample_rate))
    tasks = [([sized[i][:3] for i in batch], skip_bad) for batch in batches]
    bar = tqdm(total=len(sized), desc=desc or scorer.name, unit="clip", disable=not progress, leave=False)
    try:
        for batch, done in zip(batches, ordered_map(score_batch, scorer, tasks, jobs, what=desc or scorer.name, pool=pool)):
            run.skipped += done.skipped
            run.notes.update(done.notes)
            file_keys = {sized[i][0]: sized[i][3] for i in batch}
            entries = {}
            for key, row in zip(done.keys, done.rows):
                run.scores[key] = row
                if file_keys[key] is not None:
                    entries[file_keys[key]] = row
            if cache is not None and entries:
                cache.put_many(entries)
            run.computed += len(done.keys)
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(len(batch))
    finally:
        bar.close()
    return run


def _skip(key: str, path: Path, reason: str) -> Skip:
    log.warning("skipping %s: %s", path, reason)
    return Skip(key, str(path), reason)


@dataclass
class BatchScores:
    """What scoring one batch of files gives: scores per key (in batch order), skips and notes."""

    keys: list[str] = field(default_factory=list)
    rows: list[dict[str, float]] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)


def score_batch(scorer: Scorer, task: tuple[Sequence[tuple[str, Path, Path | None]], bool]) -> BatchScores:
    """Decode, check and score one batch ``(items, skip_bad)`` of ``(key, path, reference)`` items
    (in this process or in a worker). A bad file raises :class:`AudioError` naming it, or with
    ``skip_bad`` is a :class:`Skip`."""
    items, skip_bad = task
    out = BatchScores()

    def fail(key: str, path: Path, reason: str) -> None:
        if not skip_bad:
            raise AudioError(path, reason)
        out.skipped.append(_skip(key, path, reason))

    def load(key: str, path: Path) -> Tensor | None:
        try:
            wave = load_audio(path, scorer.sample_rate)
        except AudioError as err:
            fail(key, path, err.problem)
            return None
        out.notes.update(wave.notes)
        if wave.samples.numel() < scorer.min_samples:
            fail(key, path, f"too short: {wave.samples.numel()} samples at {scorer.sample_rate} Hz, "
                            f"the model needs at least {scorer.min_samples}")
            return None
        return wave.samples

    waves, refs, names = [], [], []
    for key, path, reference in items:
        wave = load(key, path)
        if wave is None:
            continue
        if reference is not None:
            clean = load(key, reference)
            if clean is None:
                continue
            refs.append(clean)
        out.keys.append(key)
        waves.append(wave)
        names.append(utterance_key(path))
    if not out.keys:
        return out
    wavs, lengths = pad_right(waves)
    if getattr(scorer, "needs_reference", False):
        values = scorer.score(wavs, lengths, names, references=refs)
    else:
        values = scorer.score(wavs, lengths, names)
    out.rows = [{m: float(values[m][j]) for m in scorer.measures} for j in range(len(out.keys))]
    take_notes = getattr(scorer, "take_notes", None)
    if take_notes is not None:
        out.notes.update(take_notes())
    return out
