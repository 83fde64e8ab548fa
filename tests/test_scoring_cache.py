import pytest
import torch

from toolkit.audio import save_audio
from toolkit.models.wav2vec import wav2vec_tiny
from toolkit.scoring.cache import ScoreCache
from toolkit.scoring.scorer import Wav2VecScorer, score_files


@pytest.fixture()
def clips(tmp_path):
    g = torch.Generator().manual_seed(0)
    out = []
    for i, n in enumerate([9000, 16000, 12000, 20000]):
        p = tmp_path / "audio" / f"c{i}.wav"
        p.parent.mkdir(exist_ok=True)
        save_audio(p, 0.1 * torch.randn(n, generator=g), 16000)
        out.append((f"c{i}", p))
    return out


def _run(model, clips, cache_root, **kw):
    scorer = Wav2VecScorer(model, measures=["entropy.mean", "p_pos.mean"], **kw)
    cache = ScoreCache(cache_root, scorer.fingerprint())
    return score_files(scorer, clips, cache=cache, progress=False, max_batch_seconds=1.5), cache


def test_rerun_recomputes_nothing_and_gives_identical_scores(tmp_path, clips):
    torch.manual_seed(0)
    model = wav2vec_tiny()
    first, _ = _run(model, clips, tmp_path / "cache", draws=2)
    assert first.computed == 4 and first.cached == 0
    second, cache = _run(model, clips, tmp_path / "cache", draws=2)
    assert second.computed == 0 and second.cached == 4
    assert second.scores == first.scores
    assert (cache.dir / "meta.json").is_file()


def test_cache_invalidated_by_checkpoint_settings_and_file_changes(tmp_path, clips):
    torch.manual_seed(0)
    model = wav2vec_tiny()
    _run(model, clips, tmp_path / "cache", draws=2)
    # settings: draws, seed, dtype
    assert _run(model, clips, tmp_path / "cache", draws=3)[0].computed == 4
    assert _run(model, clips, tmp_path / "cache", draws=2, seed=5)[0].computed == 4
    assert _run(model, clips, tmp_path / "cache", draws=2, dtype="bf16")[0].computed == 4
    # checkpoint: one changed weight
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    changed, _ = _run(model, clips, tmp_path / "cache", draws=2)
    assert changed.computed == 4
    # same weights in a fresh object (e.g. the checkpoint loaded again) hit the cache
    clone = wav2vec_tiny()
    clone.load_state_dict(model.state_dict())
    assert _run(clone, clips, tmp_path / "cache", draws=2)[0].computed == 0
    # an edited audio file misses; the others hit
    key, path = clips[1]
    save_audio(path, torch.zeros(15000) + 0.01, 16000)
    again, _ = _run(clone, clips, tmp_path / "cache", draws=2)
    assert again.computed == 1 and again.cached == 3


class _Interrupted(Exception):
    pass


def test_killed_run_resumes_from_cache(tmp_path, clips):
    torch.manual_seed(0)
    model = wav2vec_tiny()
    scorer = Wav2VecScorer(model, measures=["entropy.mean"], draws=1)
    cache = ScoreCache(tmp_path / "cache", scorer.fingerprint())
    batches = []

    def kill_after_first(n):
        batches.append(n)
        raise _Interrupted

    with pytest.raises(_Interrupted):
        score_files(scorer, clips, cache=cache, progress=False, max_batch_seconds=1.3, on_batch=kill_after_first)
    done = batches[0]
    assert 0 < done < 4
    fresh = ScoreCache(tmp_path / "cache", scorer.fingerprint())
    assert len(fresh) == done
    resumed = score_files(scorer, clips, cache=fresh, progress=False, max_batch_seconds=1.3)
    assert resumed.cached == done and resumed.computed == 4 - done
    # a corrupt shard (e.g. from a full disk outside atomic_write) is ignored, not fatal
    (fresh.dir / "shard-broken.json").write_text("{not json")
    fresh.compact()
    assert len(ScoreCache(tmp_path / "cache", scorer.fingerprint())) == 4
    assert len(list(fresh.dir.glob("shard-*.json"))) == 1


def test_compact_keeps_the_entries_another_process_wrote(tmp_path):
    """Two evaluations sharing a cache folder: compacting one must not delete the other's scores."""
    fingerprint = {"scorer": "test"}
    first, second = ScoreCache(tmp_path, fingerprint), ScoreCache(tmp_path, fingerprint)
    first.put_many({"a": {"m": 1.0}})
    second.put_many({"b": {"m": 2.0}})  # written after `first` was loaded
    first.put_many({"c": {"m": 3.0}})
    first.compact()
    assert len(list(first.dir.glob("shard-*.json"))) == 1
    assert ScoreCache(tmp_path, fingerprint)._entries == {"a": {"m": 1.0}, "b": {"m": 2.0}, "c": {"m": 3.0}}
