"""Scoring in worker processes (``score_files(jobs=N)``, ``toolkit evaluate --jobs N``): the same scores
(bit for bit), skips, notes, errors, cache and output files as one process; workers end with their parent."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from reliability_support import REPO, cli_command, env, make_clips

from toolkit.audio import save_audio
from toolkit.cli import main
from toolkit.errors import AudioError
from toolkit.models.wav2vec import wav2vec_tiny
from toolkit.scoring.acoustic import AcousticScorer
from toolkit.scoring.cache import ScoreCache
from toolkit.scoring.scorer import Wav2VecScorer, score_files

DEFAULT_MODEL = REPO / "toolkit" / "assets" / "default" / "model.pt"


def _clips(folder: Path) -> dict[str, Path]:
    """Varied clips: 16 kHz, 22.05 kHz, 48 kHz stereo (resampled and downmixed), and the bad ones."""
    g = torch.Generator().manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, (n, rate, channels) in enumerate([(9000, 16000, 1), (30000, 22050, 1), (40000, 48000, 2), (16000, 16000, 1),
                                             (60000, 48000, 1), (12000, 16000, 1), (26000, 22050, 2), (20000, 16000, 1)]):
        wave = 0.1 * torch.randn(n, channels, generator=g)
        out[f"c{i}"] = folder / f"c{i}.wav"
        sf.write(out[f"c{i}"], wave.numpy(), rate, subtype="PCM_16")
    nan = np.full(16000, 0.1, dtype=np.float32)
    nan[100] = np.nan
    out["nan"] = folder / "nan.wav"
    sf.write(out["nan"], nan, 16000, subtype="FLOAT")  # the header reads; decoding finds the NaN (in the worker)
    out["short"] = folder / "short.wav"
    save_audio(out["short"], 0.1 * torch.ones(300), 16000)  # under the model's minimum
    out["garbage"] = folder / "garbage.wav"
    out["garbage"].write_bytes(b"not a wav file at all" * 10)  # fails at the header (in the parent)
    return out


@pytest.mark.parametrize("make_scorer", [lambda: Wav2VecScorer(wav2vec_tiny(), draws=2), AcousticScorer],
                         ids=["wav2vec", "acoustic"])
def test_workers_give_one_process_scores_skips_notes_and_cache(tmp_path, make_scorer):
    torch.manual_seed(0)
    scorer = make_scorer()
    files = list(_clips(tmp_path / "audio").items())
    runs = {}
    for jobs in (1, 2):
        cache = ScoreCache(tmp_path / f"cache-{jobs}", scorer.fingerprint())
        runs[jobs] = score_files(scorer, files, cache=cache, skip_bad=True, progress=False, max_batch_seconds=2.0,
                                 jobs=jobs)
    one, two = runs[1], runs[2]
    bad = {"nan.wav", "garbage.wav"} | ({"short.wav"} if scorer.min_samples > 300 else set())
    n = len(files) - len(bad)
    assert len(one.scores) == n and one.computed == n
    assert two.scores == one.scores  # float equality: bit for bit
    assert [dataclasses.asdict(s) for s in two.skipped] == [dataclasses.asdict(s) for s in one.skipped]
    assert {Path(s.path).name for s in one.skipped} == bad
    assert two.notes == one.notes and one.notes["resampled 48000 Hz to 16000 Hz"] == 2
    assert two.computed == one.computed
    # the cache the workers' scores went into holds exactly what one process writes, and serves a rerun
    fresh = {jobs: ScoreCache(tmp_path / f"cache-{jobs}", scorer.fingerprint()) for jobs in (1, 2)}
    assert fresh[2]._entries == fresh[1]._entries and len(fresh[2]) == n
    again = score_files(scorer, files, cache=fresh[2], skip_bad=True, progress=False, max_batch_seconds=2.0, jobs=2)
    assert again.computed == 0 and again.cached == n and again.scores == one.scores


def test_extension_scorer_in_workers_gives_one_process_scores(tmp_path, monkeypatch):
    from toolkit.scoring import workers
    from toolkit.scoring.bank import build_bank
    from toolkit.scoring.extensions import ExtensionScorer

    torch.manual_seed(0)
    model = wav2vec_tiny()
    clips = _clips(tmp_path / "audio")
    good = [p for k, p in clips.items() if k.startswith("c")]
    bank = build_bank(model, good[:4], clusters=4, bank_frames=100, seed=0, draws=1, iterations=3)
    scorer = ExtensionScorer(model, bank, ["bank", "typicality", "combo", "prediction", "probe", "dynamics"], draws=2)
    files = list(clips.items())
    mapped = []
    real_map = workers.ordered_map
    monkeypatch.setattr(workers, "ordered_map", lambda fn, state, tasks, jobs, *a, **k:
                        mapped.append(jobs) or real_map(fn, state, tasks, jobs, *a, **k))
    runs = [score_files(scorer, files, skip_bad=True, progress=False, max_batch_seconds=2.0, jobs=jobs)
            for jobs in (1, 2)]
    assert len(runs[0].scores) == len(good) and runs[1].scores == runs[0].scores  # bit for bit
    assert [s.path for s in runs[1].skipped] == [s.path for s in runs[0].skipped]
    assert mapped == [1, 2]  # the second run went through two workers


def test_bad_file_in_a_worker_is_the_same_clear_error(tmp_path):
    torch.manual_seed(0)
    scorer = Wav2VecScorer(wav2vec_tiny(), draws=1)
    clips = _clips(tmp_path / "audio")
    files = [(k, p) for k, p in clips.items() if k not in ("short", "garbage")]
    errors, cached = {}, {}
    for jobs in (1, 2):
        cache = ScoreCache(tmp_path / f"cache-{jobs}", scorer.fingerprint())
        with pytest.raises(AudioError) as err:
            score_files(scorer, files, cache=cache, progress=False, max_batch_seconds=2.0, jobs=jobs)
        errors[jobs] = err.value
        cached[jobs] = ScoreCache(tmp_path / f"cache-{jobs}", scorer.fingerprint())._entries
    assert str(errors[2]) == str(errors[1]) == f"{clips['nan']}: 1 NaN/Inf samples"
    assert errors[2].path == str(clips["nan"])
    # the batches merged before the bad one are cached, the same in both
    assert cached[2] == cached[1] and 0 < len(cached[1]) < 8


def _outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "results.json" and "cache" not in p.parts}


def test_evaluate_jobs_2_writes_the_files_of_jobs_1(tmp_path, capsys):
    """The embedded default model and the acoustic control on resampled clips with a skip: every
    output file is byte-identical; ``--jobs 1`` runs with two intra-op threads, as on a user's machine."""
    clips = _clips(tmp_path / "audio")
    rows = ["path,mos,system"] + [f"{p},{3 + (i % 3) * 0.5},s{i % 2}" for i, p in enumerate(clips.values())]
    (tmp_path / "set.csv").write_text("\n".join(rows) + "\n")
    args = ["evaluate", str(DEFAULT_MODEL), "--control", "acoustic", "--dataset", f"csv:{tmp_path / 'set.csv'}", "--skip-bad",
            "--bootstrap", "50", "--no-plots", "--no-progress", "--wandb-mode", "disabled", "--batch-seconds", "2"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(args + ["--jobs", "1", "--output", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert main(args + ["--jobs", "2", "--output", str(tmp_path / "two")]) == 0
    capsys.readouterr()
    one, two = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert "skipped.csv" in one and "scores/model/set.csv" in one and "answers/acoustic/set/rms_db.txt" in one
    assert two == one
    assert main(args + ["--jobs", "0", "--output", str(tmp_path / "zero")]) == 2
    assert "--jobs: must be at least 1, got 0" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(c) for c in text.split()]


def _gone(pids: list[int], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]]
        if not alive:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc (Linux)")
def test_workers_end_with_ctrl_c_and_with_a_killed_parent(tmp_path):
    # Enough work (a small model, 600 clips) that the run is still going when the signal arrives.
    dataset = make_clips(tmp_path / "clips", 600, seconds=(0.3, 0.6))
    for how in ("ctrl-c", "sigkill"):
        out = tmp_path / how
        proc = subprocess.Popen(
            cli_command("evaluate", "random:small", "--dataset", f"csv:{dataset}", "--output", out, "--jobs", "2",
                        "--measures", "entropy.mean", "--draws", "1", "--no-plots", "--no-progress",
                        "--wandb-mode", "disabled", "--batch-seconds", "0.7"),
            cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
            # A shell without job control starts background commands with SIGINT ignored, and Python then
            # never raises KeyboardInterrupt: give the evaluation a terminal's default disposition.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 240
        while len(list(out.glob("cache/*/shard-*.json"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"finished before it could be stopped; use more clips\n{proc.stderr.read()[-2000:]}"
        children = _children(proc.pid)
        assert len(children) >= 2  # the two workers (and multiprocessing's resource tracker)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends the whole foreground group
            assert proc.wait(timeout=60) == 130
            stderr = proc.stderr.read()
            assert stderr.strip().splitlines()[-1] == "interrupted", stderr[-2000:]
            assert "Traceback" not in stderr, stderr[-2000:]
        else:
            proc.send_signal(signal.SIGKILL)  # no chance to stop the workers: they notice and exit
            proc.wait(timeout=60)
        proc.stderr.close()
        assert _gone(children), f"{how}: worker processes outlived the evaluation"


def _scaled(state: float, task: int) -> tuple[int, float, int]:
    if task < 0:
        raise ValueError(f"task {task} is negative")
    if task == 999:
        os._exit(3)  # a worker that dies without answering
    return task, state * task, os.getpid()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_pool_is_reused_keeps_order_and_reports_failures(method, monkeypatch):
    from toolkit.scoring import workers

    monkeypatch.setattr(workers, "start_method", lambda: method)
    with workers.WorkerPool(2) as pool:
        first = list(pool.map(_scaled, 2.0, range(20)))
        second = list(pool.map(_scaled, 0.5, range(7)))  # a new state, the same processes
        assert [r[:2] for r in first] == [(t, 2.0 * t) for t in range(20)]
        assert [r[:2] for r in second] == [(t, 0.5 * t) for t in range(7)]
        assert len({r[2] for r in first + second}) == 2 and os.getpid() not in {r[2] for r in first}
        done = []
        with pytest.raises(ValueError, match="task -1 is negative"):
            for r in pool.map(_scaled, 1.0, [0, 1, 2, -1, 4, 5]):
                done.append(r[0])
        assert done == [0, 1, 2]  # the results before the failed task, in order
        assert pool.closed  # a failure stops the workers
    with workers.WorkerPool(2) as pool, pytest.raises(RuntimeError, match="exit code 3"):
        list(pool.map(_scaled, 1.0, [1, 999, 2, 3]))
    assert list(workers.ordered_map(_scaled, 3.0, [1, 2, 3], jobs=2))[2][:2] == (3, 9.0)


def test_evaluate_starts_one_pool_for_all_its_scorers(tmp_path, monkeypatch):
    """Two checkpoints and two controls on two datasets: one set of workers, started once."""
    import importlib

    from toolkit.scoring import workers

    evaluate_module = importlib.import_module("toolkit.scoring.evaluate")  # the package exports the function
    started = []

    class CountedPool(workers.WorkerPool):
        def __init__(self, jobs):
            started.append(jobs)
            super().__init__(jobs)

    monkeypatch.setattr(evaluate_module, "WorkerPool", CountedPool)
    dataset = make_clips(tmp_path / "clips", 12, seconds=(0.3, 0.6))
    common = dict(measures=["entropy.mean"], draws=1, controls=["random-init", "acoustic"], n_boot=20,
                  wandb_mode="disabled", plots=False, progress=False, echo=None, max_batch_seconds=1.0, use_cache=False)
    sets = [f"a=csv:{dataset}", f"b=csv:{dataset}"]
    two = evaluate_module.evaluate(["random:small", str(DEFAULT_MODEL)], sets, jobs=2, **common)
    one = evaluate_module.evaluate(["random:small", str(DEFAULT_MODEL)], sets, jobs=1, **common)
    assert started == [2]
    assert len(two.scores) == 8 and two.scores == one.scores
