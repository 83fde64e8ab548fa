import math

import numpy as np
import pytest
import soundfile as sf
import torch

from toolkit.audio import save_audio
from toolkit.batching import pad_right
from toolkit.errors import AudioError
from toolkit.models.wav2vec import wav2vec_tiny
from toolkit.scoring.scorer import Wav2VecScorer, key_seed, plan_batches, score_files


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return wav2vec_tiny()


def _waves(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=g) for n in lengths]


def test_batched_equals_unbatched(model):
    scorer = Wav2VecScorer(model, draws=3, seed=7)
    waves = _waves([3000, 12000, 7001, 20000])
    keys = ["a", "b", "c", "d"]
    wavs, lengths = pad_right(waves)
    batched = scorer.score(wavs, lengths, keys)
    assert set(batched) == set(scorer.measures)
    for i, (w, k) in enumerate(zip(waves, keys)):
        alone = scorer.score(w[None], None, [k])
        for name in scorer.measures:
            assert abs(batched[name][i].item() - alone[name][0].item()) <= 1e-4, (name, k)
    # a different batch composition and order gives the same scores too
    wavs2, lengths2 = pad_right([waves[3], waves[1]])
    again = scorer.score(wavs2, lengths2, ["d", "b"])
    assert torch.allclose(again["entropy.mean"], torch.stack([batched["entropy.mean"][3], batched["entropy.mean"][1]]), atol=1e-4)


# Padding tolerance: a padded batch sums in a different order than one clip alone (float32), so
# scores agree to rounding, not bit for bit. Padding that leaked into the frames would move them by
# orders of magnitude more.
PADDED_RTOL = 1e-5
PADDED_ATOL = 1e-5


def _padded_vs_per_clip(model, device):
    waves = _waves([3000, 12000, 7001, 20000])  # 3000 samples padded to 20000: mostly padding
    keys = ["a", "b", "c", "d"]
    wavs, lengths = pad_right(waves)
    padded = Wav2VecScorer(model, draws=3, seed=7, device=device, padded=True)
    per_clip = Wav2VecScorer(model, draws=3, seed=7, device=device, padded=False)
    assert padded.padded and not per_clip.padded
    batched = padded.score(wavs, lengths, keys)
    alone = per_clip.score(wavs, lengths, keys)
    assert set(batched) == set(padded.measures)
    for name in padded.measures:
        torch.testing.assert_close(batched[name], alone[name], rtol=PADDED_RTOL, atol=PADDED_ATOL, msg=name)


def test_padded_batch_equals_per_clip_on_cpu(model):
    _padded_vs_per_clip(model, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_padded_batch_equals_per_clip_on_cuda(model):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        _padded_vs_per_clip(model, "cuda")
        # and CUDA agrees with the CPU to float rounding (looser: different kernels)
        wavs, lengths = pad_right(_waves([12000, 7001]))
        cpu = Wav2VecScorer(model, draws=2, seed=7, device="cpu").score(wavs, lengths, ["b", "c"])
        gpu = Wav2VecScorer(model, draws=2, seed=7, device="cuda").score(wavs, lengths, ["b", "c"])
        for name in cpu:
            torch.testing.assert_close(gpu[name], cpu[name], rtol=1e-3, atol=1e-3, msg=name)
    finally:
        model.cpu()  # the fixture is shared with the CPU tests


def test_all_draws_in_one_pass_give_the_per_draw_scores_bit_for_bit(model):
    """The scorer computes every draw's logits in one pass; the reference here is one contrastive pass
    per draw with the same per-key generators (how scores were computed before)."""
    from toolkit.scoring.measures import compute_measures, oriented

    waves = _waves([12000, 7001])
    keys = ["b", "c"]
    scorer = Wav2VecScorer(model, draws=3, seed=7)
    for wave, key in zip(waves, keys):
        got = scorer.score(wave[None], None, [key])
        with torch.inference_mode():
            z, _, predictions, frame_lengths = model.encode(wave[None], torch.tensor([wave.numel()]))
            generators = [torch.Generator().manual_seed(key_seed(7, key))]
            total = {}
            for _ in range(3):
                negatives = model.sample_negatives(frame_lengths, z.shape[-1], generators, "uniform")
                logits, mask = model.contrastive_logits(z, predictions, frame_lengths, negatives)
                for name, value in compute_measures(logits, mask, scorer.measures).items():
                    total[name] = total[name] + value if name in total else value
            expected = {n: v / 3 for n, v in oriented(total).items()}
        for name in scorer.measures:
            assert torch.equal(got[name], expected[name]), (name, key)


def test_draws_and_seed_change_scores_deterministically(model):
    w = _waves([16000])[0][None]
    a = Wav2VecScorer(model, draws=2, seed=0).score(w, None, ["x"])["p_pos.mean"]
    b = Wav2VecScorer(model, draws=2, seed=0).score(w, None, ["x"])["p_pos.mean"]
    c = Wav2VecScorer(model, draws=2, seed=1).score(w, None, ["x"])["p_pos.mean"]
    d = Wav2VecScorer(model, draws=2, seed=0).score(w, None, ["y"])["p_pos.mean"]
    assert a.item() == b.item()
    assert a.item() != c.item() and a.item() != d.item()
    assert key_seed(0, "x") != key_seed(1, "x")


def test_short_input_raises_naming_the_key(model):
    scorer = Wav2VecScorer(model)
    with pytest.raises(ValueError, match=r"tiny-clip \(100\)"):
        scorer.score(torch.zeros(1, 100), None, ["tiny-clip"])


def test_bf16_autocast_runs_and_stays_close(model):
    w, lengths = pad_right(_waves([16000, 9000]))
    fp32 = Wav2VecScorer(model, draws=1).score(w, lengths, ["a", "b"])
    bf16 = Wav2VecScorer(model, draws=1, dtype="bf16").score(w, lengths, ["a", "b"])
    assert bf16["entropy.mean"].dtype == torch.float32
    assert torch.allclose(fp32["entropy.mean"], bf16["entropy.mean"], atol=0.05)
    with pytest.raises(ValueError, match="dtype"):
        Wav2VecScorer(model, dtype="fp8")


def test_plan_batches_respects_the_budget():
    lengths = [100, 5000, 300, 4000, 200, 4500]
    batches = plan_batches(lengths, 9000)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 9000
    assert plan_batches([20000], 100) == [[0]]  # a long clip still gets a batch of its own


def _write_files(tmp_path):
    rate = 16000
    files = {}
    for i, n in enumerate([16000, 24000, 8000]):
        p = tmp_path / f"ok{i}.wav"
        save_audio(p, _waves([n], seed=i)[0], rate)
        files[f"ok{i}"] = p
    p = tmp_path / "stereo_22k.wav"
    sf.write(p, 0.1 * np.random.default_rng(0).standard_normal((22050, 2)).astype("float32"), 22050)
    files["stereo"] = p
    return files


def test_score_files_counts_notes_and_skips(model, tmp_path):
    files = _write_files(tmp_path)
    (tmp_path / "empty.wav").write_bytes(b"")
    nan = np.zeros(16000, dtype="float32")
    nan[5] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    save_audio(tmp_path / "short.wav", torch.zeros(200), 16000)
    (tmp_path / "garbage.wav").write_bytes(b"not audio at all" * 10)
    bad = {"empty": "empty.wav", "nan": "nan.wav", "short": "short.wav", "garbage": "garbage.wav", "missing": "nope.wav"}
    pairs = list(files.items()) + [(k, tmp_path / v) for k, v in bad.items()]
    scorer = Wav2VecScorer(model, measures=["entropy.mean"], draws=1)
    run = score_files(scorer, pairs, skip_bad=True, progress=False, max_batch_seconds=2)
    assert set(run.scores) == set(files)
    reasons = {s.key: s.reason for s in run.skipped}
    assert set(reasons) == set(bad)
    assert "zero-length" in reasons["empty"] and "NaN" in reasons["nan"]
    assert "too short" in reasons["short"] and "not found" in reasons["missing"]
    assert run.notes["downmixed 2 channels to mono"] == 1
    assert run.notes["resampled 22050 Hz to 16000 Hz"] == 1
    assert all(math.isfinite(v["entropy.mean"]) for v in run.scores.values())
    # without skip_bad the first bad file stops the run, naming it
    with pytest.raises(AudioError, match="nope.wav: file not found"):
        score_files(scorer, [("missing", tmp_path / "nope.wav")], progress=False)


def test_score_files_matches_direct_scoring(model, tmp_path):
    files = _write_files(tmp_path)
    scorer = Wav2VecScorer(model, measures=["entropy.mean", "loss_bce"], draws=2)
    run = score_files(scorer, list(files.items()), progress=False, max_batch_seconds=1.2)
    from toolkit.audio import load_audio

    w = load_audio(files["ok1"]).samples
    direct = scorer.score(w[None], None, ["ok1.wav"])  # the file name seeds the negatives
    assert run.scores["ok1"]["loss_bce"] == pytest.approx(direct["loss_bce"].item(), abs=1e-4)
