"""wav2vec (v1): the model, its structured output, a flat factory and named presets.

Schneider et al. 2019, as implemented by fairseq's ``Wav2VecModel``. A causal context network
predicts the latent frame ``k + offset`` frames ahead; the contrastive logits score each prediction
against the true latent (index 0) and ``num_negatives`` distractors.

    >>> model = wav2vec_large()            # fairseq's released wav2vec_large.pt architecture
    >>> out = model(waveforms, lengths)    # waveforms [batch, time] at 16 kHz
    >>> out.logits.shape                   # [batch, steps, frames, 1 + negatives]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from toolkit.models.components import (
    ContextLayer,
    ContextNetwork,
    ConvSpec,
    EncoderLayer,
    FeatureEncoder,
    StepPredictor,
    receptive_field,
)
from toolkit.models.negatives import GeneratorArg, sample_fairseq, sample_uniform

NegativeMode = Literal["uniform", "fairseq"]


def prediction_mask(frames: int, steps: int, offset: int, frame_lengths: Tensor) -> Tensor:
    """``[B, K, T]`` (``T = frames - offset``): True where step ``k`` from context frame ``t`` predicts
    a frame ``t + offset + k`` inside the input (the mask of :meth:`Wav2VecModel.contrastive_logits`)."""
    context = frames - offset
    if context <= 0:
        raise ValueError(f"{frames} latent frames leave no prediction at offset {offset}")
    t = torch.arange(context, device=frame_lengths.device)
    target = t[None, :] + offset + torch.arange(steps, device=frame_lengths.device)[:, None]  # [K, T]
    return target[None] < frame_lengths[:, None, None]

LARGE_ENCODER: tuple[ConvSpec, ...] = ((512, 10, 5), (512, 8, 4)) + ((512, 4, 2),) * 3 + ((512, 1, 1),) * 2
LARGE_CONTEXT: tuple[ConvSpec, ...] = tuple((512, k, 1) for k in range(2, 14))


@dataclass(frozen=True)
class Wav2VecConfig:
    """Architecture. Field names follow fairseq's ``Wav2VecConfig`` where one exists."""

    conv_feature_layers: tuple[ConvSpec, ...] = LARGE_ENCODER
    conv_aggregator_layers: tuple[ConvSpec, ...] = LARGE_CONTEXT
    prediction_steps: int = 12
    num_negatives: int = 10
    offset: int | None = None  # None = fairseq's "auto": ceil(receptive field / stride)
    log_compression: bool = True
    skip_connections_feat: bool = False
    skip_connections_agg: bool = True
    residual_scale: float = 0.5
    non_affine_group_norm: bool = False
    agg_zero_pad: bool = False
    conv_bias: bool = True  # fairseq: not no_conv_bias (context network only)
    activation: str = "relu"
    project_features: Literal["none", "same", "new"] = "none"
    dropout: float = 0.0
    dropout_features: float = 0.0
    dropout_agg: float = 0.0

    def __post_init__(self) -> None:
        # Accept lists (from YAML/JSON) but store hashable tuples.
        object.__setattr__(self, "conv_feature_layers", tuple(tuple(x) for x in self.conv_feature_layers))
        object.__setattr__(
            self, "conv_aggregator_layers", tuple(tuple(x) for x in self.conv_aggregator_layers)
        )
        if self.project_features not in ("none", "same", "new"):
            raise ValueError(f"project_features must be none, same or new, got {self.project_features!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["conv_feature_layers"] = [list(x) for x in self.conv_feature_layers]
        d["conv_aggregator_layers"] = [list(x) for x in self.conv_aggregator_layers]
        return d


@dataclass
class Wav2VecOutput:
    """What one forward pass gives.

    Shapes: ``B`` batch, ``C`` channels, ``F`` latent frames (100 per second for the large encoder),
    ``K`` prediction steps, ``T = F - offset`` context frames that predict at least one step,
    ``N`` negatives.
    """

    z: Tensor  # [B, C, F] latent features
    c: Tensor  # [B, C_ctx, F] causal context
    predictions: Tensor  # [B, C, F, K] step projections of c
    frame_lengths: Tensor  # [B] valid latent frames per utterance
    logits: Tensor | None = None  # [B, K, T, 1 + N]; index 0 is the true future frame
    mask: Tensor | None = None  # [B, K, T] bool: prediction (k, t) targets a valid frame
    negative_indices: Tensor | None = None  # [B, F, N] distractor frame per target frame
    offset: int = 0
    extras: dict = field(default_factory=dict)


class Wav2VecModel(nn.Module):
    """The whole model. Build it with :func:`wav2vec_model` or a preset."""

    def __init__(
        self,
        config: Wav2VecConfig,
        encoder: FeatureEncoder,
        context: ContextNetwork,
        prediction: StepPredictor,
        target_projection: ContextNetwork | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.context = context
        self.prediction = prediction
        self.target_projection = target_projection
        self.dropout_features = nn.Dropout(config.dropout_features)
        self.dropout_agg = nn.Dropout(config.dropout_agg)
        self.offset = config.offset if config.offset is not None else auto_offset(config.conv_feature_layers)
        self.num_negatives = config.num_negatives
        # How logits are computed (same numbers, within float rounding): "matmul" scores all frame
        # pairs with one matmul per step and picks the candidates (training's default); "gather"
        # gathers the candidate latents per step first (less memory for very long inputs);
        # "targets" gathers each target frame's candidates once for all steps (a target keeps its
        # distractors at every step): a tenth of matmul's work, the scorer's choice on CPU.
        self.logits_impl: Literal["matmul", "gather", "targets"] = "matmul"

    @property
    def min_samples(self) -> int:
        """Shortest input (samples) that yields at least one prediction (step 1)."""
        frames_needed = self.offset + 1
        return self.encoder.receptive_field + (frames_needed - 1) * self.encoder.stride

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        return self.encoder.output_lengths(lengths)

    def encode(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(z, c, predictions, frame_lengths)`` without negatives or logits."""
        if lengths is not None:
            lengths = lengths.to(waveforms.device)
            if lengths.ndim != 1 or lengths.shape[0] != waveforms.shape[0]:
                raise ValueError(f"lengths must be [batch]={waveforms.shape[0]}, got {tuple(lengths.shape)}")
            if int(lengths.max()) > waveforms.shape[1]:
                raise ValueError(f"a length ({int(lengths.max())}) exceeds the padded size {waveforms.shape[1]}")
        features, frame_lengths = self.encoder(waveforms, lengths)
        if frame_lengths is None:
            frame_lengths = torch.full(
                (waveforms.shape[0],), features.shape[-1], dtype=torch.long, device=waveforms.device
            )
            norm_lengths = None
        else:
            norm_lengths = frame_lengths
        c = self.dropout_agg(self.context(self.dropout_features(features), norm_lengths))
        if self.config.project_features == "same":
            z = self.context(features, norm_lengths)
        elif self.target_projection is not None:
            z = self.target_projection(features, norm_lengths)
        else:
            z = features
        return z, c, self.prediction(c), frame_lengths

    def sample_negatives(
        self, frame_lengths: Tensor, max_frames: int, generator: GeneratorArg = None, mode: NegativeMode = "uniform"
    ) -> Tensor:
        """``[B, F, N]`` distractor indices (see :mod:`toolkit.models.negatives`)."""
        if mode == "fairseq":
            if generator is not None and not isinstance(generator, torch.Generator):
                raise ValueError("fairseq negative mode takes one generator for the batch")
            idx = sample_fairseq(frame_lengths.shape[0], max_frames, self.num_negatives, generator)
            return idx.to(frame_lengths.device)
        if mode != "uniform":
            raise ValueError(f"negative mode must be 'uniform' or 'fairseq', got {mode!r}")
        return sample_uniform(frame_lengths, max_frames, self.num_negatives, generator)

    def contrastive_logits(
        self, z: Tensor, predictions: Tensor, frame_lengths: Tensor, negative_indices: Tensor,
        impl: Literal["matmul", "gather", "targets"] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Logits ``[B, K, T, 1+N]`` and mask ``[B, K, T]``.

        ``logits[b, k, t, 0] = <predictions[b, :, t, k], z[b, :, t + offset + k]>``; index ``n + 1``
        uses ``z[b, :, negative_indices[b, t + offset + k, n]]`` instead. ``impl`` overrides
        :attr:`logits_impl` for this call. Entries outside the mask are not meaningful.
        """
        device_type = z.device.type
        fp16 = z.dtype == torch.float16 or (
            torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16
        )
        if fp16:
            # Dot products of wide latents overflow fp16 (max 65,504) and turn the loss into NaN:
            # fairseq's model does exactly that under fp16 autocast. Compute them in float32.
            with torch.autocast(device_type, enabled=False):
                return self._contrastive_logits(z.float(), predictions.float(), frame_lengths, negative_indices, impl)
        return self._contrastive_logits(z, predictions, frame_lengths, negative_indices, impl)

    def _contrastive_logits(
        self, z: Tensor, predictions: Tensor, frame_lengths: Tensor, negative_indices: Tensor,
        impl: str | None = None,
    ) -> tuple[Tensor, Tensor]:
        impl = impl or self.logits_impl
        if impl not in ("matmul", "gather", "targets"):
            raise ValueError(f"logits impl must be matmul, gather or targets, got {impl!r}")
        batch, channels, frames = z.shape
        steps = predictions.shape[-1]
        context_frames = frames - self.offset
        if context_frames <= 0:
            raise ValueError(
                f"{frames} latent frames leave no prediction at offset {self.offset}: "
                f"the input needs at least {self.min_samples} samples"
            )
        mask = prediction_mask(frames, steps, self.offset, frame_lengths.to(z.device))
        pred = predictions.permute(0, 3, 2, 1)[:, :, :context_frames]  # [B, K, T, C]
        # cand[b, s, 0] = s (the true frame), cand[b, s, n + 1] = n-th distractor of target frame s.
        frame_ids = torch.arange(frames, device=z.device).expand(batch, frames).unsqueeze(-1)
        cand = torch.cat([frame_ids, negative_indices.to(z.device)], dim=-1)  # [B, F, 1+N]
        if impl == "targets":
            return self._logits_by_target(z, pred, cand), mask
        # Pad the target axis so that every step slices the same number of context frames.
        cand = nn.functional.pad(cand, (0, 0, 0, steps - 1))
        per_step = []
        for k in range(steps):
            targets = cand[:, self.offset + k : self.offset + k + context_frames]  # [B, T, 1+N]
            if impl == "matmul":
                # All frame-pair scores with one matmul, then pick the candidates (fast on GPU/CPU).
                scores = torch.bmm(pred[:, k], z)  # [B, T, F]
                per_step.append(scores.gather(2, targets))
            else:
                # Gather the candidate latents, then dot products (memory O(T * N * C)).
                zt = z.transpose(1, 2)  # [B, F, C]
                idx = targets.reshape(batch, -1, 1).expand(-1, -1, channels)
                cands = torch.gather(zt, 1, idx).view(batch, context_frames, -1, channels)
                per_step.append(torch.einsum("btc,btjc->btj", pred[:, k], cands))
        return torch.stack(per_step, dim=1), mask

    def _logits_by_target(self, z: Tensor, pred: Tensor, cand: Tensor) -> Tensor:
        """The ``"targets"`` logits ``[B, K, T, 1+N]`` from ``z [B, C, F]``, the predictions ``pred
        [B, K, T, C]`` and each target frame's candidates ``cand [B, F, 1+N]``: per target frame ``s``,
        the ``K`` predictions aimed at it (step ``k`` from context frame ``s - offset - k``) against
        its candidates, one small matmul per target. Predictions whose target lies past the input
        are 0 (masked)."""
        batch, channels, frames = z.shape
        steps, context_frames = pred.shape[1], pred.shape[2]
        lead = self.offset + steps - 1  # zero rows before context frame 0: targets reached by no step
        pred = nn.functional.pad(pred, (0, 0, lead, 0)).contiguous()  # [B, K, lead + T, C]
        rows = pred.shape[2]
        # aimed[b, s, k] = pred[b, k, lead + s - offset - k]: a strided view, no copy
        aimed = pred.as_strided(
            (batch, frames, steps, channels),
            (steps * rows * channels, channels, (rows - 1) * channels, 1),
            pred.storage_offset() + (lead - self.offset) * channels,
        )
        width = cand.shape[-1]
        zt = z.transpose(1, 2)  # [B, F, C]
        cands = torch.gather(zt, 1, cand.reshape(batch, -1, 1).expand(-1, -1, channels)).view(batch, frames, width, channels)
        by_target = torch.matmul(aimed, cands.transpose(-1, -2))  # [B, F, K, 1+N]
        # logits[b, k, t] = by_target[b, t + offset + k, k]; targets past the input (s >= F) are 0 rows.
        by_target = nn.functional.pad(by_target, (0, 0, 0, 0, 0, steps - 1))
        return by_target.as_strided(
            (batch, steps, context_frames, width),
            (by_target.stride(0), by_target.stride(1) + by_target.stride(2), by_target.stride(1), 1),
            by_target.storage_offset() + self.offset * by_target.stride(1),
        ).contiguous()

    def forward(
        self,
        waveforms: Tensor,
        lengths: Tensor | None = None,
        *,
        generator: GeneratorArg = None,
        negatives: NegativeMode = "uniform",
        negative_indices: Tensor | None = None,
        compute_logits: bool = True,
    ) -> Wav2VecOutput:
        """Run the model on ``waveforms`` ``[B, time]`` (16 kHz), right-padded to ``lengths``.

        ``generator``: one ``torch.Generator`` for the batch, or one per utterance (scores then do
        not depend on how utterances are batched). ``negative_indices`` ``[B, F, N]`` overrides
        sampling (parity tests use it).
        """
        z, c, predictions, frame_lengths = self.encode(waveforms, lengths)
        out = Wav2VecOutput(z=z, c=c, predictions=predictions, frame_lengths=frame_lengths, offset=self.offset)
        if not compute_logits:
            return out
        if negative_indices is None:
            negative_indices = self.sample_negatives(frame_lengths, z.shape[-1], generator, negatives)
        out.negative_indices = negative_indices
        out.logits, out.mask = self.contrastive_logits(z, predictions, frame_lengths, negative_indices)
        return out


def auto_offset(conv_feature_layers: tuple[ConvSpec, ...]) -> int:
    """fairseq's ``offset="auto"``: ceil(receptive field / total stride) of the encoder (3 for large)."""
    field, jump = receptive_field([(kernel, stride) for _, kernel, stride in conv_feature_layers])
    return math.ceil(field / jump)


def wav2vec_model(config: Wav2VecConfig | None = None, **overrides) -> Wav2VecModel:
    """Flat factory: build the model for ``config`` (fields may be overridden by keyword)."""
    config = Wav2VecConfig(**{**(config.to_dict() if config else {}), **overrides})
    affine = not config.non_affine_group_norm
    enc_layers, in_ch = [], 1
    for spec in config.conv_feature_layers:
        enc_layers.append(EncoderLayer(in_ch, spec, 0.0, affine, config.activation))
        in_ch = spec[0]
    embed = in_ch
    encoder = FeatureEncoder(
        enc_layers, config.log_compression, config.skip_connections_feat, config.residual_scale
    )

    def make_context() -> tuple[ContextNetwork, int]:
        layers, ch = [], embed
        for spec in config.conv_aggregator_layers:
            layers.append(
                ContextLayer(
                    ch, spec, config.dropout, affine, config.activation, config.conv_bias,
                    config.agg_zero_pad, config.skip_connections_agg,
                )
            )
            ch = spec[0]
        return ContextNetwork(layers, config.residual_scale), ch

    context, ctx_dim = make_context()
    prediction = StepPredictor(ctx_dim, embed, config.prediction_steps, config.dropout)
    target_projection = make_context()[0] if config.project_features == "new" else None
    if config.project_features == "same" and ctx_dim != embed:
        raise ValueError("project_features='same' needs context channels equal to encoder channels")
    return Wav2VecModel(config, encoder, context, prediction, target_projection)


def _layout(channels: int, context_kernels: range) -> dict:
    encoder = tuple((channels, k, s) for _, k, s in LARGE_ENCODER)
    context = tuple((channels, k, 1) for k in context_kernels)
    return {"conv_feature_layers": encoder, "conv_aggregator_layers": context}


# Named architectures. `large` is fairseq's released wav2vec_large.pt (32,537,088 parameters).
PRESET_CONFIGS: dict[str, Wav2VecConfig] = {
    "large": Wav2VecConfig(),
    # the large layout at 256 channels (8.1M): GPU pretraining on tens of hours
    "medium": Wav2VecConfig(**_layout(256, range(2, 14))),
    # 128 channels, context kernels 2..9 (1.3M): CPU pretraining and the embedded default
    "small": Wav2VecConfig(**_layout(128, range(2, 10))),
    # 32 channels, 4 context layers: tests only (fast on CPU, not for results)
    "tiny": Wav2VecConfig(**_layout(32, range(2, 6))),
}


def wav2vec_large(**overrides) -> Wav2VecModel:
    """fairseq's released ``wav2vec_large.pt``: 512 channels, context kernels 2..13, 32,537,088 parameters."""
    return wav2vec_model(PRESET_CONFIGS["large"], **overrides)


def wav2vec_medium(**overrides) -> Wav2VecModel:
    """The large layout at 256 channels (8.1M parameters): GPU pretraining on tens of hours."""
    return wav2vec_model(PRESET_CONFIGS["medium"], **overrides)


def wav2vec_small(**overrides) -> Wav2VecModel:
    """128 channels, context kernels 2..9 (1.3M parameters): CPU pretraining and the embedded default."""
    return wav2vec_model(PRESET_CONFIGS["small"], **overrides)


def wav2vec_tiny(**overrides) -> Wav2VecModel:
    """32 channels, 4 context layers: for tests only (fast on CPU, not for results)."""
    return wav2vec_model(PRESET_CONFIGS["tiny"], **overrides)


PRESETS = {"large": wav2vec_large, "medium": wav2vec_medium, "small": wav2vec_small, "tiny": wav2vec_tiny}


def preset_config(name: str) -> Wav2VecConfig:
    """The architecture of a named preset (``large``, ``medium``, ``small``, ``tiny``)."""
    if name not in PRESET_CONFIGS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESET_CONFIGS)}")
    return PRESET_CONFIGS[name]


def build_preset(name: str, **overrides) -> Wav2VecModel:
    """Build a named preset, with optional config overrides."""
    return wav2vec_model(preset_config(name), **overrides)
