import pytest
import torch
from torchaudio.models import wav2vec2_model

from toolkit.batching import pad_right
from toolkit.scoring.wav2vec2 import MEASURES, Wav2Vec2CTCScorer, load_wav2vec2, save_wav2vec2, set_handicap

TINY = dict(
    extractor_mode="layer_norm",
    extractor_conv_layer_config=[(16, 10, 5), (16, 3, 2), (16, 2, 2)],
    extractor_conv_bias=True,
    encoder_embed_dim=32,
    encoder_projection_dropout=0.1,
    encoder_pos_conv_kernel=8,
    encoder_pos_conv_groups=4,
    encoder_num_layers=2,
    encoder_num_heads=2,
    encoder_attention_dropout=0.1,
    encoder_ff_interm_features=64,
    encoder_ff_interm_dropout=0.1,
    encoder_dropout=0.1,
    encoder_layer_norm_first=True,
    encoder_layer_drop=0.0,
    aux_num_out=12,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return wav2vec2_model(**TINY)


def _waves():
    g = torch.Generator().manual_seed(1)
    return [0.1 * torch.randn(n, generator=g) for n in (8000, 5000)]


def test_deterministic_without_dropout_and_masks_padding(model):
    scorer = Wav2Vec2CTCScorer(model, dropout=0.0, passes=1)
    waves = _waves()
    wavs, lengths = pad_right(waves)
    a = scorer.score(wavs, lengths)
    assert set(a) == set(MEASURES) and a["ctc_entropy.mean"].shape == (2,)
    assert torch.equal(a["ctc_entropy.mean"], scorer.score(wavs, lengths)["ctc_entropy.mean"])
    assert torch.allclose(a["ctc_mutual_info.mean"], torch.zeros(2), atol=1e-5)  # one pass: no disagreement
    alone = scorer.score(waves[1][None])
    assert a["ctc_entropy.mean"][1].item() == pytest.approx(alone["ctc_entropy.mean"][0].item(), abs=1e-4)
    assert (a["ctc_entropy.mean"] < 0).all()  # reported as minus the entropy


def test_handicap_dropout_passes_are_seeded_and_disagree(model):
    wavs, lengths = pad_right(_waves())
    h = Wav2Vec2CTCScorer(model, dropout=0.3, passes=4, seed=3)
    assert h.sites > 0
    a, b = h.score(wavs, lengths), h.score(wavs, lengths)
    assert torch.equal(a["ctc_entropy.mean"], b["ctc_entropy.mean"])  # same seed, same passes
    assert (a["ctc_mutual_info.mean"] < -1e-6).all()  # passes disagree (score = minus the MI)
    c = Wav2Vec2CTCScorer(model, dropout=0.3, passes=4, seed=4).score(wavs, lengths)
    assert not torch.equal(a["ctc_entropy.mean"], c["ctc_entropy.mean"])
    set_handicap(model, 0.0)
    assert not any(m.training for m in model.modules())


def test_save_load_roundtrip_and_bad_input(model, tmp_path):
    path = tmp_path / "asr.pt"
    save_wav2vec2(path, model, TINY)
    loaded = load_wav2vec2(path)
    w = _waves()[0][None]
    s1 = Wav2Vec2CTCScorer(model).score(w)["ctc_entropy.mean"]
    s2 = Wav2Vec2CTCScorer(loaded).score(w)["ctc_entropy.mean"]
    assert torch.allclose(s1, s2)
    with pytest.raises(ValueError, match="no CTC head"):
        Wav2Vec2CTCScorer(wav2vec2_model(**{**TINY, "aux_num_out": None}))
    with pytest.raises(ValueError, match="dropout probability"):
        Wav2Vec2CTCScorer(model, dropout=1.5)


def test_unreadable_wav2vec2_files_are_named_errors_not_swallowed(model, tmp_path):
    from toolkit.errors import CheckpointError

    truncated = tmp_path / "cut.pt"
    save_wav2vec2(truncated, model, TINY)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"cut\.pt.*truncated or corrupt"):
        load_wav2vec2(truncated)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match=r"other\.pt.*not a wav2vec 2.0 checkpoint \(top-level keys: weights\)"):
        load_wav2vec2(other)
    damaged = tmp_path / "damaged.pt"
    torch.save({"format": "toolkit-wav2vec2", "config": {**TINY, "bogus": 1}, "state_dict": {}}, damaged)
    with pytest.raises(CheckpointError, match=r"damaged\.pt.*damaged toolkit wav2vec2 checkpoint"):
        load_wav2vec2(damaged)


def test_cli_scores_a_local_wav2vec2_model(model, tmp_path, capsys):
    from toolkit.audio import save_audio
    from toolkit.cli import main

    save_wav2vec2(tmp_path / "asr.pt", model, TINY)
    rows = ["path,mos,system"]
    for i in range(6):
        save_audio(tmp_path / f"c{i}.wav", (0.05 + 0.05 * i) * torch.randn(6000 + 500 * i), 16000)
        rows.append(f"c{i}.wav,{1 + i * 0.5},s{i % 2}")
    (tmp_path / "set.csv").write_text("\n".join(rows) + "\n")
    code = main(["evaluate", "--wav2vec2", str(tmp_path / "asr.pt"), "--handicap", "0.2", "--passes", "3",
                 "--dataset", f"csv:{tmp_path / 'set.csv'}", "--output", str(tmp_path / "out"), "--bootstrap", "20",
                 "--wandb-mode", "disabled", "--no-progress", "--no-plots", "--device", "cpu"])
    assert code == 0
    text = (tmp_path / "out" / "results.csv").read_text()
    assert "asr-ctc-p0.2x3,checkpoint,,set,ctc_mutual_info.mean,-1,utterance,6," in text
    assert "ctc_entropy.mean" in capsys.readouterr().out
