"""recipes/paired_srcc.py on real file formats: a degradation manifest and two `toolkit evaluate`
scores files, compared per clean recording."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from toolkit.degrade.suite import MANIFEST_COLUMNS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "paired_srcc.py"


def _write_set(tmp: Path, recordings: int = 6, severities: int = 4) -> tuple[Path, list[tuple[str, str, float]]]:
    """A manifest of ``recordings`` clean clips with graded versions, and (utt_id, clean_id, mos) per clip."""
    clips = []
    with open(tmp / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        for r in range(recordings):
            for s in range(severities + 1):
                name = "clean" if s == 0 else f"noise_{s}"
                path = f"audio/rec{r}/{name}.flac"
                writer.writerow([path, f"rec{r}", "clean" if s == 0 else "noise", "snr_db", "", s, 5 - s,
                                 "clean" if s == 0 else f"noise-{s}", f"/src/rec{r}.wav"])
                clips.append((f"audio/rec{r}/{name}", f"rec{r}", float(5 - s)))
    return tmp / "manifest.csv", clips


def _write_scores(path: Path, clips, scores) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["utt_id", "system", "mos", "p_pos.mean"])
        for (utt, _, mos), score in zip(clips, scores):
            writer.writerow([utt, "x", mos, f"{score:.9g}"])


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO)


def test_paired_difference_from_scores_files(tmp_path: Path) -> None:
    manifest, clips = _write_set(tmp_path)
    rng = np.random.default_rng(0)
    mos = np.array([c[2] for c in clips])
    good, poor = mos + 0.5 * rng.normal(size=mos.size), mos + 3 * rng.normal(size=mos.size)
    _write_scores(tmp_path / "a.csv", clips, good)
    _write_scores(tmp_path / "b.csv", clips, poor)
    out = _run(tmp_path / "a.csv", tmp_path / "b.csv", "--manifest", manifest)
    assert out.returncode == 0, out.stderr
    expected = stats.spearmanr(good, mos).statistic - stats.spearmanr(poor, mos).statistic
    line = out.stdout.strip()
    assert line.startswith(f"p_pos.mean: {expected:+.3f} [")
    assert f"({len(clips)} clips, 6 clusters)" in line
    lo, hi = (float(v) for v in line.split("[")[1].split("]")[0].split(","))
    assert lo <= expected <= hi


def test_clips_missing_from_the_manifest_are_an_error_naming_it(tmp_path: Path) -> None:
    manifest, clips = _write_set(tmp_path)
    scores = np.arange(len(clips), dtype=float)
    stray = [*clips, ("audio/elsewhere/clean", "x", 5.0)]
    _write_scores(tmp_path / "a.csv", stray, [*scores, 1.0])
    _write_scores(tmp_path / "b.csv", stray, [*scores[::-1], 2.0])
    out = _run(tmp_path / "a.csv", tmp_path / "b.csv", "--manifest", manifest)
    assert out.returncode == 2
    assert str(manifest) in out.stderr and "audio/elsewhere/clean" in out.stderr


def test_an_absent_measure_is_an_error_naming_the_file(tmp_path: Path) -> None:
    measure = "entropy.mean"
    manifest, clips = _write_set(tmp_path)
    _write_scores(tmp_path / "a.csv", clips, np.arange(len(clips), dtype=float))
    out = _run(tmp_path / "a.csv", tmp_path / "a.csv", "--measure", measure)
    assert out.returncode == 2 and "a.csv" in out.stderr and measure in out.stderr
