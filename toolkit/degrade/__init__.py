"""Make graded degraded copies of clean clips: the mechanism test, where the truth is known.

For each clean clip, writes FLAC (16 kHz) versions at increasing severity for each degradation type:
white noise and babble (decreasing SNR), clipping, band-limiting, Opus / Vorbis / MP3 coding at
decreasing bitrate (in memory through soundfile's bundled libsndfile), mu-law with fewer bits,
synthetic reverberation (growing RT60) and packet loss (20 ms frames, growing rate). Every version is
rescaled to its clean clip's RMS level. Deterministic given --seed.

Writes DIR/audio/<clip>/<type>_<severity>.flac, DIR/manifest.csv
(path,clean_id,type,param,level,severity,mos,system,source; severity 0 = clean; mos is a pseudo-MOS
from severity, 5 = clean, 1 = most severe) and DIR/degrade.json (settings, levels, skipped inputs).

Example:
  toolkit degrade clean_clips/ --output degraded/ --types noise,codec,reverb --levels 5 --seed 0
"""

from __future__ import annotations

import argparse
import logging

from toolkit.degrade.analysis import SeverityCorrelation, bootstrap_mean_ci, severity_srcc
from toolkit.degrade.suite import (
    ALIASES,
    DEFAULT_LEVELS,
    DEGRADATIONS,
    MANIFEST_COLUMNS,
    DegradeResult,
    ManifestRow,
    apply_degradation,
    degrade_files,
    parse_types,
    read_manifest,
    rows_by_utt_id,
)

__all__ = [
    "ALIASES",
    "DEFAULT_LEVELS",
    "DEGRADATIONS",
    "MANIFEST_COLUMNS",
    "DegradeResult",
    "ManifestRow",
    "SeverityCorrelation",
    "add_arguments",
    "apply_degradation",
    "bootstrap_mean_ci",
    "degrade_files",
    "parse_types",
    "read_manifest",
    "rows_by_utt_id",
    "run",
    "severity_srcc",
]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="clean audio files or folders (searched recursively)")
    parser.add_argument("--output", required=True, help="folder for the degraded audio and manifest.csv")
    names = ",".join(DEGRADATIONS)
    parser.add_argument(
        "--types",
        default=names,
        help=f"comma-separated degradations (default: all = {names}); 'codec' means opus,vorbis,mp3",
    )
    parser.add_argument("--levels", type=int, default=DEFAULT_LEVELS, help="severities per type (default 5)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed (noise, babble, reverb, packet loss)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first unusable input instead of skipping it"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        def progress(items):
            return tqdm(items, desc="degrading", unit="clip")

    result = degrade_files(
        args.inputs,
        args.output,
        types=args.types,
        levels=args.levels,
        seed=args.seed,
        strict=args.strict,
        progress=progress,
    )
    print(f"{result.clean_clips} clean clips -> {len(result.rows)} files; manifest: {result.manifest}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} unusable input(s):")
        for path, problem in result.skipped:
            print(f"  {path}: {problem}")
    for note in result.notes:
        if "babble skipped" in note:
            print(f"note: {note}")
    return 0
