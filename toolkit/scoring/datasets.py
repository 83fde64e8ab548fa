"""MOS datasets: readers for the VoiceMOS layouts, a generic CSV, and the YourTTS listening test.

Every reader returns a :class:`MosDataset` of :class:`MosItem` ``(utt_id, path, mos, system)``.
Problems are never silent: a malformed row, a non-numeric MOS, a duplicate ID or a missing audio
file raises :class:`~toolkit.errors.DataError` naming the file (and line), or, with
``skip_bad=True``, is counted in ``MosDataset.skipped`` and reported. Systems with a single
utterance are listed in ``MosDataset.notes`` (system-level metrics leave them out).

Layouts (none of these sets is available on the development machines; the file and folder names,
splits and system-ID rules below were checked against public data-preparation code for these sets:
lhotse's ``recipes/bvcc.py`` and SHEET's ``egs/{bvcc,bc19,bc23,vmc23}/local/data_prep.py``; the
tests build their fixtures from those names):

``bvcc`` — VoiceMOS 2022 main track (BVCC), ``phase1-main/`` (``main/`` in the later release)
    ``DATA/wav/sysXXXX-uttYYYY.wav`` and ``DATA/sets/{train,val,test}_mos_list.txt`` with lines
    ``sysXXXX-uttYYYY.wav,3.625`` (mean MOS per clip); where a mean list is absent, the per-rating
    ``DATA/sets/{TRAINSET,DEVSET,TESTSET}`` (``sysID,uttID,rating,ignore,listenerinfo``, the files
    lhotse's and SHEET's recipes read) are averaged per clip. ``dev`` is accepted for ``val``. The
    system is the ``sysXXXX`` prefix of the file name (the sysID column of the per-rating files).
    PATH may be the track folder or its ``DATA``.
``vmc2022-ood`` — VoiceMOS 2022 out-of-domain track (Blizzard 2019 Chinese), ``phase1-ood/``
    The same ``DATA/{wav,sets}`` layout and anonymised ``sysID-uttID`` names (lhotse reads it so);
    its per-rating files name the clip without ``.wav``. ``unlabeled_mos_list.txt`` (names only,
    no scores) is not a split.
``vmc2023`` — VoiceMOS 2023, one folder of ``<sample_id>.wav`` per track plus the answer file
    ``<sample_id>,<mos>`` (``track1_answer.txt`` ... as released after the challenge; SHEET keeps
    them in ``answers/`` beside ``track1/ track2/ track3/``). Systems:
    track 1 (French Blizzard 2023) ``VoiceMOS2023Track1-A-AD_test_0026`` -> ``A-AD``, where sub-track
    ``1a`` keeps the ``NEB`` systems and ``1b`` the ``AD`` ones (``1`` keeps both); track 2 (singing,
    SVCC 2023) ``VoiceMOS2023Track2-B01-SF1-CDF1-30001`` -> ``B01``; track 3 (noisy/enhanced Chinese,
    TMHINT-QI) ``VoiceMOS2023Track3-Noisy_snr5_white_TMHINT_g4_32_03`` -> ``Noisy_snr5_white_TMHINT``
    (the name without its last three ``_`` fields).
``answers`` — a VoiceMOS answer-format file ``sysID-uttID,score`` with the audio beside it (or in
    a folder given as the second argument), e.g. ``../shared/data/mos/bvcc-samples/label.txt``.
``csv`` — a header row with ``path`` and ``mos`` columns, optional ``system``, ``utt_id`` and
    ``reference`` (the clean recording, for PESQ and STOI). Relative paths are relative to the CSV
    file. The degradation suite's ``manifest.csv`` (``toolkit degrade``) reads as a csv dataset; its
    ``clean`` row of each ``clean_id`` is the reference of that clip's degraded versions.
``yourtts`` — ``mos.csv`` (``language,audio_path,system,speaker_or_condition,mos,n_ratings``) and
    ``audio/``; the argument picks the language (``PT`` or ``EN``).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from toolkit.audio import AUDIO_EXTENSIONS
from toolkit.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MosItem:
    """One rated clip. ``system`` is ``None`` when the dataset has no system labels; ``reference`` is
    the clean recording the clip was made from, where the dataset gives one (intrusive references
    such as PESQ and STOI need it)."""

    utt_id: str
    path: Path
    mos: float
    system: str | None
    reference: Path | None = None


@dataclass
class MosDataset:
    name: str
    kind: str
    source: str
    items: list[MosItem]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, problem)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def has_systems(self) -> bool:
        return any(i.system is not None for i in self.items)

    def system_counts(self) -> Counter:
        return Counter(i.system for i in self.items if i.system is not None)

    def subset(self, n: int, seed: int = 0) -> MosDataset:
        """A seeded random subset of ``n`` clips (all clips when ``n >= len``), in the original order."""
        if n >= len(self.items):
            return self
        keep = set(random.Random(seed).sample(range(len(self.items)), n))
        items = [it for i, it in enumerate(self.items) if i in keep]
        return replace(self, items=items, notes=self.notes + [f"random subset of {n} of {len(self.items)} clips (seed {seed})"])

    def describe(self) -> str:
        systems = len(self.system_counts()) if self.has_systems else 0
        text = f"{self.name}: {len(self.items)} clips, {systems} systems ({self.kind}, {self.source})"
        with_reference = sum(i.reference is not None for i in self.items)
        if with_reference:
            text += f"; {with_reference} with a clean reference"
        if self.skipped:
            text += f"; {len(self.skipped)} skipped"
        return text


# --------------------------------------------------------------------------------------------------
# Validation shared by every reader


@dataclass
class _Row:
    where: str  # "file:line" for messages
    utt_id: str
    path: Path
    mos: str
    system: str | None
    reference: Path | None = None


def _finish(name: str, kind: str, source: Path, rows: list[_Row], skip_bad: bool) -> MosDataset:
    items: list[MosItem] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[str, str] = {}

    def bad(where: str, problem: str) -> None:
        if not skip_bad:
            raise DataError(where, problem)
        log.warning("skipping %s: %s", where, problem)
        skipped.append((where, problem))

    for row in rows:
        try:
            mos = float(row.mos)
        except (TypeError, ValueError):
            bad(row.where, f"MOS {row.mos!r} is not a number")
            continue
        if not math.isfinite(mos):
            bad(row.where, f"MOS {row.mos!r} is not finite")
            continue
        if row.utt_id in seen:
            bad(row.where, f"duplicate utterance ID {row.utt_id!r} (first at {seen[row.utt_id]})")
            continue
        if not row.path.is_file():
            bad(row.where, f"audio file not found: {row.path}")
            continue
        if row.path.stat().st_size == 0:
            bad(row.where, f"zero-length audio file: {row.path}")
            continue
        if row.reference is not None and not row.reference.is_file():
            bad(row.where, f"clean reference file not found: {row.reference}")
            continue
        seen[row.utt_id] = row.where
        items.append(MosItem(row.utt_id, row.path, mos, row.system, row.reference))
    if not items:
        raise DataError(source, f"no usable rated clips ({len(rows)} rows, {len(skipped)} skipped)")
    notes: list[str] = []
    counts = Counter(i.system for i in items if i.system is not None)
    singles = sorted(s for s, c in counts.items() if c == 1)
    if singles:
        shown = ", ".join(singles[:5]) + (" ..." if len(singles) > 5 else "")
        notes.append(f"{len(singles)} system(s) with a single utterance, left out of system-level metrics: {shown}")
    dataset = MosDataset(name, kind, str(source), items, skipped, notes)
    for note in notes:
        log.warning("%s: %s", name, note)
    return dataset


def _read_lines(path: Path) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot read ({err})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            out.append((n, [c.strip() for c in line.split(",")]))
    return out


def _with_audio_ext(folder: Path, stem: str) -> Path:
    """``folder/stem`` if it has an audio extension, else the first ``stem.<ext>`` that exists."""
    if stem.lower().endswith(AUDIO_EXTENSIONS):
        return folder / stem
    for ext in AUDIO_EXTENSIONS:
        candidate = folder / f"{stem}{ext}"
        if candidate.exists():
            return candidate
    return folder / f"{stem}.wav"


def _strip_audio_ext(name: str) -> str:
    return os.path.splitext(name)[0] if name.lower().endswith(AUDIO_EXTENSIONS) else name


_SYS_UTT = re.compile(r"^(sys[0-9A-Za-z]+)-(utt[0-9A-Za-z]+)$")


def system_from_sys_utt(utt_id: str) -> str | None:
    """``sys64e2f-utt491a78a`` -> ``sys64e2f`` (VoiceMOS 2022 names); otherwise the part before ``-``."""
    match = _SYS_UTT.match(utt_id)
    if match:
        return match.group(1)
    return utt_id.split("-", 1)[0] if "-" in utt_id else None


# --------------------------------------------------------------------------------------------------
# Readers


def read_answer_file(
    path: str | os.PathLike, audio_dir: str | os.PathLike | None = None, *, name: str | None = None,
    kind: str = "answers", skip_bad: bool = False,
) -> MosDataset:
    """A VoiceMOS answer-format file (``sysID-uttID,score`` per line) with audio in ``audio_dir``
    (default: beside the file). The system is the ``sysID`` prefix."""
    path = Path(path)
    audio_dir = Path(audio_dir) if audio_dir is not None else path.parent
    rows = []
    for n, cols in _read_lines(path):
        if len(cols) < 2:
            raise DataError(f"{path}:{n}", f"expected 'ID,score', got {','.join(cols)!r}")
        utt = _strip_audio_ext(cols[0])
        rows.append(_Row(f"{path}:{n}", utt, _with_audio_ext(audio_dir, cols[0]), cols[1], system_from_sys_utt(utt)))
    return _finish(name or path.parent.name, kind, path, rows, skip_bad)


# Per split: the mean-MOS list (``ID.wav,mean``) first, then the per-rating file that the release
# ships beside it (``sysID,uttID,rating,ignore,listenerinfo``; lhotse and SHEET read these).
_SPLIT_FILES = {
    "train": ("train_mos_list.txt", "TRAINSET"),
    "dev": ("val_mos_list.txt", "DEVSET"),
    "val": ("val_mos_list.txt", "DEVSET"),
    "test": ("test_mos_list.txt", "TESTSET"),
}


def read_bvcc(
    root: str | os.PathLike, split: str = "test", *, name: str | None = None, kind: str = "bvcc",
    skip_bad: bool = False,
) -> MosDataset:
    """VoiceMOS 2022 main track (BVCC): ``DATA/wav`` and, in ``DATA/sets``, ``<split>_mos_list.txt``
    (``train``, ``val``, ``test``) or else the per-rating ``TRAINSET`` / ``DEVSET`` / ``TESTSET``.

    ``root`` is the track folder (``phase1-main``, or ``main`` in the later release) or its ``DATA``
    folder. Also reads the OOD track, which uses the same layout (``kind="vmc2022-ood"``).
    """
    root = Path(root)
    data = root / "DATA" if (root / "DATA").is_dir() else root
    if split not in _SPLIT_FILES:
        raise DataError(root, f"unknown split {split!r}; choose from {', '.join(_SPLIT_FILES)}")
    sets = data / "sets"
    if not sets.is_dir() or not (data / "wav").is_dir():
        raise DataError(root, "not a VoiceMOS 2022 layout: expected DATA/wav/ and DATA/sets/")
    mean_list, per_rating = (sets / f for f in _SPLIT_FILES[split])
    name = name or f"{kind}-{split}"
    if mean_list.is_file():
        ds = read_answer_file(mean_list, data / "wav", name=name, kind=kind, skip_bad=skip_bad)
    elif per_rating.is_file():
        ds = _read_per_rating(per_rating, data / "wav", name=name, kind=kind, skip_bad=skip_bad)
    else:
        raise DataError(sets, f"no list for split {split!r} (looked for {mean_list.name} and {per_rating.name})")
    ds.source = str(root)
    return ds


def _read_per_rating(listing: Path, audio_dir: Path, *, name: str, kind: str, skip_bad: bool) -> MosDataset:
    """A VoiceMOS 2022 per-rating file: one ``sysID,uttID,rating,ignore,listenerinfo`` line per
    rating; the MOS of a clip is the mean of its ratings. The uttID carries ``.wav`` in the main
    track and not in the OOD track; the system is the sysID column."""
    first: dict[str, tuple[str, str]] = {}  # utt -> (where, system)
    ratings: dict[str, list[str]] = {}
    for n, cols in _read_lines(listing):
        where = f"{listing}:{n}"
        if len(cols) < 3:
            raise DataError(where, f"expected 'sysID,uttID,rating,...', got {','.join(cols)!r}")
        utt = _strip_audio_ext(cols[1])
        first.setdefault(utt, (where, cols[0]))
        ratings.setdefault(utt, []).append(cols[2])
    rows = []
    for utt, values in ratings.items():
        where, system = first[utt]
        try:
            mos = repr(sum(float(v) for v in values) / len(values))
        except ValueError:
            mos = next(v for v in values if not _is_number(v))
        rows.append(_Row(where, utt, _with_audio_ext(audio_dir, utt), mos, system))
    return _finish(name, kind, listing, rows, skip_bad)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_vmc2022_ood(root: str | os.PathLike, split: str = "test", **kwargs) -> MosDataset:
    """VoiceMOS 2022 OOD track (Blizzard 2019 Chinese): same layout as :func:`read_bvcc`."""
    kwargs.setdefault("name", f"vmc2022-ood-{split}")
    return read_bvcc(root, split, kind="vmc2022-ood", **kwargs)


def vmc2023_system(sample_id: str, track: str) -> str:
    """System of a VoiceMOS 2023 sample ID (see the module docstring for the rules)."""
    body = sample_id.split("-", 1)[1] if "-" in sample_id else sample_id
    if track.startswith("1"):
        return body.split("_", 1)[0]  # "A-AD_test_0026" -> "A-AD"
    if track == "2":
        return body.split("-", 1)[0]  # "B01-SF1-CDF1-30001" -> "B01"
    if track == "3":
        parts = body.split("_")
        return "_".join(parts[:-3]) if len(parts) > 3 else body
    raise ValueError(f"unknown VoiceMOS 2023 track {track!r}")


def read_vmc2023(
    root: str | os.PathLike, track: str, answers: str | os.PathLike | None = None, *, name: str | None = None,
    skip_bad: bool = False,
) -> MosDataset:
    """VoiceMOS 2023 track ``1`` / ``1a`` / ``1b`` / ``2`` / ``3``: ``<sample_id>.wav`` in ``root``
    (the track's folder, e.g. ``track1/`` or the unzipped ``VoiceMOS2023Track1/``), answers
    ``<sample_id>,<mos>`` from ``answers`` or found in ``root`` or beside it (``track<N>_answer.txt``,
    ``answer.txt``, ``answers/track<N>_answer.txt``, ``../answers/track<N>_answer.txt``).

    Track 3 lists bare ``TMHINT_...`` clean clips beside the ``clean_TMHINT_...`` condition; like
    SHEET, only the latter is kept (the others are counted in ``notes``).
    """
    root = Path(root)
    track = track.lower().removeprefix("track")
    if track not in {"1", "1a", "1b", "2", "3"}:
        raise DataError(root, f"unknown VoiceMOS 2023 track {track!r}; choose 1, 1a, 1b, 2 or 3")
    number = track[0]
    if answers is None:
        names = [f"track{number}_answer.txt", "answer.txt", f"answers/track{number}_answer.txt",
                 f"../answers/track{number}_answer.txt"]
        answers = next((root / n for n in names if (root / n).is_file()), None)
        if answers is None:
            raise DataError(root, f"no answer file found (looked for {', '.join(names)}); pass it as the last spec field")
    answers = Path(answers)
    rows = []
    bare_tmhint = 0
    for n, cols in _read_lines(answers):
        if len(cols) < 2:
            raise DataError(f"{answers}:{n}", f"expected 'sample_id,mos', got {','.join(cols)!r}")
        utt = _strip_audio_ext(cols[0])
        system = vmc2023_system(utt, track)
        if track == "1a" and system.split("-")[-1] != "NEB":
            continue
        if track == "1b" and system.split("-")[-1] != "AD":
            continue
        if track == "3" and system == "TMHINT":
            bare_tmhint += 1
            continue
        rows.append(_Row(f"{answers}:{n}", utt, _with_audio_ext(root, cols[0]), cols[1], system))
    ds = _finish(name or f"vmc2023-track{track}", "vmc2023", answers, rows, skip_bad)
    if bare_tmhint:
        ds.notes.append(f"{bare_tmhint} bare TMHINT_* clip(s) left out (only clean_TMHINT_* is a condition)")
    return ds


def read_csv_dataset(path: str | os.PathLike, *, name: str | None = None, skip_bad: bool = False) -> MosDataset:
    """Generic CSV with a header: ``path,mos`` required; ``system``, ``utt_id`` and ``reference``
    optional. A degradation-suite manifest (``clean_id`` and ``type`` columns) gets each clip's
    clean version as its reference."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        missing = [c for c in ("path", "mos") if c not in fields]
        if missing:
            raise DataError(path, f"missing column(s) {', '.join(missing)}; header is {','.join(fields) or '(empty)'}")
        reader.fieldnames = fields
        records = list(enumerate(reader, 2))

    def resolve(rel: str) -> Path:
        return Path(rel) if os.path.isabs(rel) else path.parent / rel

    suite = "reference" not in fields and {"clean_id", "type"} <= set(fields)
    clean_of = {
        (rec.get("clean_id") or "").strip(): (rec.get("path") or "").strip()
        for _, rec in records if suite and (rec.get("type") or "").strip() == "clean"
    }
    rows = []
    for n, rec in records:
        rel = (rec.get("path") or "").strip()
        if not rel:
            raise DataError(f"{path}:{n}", "empty path")
        utt = (rec.get("utt_id") or "").strip() or _strip_audio_ext(rel)
        system = (rec.get("system") or "").strip() or None
        ref = clean_of.get((rec.get("clean_id") or "").strip(), "") if suite else (rec.get("reference") or "").strip()
        rows.append(_Row(f"{path}:{n}", utt, resolve(rel), (rec.get("mos") or "").strip(), system,
                         resolve(ref) if ref else None))
    return _finish(name or path.stem, "csv", path, rows, skip_bad)


def read_yourtts(
    root: str | os.PathLike, language: str = "PT", *, name: str | None = None, skip_bad: bool = False
) -> MosDataset:
    """The YourTTS listening test: ``mos.csv`` per clip and ``audio/``; ``language`` is ``PT`` or ``EN``."""
    root = Path(root)
    table = root / "mos.csv"
    language = language.upper()
    if language not in {"PT", "EN"}:
        raise DataError(root, f"YourTTS language must be PT or EN, got {language!r}")
    if not table.is_file():
        raise DataError(table, "file not found (expected the YourTTS mos.csv)")
    with open(table, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        need = {"language", "audio_path", "system", "mos"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise DataError(table, f"missing column(s) {', '.join(sorted(missing))}")
        rows = [
            _Row(f"{table}:{n}", rec["audio_path"], root / "audio" / rec["audio_path"], rec["mos"], rec["system"])
            for n, rec in enumerate(reader, 2)
            if rec["language"].upper() == language
        ]
    return _finish(name or f"yourtts-{language.lower()}", "yourtts", root, rows, skip_bad)


# --------------------------------------------------------------------------------------------------
# Dataset specs on the command line


KINDS = ("bvcc", "vmc2022-ood", "vmc2023", "csv", "yourtts", "answers")


@dataclass(frozen=True)
class DatasetSpec:
    """``[NAME=]KIND:PATH[:ARG[:ARG2]]``, e.g. ``yourtts:../shared/data/mos/yourtts:PT``."""

    name: str
    kind: str
    path: str
    args: tuple[str, ...] = ()


SPEC_HELP = (
    "[NAME=]KIND:PATH[:ARG...] with KIND one of: "
    "bvcc:DIR[:train|dev|test] (VoiceMOS 2022 main), vmc2022-ood:DIR[:split] (Blizzard 2019), "
    "vmc2023:DIR:1|1a|1b|2|3[:ANSWERS] (VoiceMOS 2023), csv:FILE (path,mos[,system,reference]), "
    "yourtts:DIR[:PT|EN], answers:FILE[:AUDIO_DIR] (sysID-uttID,score)"
)


def parse_dataset_spec(text: str) -> DatasetSpec:
    """Parse a dataset spec (see :data:`SPEC_HELP`); raises ``DataError`` naming the spec."""
    name = None
    body = text
    if "=" in text.split(":", 1)[0]:
        name, body = text.split("=", 1)
    kind, _, rest = body.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS or not rest:
        raise DataError(text, f"bad dataset spec; expected {SPEC_HELP}")
    parts = rest.split(":")
    path, args = parts[0], tuple(p for p in parts[1:] if p)
    if kind == "vmc2023" and not args:
        raise DataError(text, "vmc2023 needs a track: vmc2023:DIR:1|1a|1b|2|3[:ANSWERS]")
    if name is None:
        name = kind if not args or kind in ("answers",) else f"{kind}-{args[0].lower()}"
        if kind == "bvcc" and not args:
            name = "bvcc-test"
        if kind == "yourtts" and not args:
            name = "yourtts-pt"
        if kind in ("answers", "csv"):
            name = Path(path).parent.name if kind == "answers" else Path(path).stem
            name = name or kind
    return DatasetSpec(name, kind, path, args)


def load_dataset(spec: DatasetSpec | str, skip_bad: bool = False) -> MosDataset:
    """Read the dataset a spec names."""
    if isinstance(spec, str):
        spec = parse_dataset_spec(spec)
    a = spec.args
    if spec.kind == "bvcc":
        return read_bvcc(spec.path, a[0] if a else "test", name=spec.name, skip_bad=skip_bad)
    if spec.kind == "vmc2022-ood":
        return read_vmc2022_ood(spec.path, a[0] if a else "test", name=spec.name, skip_bad=skip_bad)
    if spec.kind == "vmc2023":
        return read_vmc2023(spec.path, a[0], a[1] if len(a) > 1 else None, name=spec.name, skip_bad=skip_bad)
    if spec.kind == "csv":
        return read_csv_dataset(spec.path, name=spec.name, skip_bad=skip_bad)
    if spec.kind == "yourtts":
        return read_yourtts(spec.path, a[0] if a else "PT", name=spec.name, skip_bad=skip_bad)
    if spec.kind == "answers":
        return read_answer_file(spec.path, a[0] if a else None, name=spec.name, skip_bad=skip_bad)
    raise DataError(spec.kind, f"unknown dataset kind; choose from {', '.join(KINDS)}")
