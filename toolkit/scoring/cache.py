"""On-disk score cache: re-running an evaluation over many checkpoints recomputes nothing.

Layout::

    CACHE/<scorer hash>/meta.json        what the hash stands for (weights hash, config, settings)
    CACHE/<scorer hash>/<shard>.json     {file key: {measure: score}}, one shard per scored batch

The scorer hash covers everything that changes a score: the weights' content (SHA-256 of the state
dict, so a re-saved identical checkpoint still hits, and any changed weight misses), the model
config, the number of draws, the seed, the dtype, the measure set and the measures' version. The
file key covers the resolved path, size and modification time of the audio file (an edited file
misses), and of its clean reference for intrusive scorers (PESQ, STOI). Each shard is written atomically (temporary file + rename), so a killed run leaves only
whole shards behind and resumes from them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

from toolkit.io import write_json

log = logging.getLogger(__name__)


def fingerprint_hash(fingerprint: dict) -> str:
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class ScoreCache:
    """The cache of one scorer (one fingerprint) under ``root``."""

    def __init__(self, root: str | os.PathLike, fingerprint: dict) -> None:
        self.root = Path(root)
        self.fingerprint = fingerprint
        self.dir = self.root / fingerprint_hash(fingerprint)
        self._entries: dict[str, dict[str, float]] = {}
        self._load()

    def _load(self) -> None:
        if not self.dir.is_dir():
            return
        for shard in sorted(self.dir.glob("shard-*.json")):
            try:
                data = json.loads(shard.read_text())
            except (OSError, ValueError) as err:  # unreadable shard: ignore it, it will be recomputed
                log.warning("ignoring unreadable cache shard %s (%s)", shard, err)
                continue
            if isinstance(data, dict):
                self._entries.update(data)

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def file_key(path: str | os.PathLike, reference: str | os.PathLike | None = None) -> str | None:
        """Identity of an audio file: resolved path, size and mtime; with ``reference`` (the clean
        recording an intrusive scorer compares with), of both files. ``None`` if one cannot be stat'ed."""
        parts = []
        for p in (path,) if reference is None else (path, reference):
            p = Path(p)
            try:
                st = p.stat()
            except OSError:
                return None
            parts.append(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}")
        return hashlib.sha1("||".join(parts).encode()).hexdigest()

    def get(self, file_key: str) -> dict[str, float] | None:
        return self._entries.get(file_key)

    def put_many(self, entries: dict[str, dict[str, float]]) -> None:
        """Record scores and write them as one new shard (atomically)."""
        if not entries:
            return
        self._entries.update(entries)
        meta = self.dir / "meta.json"
        if not meta.exists():
            write_json(meta, self.fingerprint)
        write_json(self.dir / f"shard-{uuid.uuid4().hex}.json", entries)

    def compact(self) -> None:
        """Merge all shards into one (atomic write first, then delete the old shards).

        The shards are read again first: entries that another process (a second evaluation sharing
        the cache) wrote since this cache was loaded go into the merged shard, not away with it."""
        old = sorted(self.dir.glob("shard-*.json"))
        if len(old) <= 1:
            return
        self._load()
        merged = self.dir / f"shard-{uuid.uuid4().hex}.json"
        write_json(merged, self._entries)
        for shard in old:
            shard.unlink(missing_ok=True)
