"""Reference bank (toolkit extension, not the paper's method): latents of clean real speech, built once.

The paper draws its contrastive negatives from the scored utterance itself. A degradation that
changes every frame alike (a codec, a vocoder) then changes the target and the negatives together.
A :class:`ReferenceBank` holds what the extensions compare against instead, all computed by *one*
model from clean real reference speech (never from an evaluation set):

- ``frames_z [M, C]``: a seeded sample of latent frames, the negatives of :class:`BankNegatives`;
- ``centroids_z [K, C]``, ``centroids_c [K, C_ctx]``: spherical k-means codebooks of the latents and
  contexts, used by :class:`~toolkit.scoring.typicality.Typicality`;
- ``reference``: mean and standard deviation over the reference clips of the scores that
  :class:`~toolkit.scoring.extensions.Combo` standardises.

It records the model's weights hash, its sources (path and SHA-256 of every file) and settings, and
a SHA-256 over all of it (``sha256``), which scorers put in their cache fingerprint. A bank can be
rebuilt for another model (the random-init control) from the same sources: :func:`bank_for_model`.

    toolkit bank ../shared/data/speech/en --checkpoint toolkit/assets/default/model.pt --output bank.pt

Measures of :class:`BankNegatives`: ``bank:p_pos.mean`` and ``bank:entropy.mean`` by default; any
registered measure (:mod:`toolkit.scoring.measures`) prefixed ``bank:``, with that measure's sign.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from toolkit.audio import SAMPLE_RATE, load_audio
from toolkit.errors import AudioError, CheckpointError, ToolkitError
from toolkit.models.wav2vec import prediction_mask
from toolkit.scoring.measures import MEASURES, compute_measures, oriented
from toolkit.scoring.scorer import key_seed, scoring_logits_impl, state_dict_hash, utterance_key
from toolkit.scoring.typicality import spherical_kmeans, typicality_measures

log = logging.getLogger(__name__)

BANK_FORMAT = "toolkit-reference-bank"
BANK_VERSION = 1
COMBO_PARTS = ("p_pos.mean", "typ:z.mean")  # what ComboScorer standardises (fixed in advance)
BANK_MEASURES = ("bank:p_pos.mean", "bank:entropy.mean")
TENSORS = ("frames_z", "centroids_z", "centroids_c")
SHIPPED = "codebook*.pt"  # banks shipped beside an embedded model: toolkit/assets/<name>/codebook*.pt


@dataclass
class ReferenceBank:
    """Latents, codebooks and reference statistics of one model on clean reference speech."""

    weights_sha256: str
    sources: list[dict]  # [{"path", "sha256", "frames"}]
    settings: dict  # clusters, bank_frames, seed, draws, iterations
    frames_z: Tensor  # [M, C]
    centroids_z: Tensor  # [K, C]
    centroids_c: Tensor  # [K, C_ctx]
    reference: dict[str, list[float]]  # measure -> [mean, std] over reference clips
    skipped: list[dict] = field(default_factory=list)
    sha256: str = ""

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = self.content_hash()

    def content_hash(self) -> str:
        h = hashlib.sha256()
        meta = {"weights": self.weights_sha256, "sources": self.sources, "settings": self.settings,
                "reference": self.reference, "version": BANK_VERSION}
        h.update(json.dumps(meta, sort_keys=True).encode())
        for t in (getattr(self, name) for name in TENSORS):
            t = t.detach().cpu().float().contiguous()
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    def check_model(self, model: torch.nn.Module) -> None:
        """Raise ``ValueError`` unless this bank was built with ``model``'s weights."""
        if state_dict_hash(model) != self.weights_sha256:
            raise ValueError(
                f"bank {self.sha256[:12]} was built with other weights ({self.weights_sha256[:12]}); "
                "rebuild it for this model (bank_for_model)"
            )

    def to_dict(self) -> dict:
        return {
            "format": BANK_FORMAT, "version": BANK_VERSION, "sha256": self.sha256,
            "weights_sha256": self.weights_sha256, "sources": self.sources, "settings": self.settings,
            "reference": self.reference, "skipped": self.skipped,
            "frames_z": self.frames_z, "centroids_z": self.centroids_z, "centroids_c": self.centroids_c,
        }


def save_bank(bank: ReferenceBank, path: str | os.PathLike, *, half: bool = False) -> ReferenceBank:
    """Write ``bank`` atomically (a torch file of tensors, strings and numbers only) and return what was written.

    With ``half`` the tensors are stored in float16: the returned bank holds the rounded values (as
    float32) and the content hash over them, which is what :func:`load_bank` reads back.
    """
    from toolkit.io import write_torch

    if half:
        rounded = {name: getattr(bank, name).half().float() for name in TENSORS}
        bank = dataclasses.replace(bank, **rounded, sha256="")
    data = bank.to_dict()
    if half:
        data.update({name: getattr(bank, name).half() for name in TENSORS})
    write_torch(path, data)
    return bank


def load_bank(path: str | os.PathLike) -> ReferenceBank:
    """Read a bank; raises :class:`CheckpointError` naming the file if it is not one or its hash is wrong."""
    from toolkit.models.checkpoint import safe_torch_load

    data = safe_torch_load(path)
    if not isinstance(data, dict) or data.get("format") != BANK_FORMAT:
        raise CheckpointError(path, f"not a reference bank (expected format {BANK_FORMAT!r}; make one with `toolkit bank`)")
    if data.get("version") != BANK_VERSION:
        raise CheckpointError(path, f"reference bank version {data.get('version')}, this toolkit reads {BANK_VERSION}")
    fields = ("weights_sha256", "sources", "settings", "reference")
    tensors = {k: data[k].float() for k in TENSORS}  # a float16 bank (--half) is read as float32
    bank = ReferenceBank(**{k: data[k] for k in fields}, **tensors, skipped=data.get("skipped", []))
    if bank.sha256 != data.get("sha256"):
        raise CheckpointError(path, f"content hash mismatch (stored {str(data.get('sha256'))[:12]}, "
                                    f"computed {bank.sha256[:12]}): the file was changed after it was written")
    return bank


def shipped_bank(model: torch.nn.Module, folder: str | os.PathLike | None = None) -> ReferenceBank | None:
    """The codebook shipped with the embedded models (``toolkit/assets/*/codebook*.pt``, or under
    ``folder``) that was built with ``model``'s weights; ``None`` when none was.

    The embedded default ships one for itself and one for its random-init control (seed 0), so the
    chosen measure beyond the paper needs no ``--bank`` for them. They hold the k-means codebooks and
    the reference statistics but no negatives (``settings["bank_frames"] == 0``).
    """
    from toolkit.models.embedded import ASSETS

    weights = state_dict_hash(model)
    for path in sorted(Path(folder if folder is not None else ASSETS).glob(f"*/{SHIPPED}")):
        bank = load_bank(path)
        if bank.weights_sha256 == weights:
            return bank
    return None


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@torch.inference_mode()
def build_bank(
    model: torch.nn.Module,
    files: Sequence[str | os.PathLike],
    *,
    clusters: int = 128,
    bank_frames: int = 8192,
    seed: int = 0,
    draws: int = 3,
    iterations: int = 30,
) -> ReferenceBank:
    """Encode clean reference ``files`` with ``model`` and build its :class:`ReferenceBank`.

    Files that cannot be used (undecodable, shorter than the model's minimum) are skipped, logged
    and listed in ``bank.skipped``; no usable file at all raises :class:`ToolkitError`.
    """
    model = model.eval().cpu()
    paths = sorted(Path(f).resolve() for f in files)
    zs, cs, sources, skipped, p_pos = [], [], [], [], []
    for path in paths:
        try:
            wave = load_audio(path, SAMPLE_RATE).samples
        except AudioError as err:
            log.warning("bank: skipping %s: %s", path, err.problem)
            skipped.append({"path": str(path), "problem": err.problem})
            continue
        if wave.numel() < model.min_samples:
            skipped.append({"path": str(path), "problem": f"too short ({wave.numel()} samples)"})
            continue
        encoding = model.encode(wave[None], torch.tensor([wave.numel()]))
        zs.append(encoding[0][0].T.float())
        cs.append(encoding[1][0].T.float())
        p_pos.append(float(utterance_measures(model, encoding, utterance_key(path), ["p_pos.mean"], draws, seed)["p_pos.mean"][0]))
        sources.append({"path": str(path), "sha256": file_sha256(path), "frames": int(encoding[0].shape[-1])})
    if not sources:
        raise ToolkitError(paths[0] if paths else None, "no usable reference audio for the bank")
    all_z, all_c = torch.cat(zs), torch.cat(cs)
    k = min(clusters, all_z.shape[0])
    centroids_z = spherical_kmeans(all_z, k, iterations=iterations, seed=seed)
    centroids_c = spherical_kmeans(all_c, k, iterations=iterations, seed=seed)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(all_z.shape[0], generator=g)[: min(bank_frames, all_z.shape[0])].sort().values
    typ = [
        float(typicality_measures(z.T[None], c.T[None], torch.tensor([z.shape[0]]), centroids_z, centroids_c)["typ:z.mean"][0])
        for z, c in zip(zs, cs)
    ]
    reference = {name: _mean_std(values) for name, values in (("p_pos.mean", p_pos), ("typ:z.mean", typ))}
    settings = {"clusters": k, "bank_frames": int(pick.numel()), "seed": seed, "draws": draws, "iterations": iterations}
    return ReferenceBank(state_dict_hash(model), sources, settings, all_z[pick].clone(), centroids_z, centroids_c,
                         reference, skipped)


def _mean_std(values: Sequence[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    std = float(t.std(unbiased=False)) if t.numel() > 1 else 0.0
    return [float(t.mean()), std]


def bank_for_model(bank: ReferenceBank, model: torch.nn.Module, cache_dir: str | os.PathLike | None = None) -> ReferenceBank:
    """``bank`` itself if it was built with ``model``'s weights, else the same bank rebuilt for ``model``.

    Rebuilding reads the bank's sources, which must still exist with the same SHA-256. The result is
    cached in ``cache_dir/banks/`` under a hash of (weights, sources, settings).
    """
    weights = state_dict_hash(model)
    if weights == bank.weights_sha256:
        return bank
    key = hashlib.sha256(json.dumps({"weights": weights, "sources": bank.sources, "settings": bank.settings},
                                    sort_keys=True).encode()).hexdigest()[:20]
    cached = Path(cache_dir) / "banks" / f"{key}.pt" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        return load_bank(cached)
    for source in bank.sources:
        if not Path(source["path"]).is_file() or file_sha256(source["path"]) != source["sha256"]:
            raise ToolkitError(source["path"], "reference audio of the bank is missing or changed; cannot rebuild "
                                               "the bank for another model (the random-init control needs it)")
    s = bank.settings
    rebuilt = build_bank(model, [src["path"] for src in bank.sources], clusters=s["clusters"],
                         bank_frames=s["bank_frames"], seed=s["seed"], draws=s["draws"], iterations=s["iterations"])
    if cached is not None:
        save_bank(rebuilt, cached)
    return rebuilt


# --------------------------------------------------------------------------------------------------
# Negatives from a pool of latents other than the utterance's own


def pooled_logits(
    z: Tensor, predictions: Tensor, frame_lengths: Tensor, offset: int, pool: Tensor, negative_indices: Tensor
) -> tuple[Tensor, Tensor]:
    """Contrastive logits whose negatives come from ``pool`` instead of the utterance.

    ``z [B, C, F]``, ``predictions [B, C, F, K]`` and ``frame_lengths [B]`` as
    :meth:`Wav2VecModel.encode` gives them; ``pool [B, M, C]`` (a bank, or a clean twin's latents);
    ``negative_indices [B, F, N]`` index ``pool`` per target frame. Returns ``logits [B, K, T, 1+N]``
    (index 0 the true future frame ``z[:, :, t + offset + k]``) and ``mask [B, K, T]``, laid out as
    :meth:`Wav2VecModel.contrastive_logits` lays them out.
    """
    batch, channels, frames = z.shape
    steps = predictions.shape[-1]
    context = frames - offset
    if context <= 0:
        raise ValueError(f"{frames} latent frames leave no prediction at offset {offset}")
    if pool.ndim != 3 or pool.shape[0] != batch or pool.shape[2] != channels:
        raise ValueError(f"pool must be [B={batch}, M, C={channels}], got {tuple(pool.shape)}")
    pred = predictions.permute(0, 3, 2, 1)[:, :, :context]  # [B, K, T, C]
    zt = torch.nn.functional.pad(z.transpose(1, 2), (0, 0, 0, steps - 1))  # [B, F+K-1, C]
    batch_ids = torch.arange(batch, device=z.device)[:, None, None]
    negs = pool[batch_ids, negative_indices.to(z.device)]  # [B, F, N, C]
    negs = torch.nn.functional.pad(negs, (0, 0, 0, 0, 0, steps - 1))
    per_step = []
    for k in range(steps):
        window = slice(offset + k, offset + k + context)
        pos = (pred[:, k] * zt[:, window]).sum(-1, keepdim=True)  # [B, T, 1]
        neg = torch.einsum("btc,btnc->btn", pred[:, k], negs[:, window])  # [B, T, N]
        per_step.append(torch.cat([pos, neg], -1))
    logits = torch.stack(per_step, 1)
    return logits, prediction_mask(frames, steps, offset, frame_lengths.to(z.device))


def standardise(value: Tensor, mean: float, std: float, name: str = "the score") -> Tensor:
    """``(value - mean) / std`` in float64, against reference statistics ``(mean, std)`` of ``name``.

    A reference spread of 0 cannot standardise: ``ValueError``.
    """
    if not std > 0:
        raise ValueError(f"reference spread of {name} is {std}: cannot standardise")
    return (value.double() - mean) / std


def utterance_draws(
    model: torch.nn.Module, encoding: tuple[Tensor, Tensor, Tensor, Tensor], key: str, draws: int, seed: int,
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(logits, mask)`` of each of ``draws`` negative draws from the utterance itself, as
    :class:`~toolkit.scoring.scorer.Wav2VecScorer` draws them for ``(seed, key)``, from one clip's
    ``model.encode`` output."""
    z, _, predictions, frame_lengths = encoding
    g = [torch.Generator().manual_seed(key_seed(seed, key))]
    for _ in range(draws):
        negatives = model.sample_negatives(frame_lengths, z.shape[-1], g, "uniform")
        yield model.contrastive_logits(z, predictions, frame_lengths, negatives, scoring_logits_impl(z.device))


def utterance_measures(
    model: torch.nn.Module, encoding: tuple[Tensor, Tensor, Tensor, Tensor], key: str, names: Sequence[str],
    draws: int, seed: int,
) -> dict[str, Tensor]:
    """The paper's measures (negatives from the utterance) of one clip from its encoding, quality-oriented.

    The same draws as :class:`~toolkit.scoring.scorer.Wav2VecScorer` with the same ``seed`` and ``key``
    (a test checks they agree), so an extension can reuse the network pass it already made.
    """
    total: dict[str, Tensor] = {}
    for logits, mask in utterance_draws(model, encoding, key, draws, seed):
        for name, value in compute_measures(logits, mask, names).items():
            total[name] = total[name] + value if name in total else value
    return {n: v / draws for n, v in oriented(total).items()}


class BankNegatives:
    """The ``bank`` family for :class:`~toolkit.scoring.extensions.ExtensionScorer`: the paper's
    measures with negatives drawn uniformly from the bank's frames.

    ``draws`` independent draws per clip from a generator seeded by ``(seed, key)``; each measure is
    the mean over draws, reported with the sign of the paper's measure.
    """

    def __init__(self, model: torch.nn.Module, bank: ReferenceBank, measures: Sequence[str] | None = None,
                 draws: int = 3, seed: int = 0) -> None:
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        self.measures = list(measures or BANK_MEASURES)
        bad = [m for m in self.measures if not m.startswith("bank:") or m[5:] not in MEASURES]
        if bad:
            raise ValueError(f"unknown bank measures {bad}: use bank:<measure>, e.g. {', '.join(BANK_MEASURES)}")
        if bank.frames_z.shape[0] == 0:
            raise ToolkitError("--extension bank", f"bank {bank.sha256[:12]} holds no negatives (a shipped codebook): "
                                                   "pass a bank made by `toolkit bank` with --bank")
        self.model, self.bank, self.draws, self.seed = model, bank, draws, seed

    def fingerprint(self) -> dict:
        return {"family": "bank", "version": 1, "draws": self.draws, "seed": self.seed,
                "negatives": self.model.num_negatives, "measures": sorted(self.measures)}

    def compute(self, encoding: tuple[Tensor, Tensor, Tensor, Tensor], key: str) -> dict[str, Tensor]:
        """``{bank:measure: [1]}`` for one clip's ``model.encode`` output."""
        z, _, predictions, frame_lengths = encoding
        pool = self.bank.frames_z.to(z.device)[None]
        g = torch.Generator().manual_seed(key_seed(self.seed, "bank\0" + key))
        total: dict[str, Tensor] = {}
        for _ in range(self.draws):
            idx = torch.randint(pool.shape[1], (1, z.shape[-1], self.model.num_negatives), generator=g)
            logits, mask = pooled_logits(z, predictions, frame_lengths, self.model.offset, pool, idx)
            for name, value in compute_measures(logits, mask, [m[5:] for m in self.measures]).items():
                total[name] = total[name] + value if name in total else value
        return {f"bank:{n}": v / self.draws for n, v in oriented(total).items()}


# --------------------------------------------------------------------------------------------------
# CLI: toolkit bank


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Build a reference bank (negatives, k-means codebooks, reference statistics) from CLEAN REAL speech.

Never build it from an evaluation set or from synthetic speech. The bank belongs to one model
(its weights hash is stored); `toolkit evaluate --extension ... --bank BANK` rebuilds it from the
same sources for the random-init control.

Example:
  toolkit bank ../shared/data/speech/en --checkpoint toolkit/assets/default/model.pt --output runs/bank.pt
  toolkit bank clean_a/ clean_b/ --checkpoint runs/pretrain/last.pt --clusters 128 --output bank.pt
  # the codebook shipped for the default's random-init control (no negatives; float32, see its model card):
  toolkit bank ../shared/data/speech/en --checkpoint toolkit/assets/default/model.pt --random-init 0 \
      --bank-frames 0 --output toolkit/assets/default/codebook-random-init.pt
"""
    parser.add_argument("inputs", nargs="+", metavar="AUDIO", help="clean real speech: files or folders (recursive)")
    parser.add_argument("--output", required=True, help="bank file to write (.pt)")
    parser.add_argument("--checkpoint", required=True,
                        help="model whose latents fill the bank (the embedded default: toolkit/assets/default/model.pt)")
    parser.add_argument("--clusters", type=int, default=128, help="k-means centroids per codebook (default 128)")
    parser.add_argument("--bank-frames", type=int, default=8192, help="latent frames kept as negatives (default 8192)")
    parser.add_argument("--draws", type=int, default=3, help="negative draws for the reference statistics (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-init", type=int, default=None, metavar="SEED",
                        help="build it for the random-init control of CHECKPOINT instead (its architecture with weights "
                             "seeded by SEED, as `toolkit evaluate --control random-init --seed SEED` makes them)")
    parser.add_argument("--half", action="store_true",
                        help="store the tensors in float16 (half the size; check that it keeps your rankings, as recipes/beyond/check_half.py does: the shipped codebooks stay float32 because it did not)")


def run(args: argparse.Namespace) -> int:
    from toolkit.degrade.suite import collect_audio
    from toolkit.models.checkpoint import load_checkpoint

    checkpoint = Path(args.checkpoint)
    model, _ = load_checkpoint(checkpoint)
    which = f"model {checkpoint}"
    if args.random_init is not None:
        from toolkit.scoring.candidates import seeded_random_model

        model = seeded_random_model(model.config, args.random_init)
        which = f"random-init control (seed {args.random_init}) of {checkpoint}"
    files = collect_audio(args.inputs)
    bank = build_bank(model, files, clusters=args.clusters, bank_frames=args.bank_frames, seed=args.seed, draws=args.draws)
    bank = save_bank(bank, args.output, half=args.half)
    frames = sum(s["frames"] for s in bank.sources)
    print(f"bank {bank.sha256[:12]}: {len(bank.sources)} files ({frames / 100:.0f} s of latents), "
          f"{bank.settings['clusters']} centroids, {bank.settings['bank_frames']} negatives, "
          f"{len(bank.skipped)} skipped, {'float16' if args.half else 'float32'}; {which}; written to {args.output}")
    return 0
