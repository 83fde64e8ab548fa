"""Behaviour of the wav2vec (v1) model: shapes, batching invariance, short inputs, determinism."""

from __future__ import annotations

import pytest
import torch

from toolkit.models.negatives import sample_fairseq, sample_uniform
from toolkit.models.wav2vec import build_preset, wav2vec_large, wav2vec_tiny


def generators(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_large_preset_is_fairseq_released_architecture():
    model = wav2vec_large()
    assert sum(p.numel() for p in model.parameters()) == 32_537_088
    assert model.offset == 3
    assert model.encoder.receptive_field == 465 and model.encoder.stride == 160
    assert [layer.pad for layer in model.context.layers] == list(range(1, 13))


def test_output_shapes():
    model = wav2vec_tiny().eval()
    out = model(torch.randn(2, 16000))
    frames = out.z.shape[-1]
    assert out.z.shape == (2, 32, frames) and frames == 98
    assert out.predictions.shape == (2, 32, frames, 12)
    assert out.logits.shape == (2, 12, frames - 3, 11)
    assert out.mask.shape == (2, 12, frames - 3)
    # step k (0-based) predicts frame t + 3 + k: the last k context frames have no target
    assert out.mask[0, 0].all() and out.mask[0, 11, : frames - 3 - 11].all() and not out.mask[0, 11, -11:].any()
    assert out.negative_indices.shape == (2, frames, 10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_padded_batch_equals_one_at_a_time(dtype):
    torch.manual_seed(0)
    model = wav2vec_tiny().to(dtype).eval()
    lengths = torch.tensor([16000, 7321, 2400, 11111])
    wavs = torch.randn(4, 16000, dtype=dtype)
    with torch.no_grad():
        batched = model(wavs, lengths, generator=generators(range(4)))
        for b, n in enumerate(lengths.tolist()):
            single = model(wavs[b : b + 1, :n], generator=generators([b]))
            frames = single.z.shape[-1]
            assert int(batched.frame_lengths[b]) == frames
            torch.testing.assert_close(batched.z[b, :, :frames], single.z[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batched.c[b, :, :frames], single.c[0], atol=1e-5, rtol=1e-5)
            width = single.logits.shape[2]
            mask = single.mask[0]
            assert torch.equal(batched.mask[b, :, :width], mask)
            assert not batched.mask[b, :, width:].any()
            torch.testing.assert_close(batched.logits[b, :, :width][mask], single.logits[0][mask], atol=1e-4, rtol=1e-5)
    assert batched.logits.dtype == dtype


def test_uniform_negatives_exclude_anchor_and_padding():
    lengths = torch.tensor([50, 7, 2])
    idx = sample_uniform(lengths, 50, 10, torch.Generator().manual_seed(0))
    for b, n in enumerate(lengths.tolist()):
        valid = idx[b, :n]
        assert (valid >= 0).all() and (valid < n).all()
        anchors = torch.arange(n)[:, None]
        assert not (valid == anchors).any() or n == 1
    # per-utterance generators: the draw does not depend on the batch it is in
    a = sample_uniform(lengths, 50, 10, generators([1, 2, 3]))
    b = sample_uniform(lengths[1:2], 7, 10, generators([2]))
    assert torch.equal(a[1, :7], b[0])


def test_fairseq_negatives_do_not_exclude_the_anchor():
    # Documented quirk: fairseq excludes the anchor in a t-major layout but reads n-major.
    torch.manual_seed(0)
    idx = sample_fairseq(1, 20, 10)
    hits = (idx[0] == torch.arange(20)[:, None]).sum()
    assert hits > 0


def test_same_generator_gives_identical_logits():
    model = wav2vec_tiny().eval()
    wav = torch.randn(2, 12000)
    with torch.no_grad():
        a = model(wav, generator=torch.Generator().manual_seed(7)).logits
        b = model(wav, generator=torch.Generator().manual_seed(7)).logits
        c = model(wav, generator=torch.Generator().manual_seed(8)).logits
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_short_inputs_fail_clearly_or_mask_out():
    model = wav2vec_tiny().eval()
    with pytest.raises(ValueError, match="receptive field"):
        model(torch.randn(1, 300))
    # Long enough for the encoder but not for one prediction: a clear error, no NaN.
    with pytest.raises(ValueError, match=f"at least {model.min_samples} samples"):
        model(torch.randn(1, 500))
    out = model(torch.randn(1, model.min_samples))
    assert out.mask.sum() == 1 and torch.isfinite(out.logits).all()
    # In a batch, a too-short utterance has no valid prediction, and nothing is NaN.
    with torch.no_grad():
        out = model(torch.randn(2, 8000), torch.tensor([8000, 500]), generator=generators([0, 1]))
    assert out.mask[1].sum() == 0 and out.mask[0].sum() > 0
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.z).all()


def test_zero_length_in_batch_is_finite():
    model = wav2vec_tiny().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 4000), torch.tensor([4000, 0]), generator=generators([0, 1]))
    assert out.frame_lengths.tolist()[1] == 0
    assert torch.isfinite(out.logits).all()


def test_bad_shapes_raise_value_error():
    model = wav2vec_tiny()
    with pytest.raises(ValueError, match=r"\[batch, time\]"):
        model(torch.randn(4000))
    with pytest.raises(ValueError, match="lengths"):
        model(torch.randn(2, 4000), torch.tensor([4000]))
    with pytest.raises(ValueError, match="exceeds"):
        model(torch.randn(2, 4000), torch.tensor([4000, 5000]))


def test_presets():
    counts = {name: sum(p.numel() for p in build_preset(name).parameters()) for name in ("medium", "small", "tiny")}
    assert counts == {"medium": 8_142_080, "small": 1_284_224, "tiny": 50_336}
    with pytest.raises(ValueError, match="unknown preset"):
        build_preset("huge")


def test_gradients_flow_and_bf16_autocast_is_finite():
    from toolkit.models.loss import contrastive_loss

    torch.manual_seed(0)  # the weights; the input and the negatives have their own generators
    model = wav2vec_tiny()
    wav = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(wav, torch.tensor([8000, 6000]), generator=generators([2, 3]))
    loss, n = contrastive_loss(out.logits, out.mask)
    (loss / n).backward()
    assert torch.isfinite(loss)
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    nonfinite = [name for name, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert missing == [] and nonfinite == []


def test_logits_implementations_agree():
    model = wav2vec_tiny().eval()
    wav = torch.randn(3, 9000)
    lengths = torch.tensor([9000, 5000, 3000])
    with torch.no_grad():
        fast = model(wav, lengths, generator=generators([0, 1, 2]))
        for impl in ("gather", "targets"):
            model.logits_impl = impl
            other = model(wav, lengths, generator=generators([0, 1, 2]))
            assert other.logits.shape == fast.logits.shape and torch.equal(fast.mask, other.mask)
            torch.testing.assert_close(fast.logits[fast.mask], other.logits[other.mask], atol=1e-5, rtol=1e-5)
    # the per-call choice, with a real preset (12 steps), on a padded batch
    model = build_preset("small").eval()
    wav, lengths = torch.randn(2, 24000), torch.tensor([24000, 13000])
    with torch.no_grad():
        z, _, predictions, frames = model.encode(wav, lengths)
        negatives = model.sample_negatives(frames, z.shape[-1], generators([5, 6]))
        by_step = model.contrastive_logits(z, predictions, frames, negatives, impl="matmul")
        by_target = model.contrastive_logits(z, predictions, frames, negatives, impl="targets")
    assert torch.equal(by_step[1], by_target[1]) and by_step[1].any() and not by_step[1].all()
    torch.testing.assert_close(by_step[0][by_step[1]], by_target[0][by_target[1]], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="logits impl"):
        model.contrastive_logits(z, predictions, frames, negatives, impl="nope")


def test_fp16_autocast_keeps_logits_in_float32():
    model = wav2vec_tiny()
    wav = torch.randn(2, 8000)
    with torch.autocast("cpu", dtype=torch.float16):
        out = model(wav)
    assert out.logits.dtype == torch.float32
    assert torch.isfinite(out.logits).all()
