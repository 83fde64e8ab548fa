"""Building blocks of wav2vec (v1): feature encoder, causal context network, step predictions.

Every block takes and returns ``(x, lengths)`` where ``x`` is ``[batch, channel, frame]`` and
``lengths`` is ``[batch]`` (valid frames per utterance) or ``None`` (no padding). Normalisation only
looks at valid frames, so a padded batch gives the same per-utterance values as one-at-a-time
inference. With ``lengths=None`` every block computes exactly what fairseq computes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ConvSpec = tuple[int, int, int]  # (channels, kernel, stride), fairseq's conv_*_layers entries


def frame_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``[batch, max_len]`` bool, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]



def receptive_field(layers: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """``(samples seen by one output frame, samples between frames)`` of a stack of 1-D convolutions
    given as ``(kernel, stride)`` pairs, first layer first. The one place this arithmetic lives."""
    field, jump = 1, 1
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field, jump

class MaskedGroupNorm(nn.Module):
    """GroupNorm with one group (fairseq's ``Fp32GroupNorm(1, dim)``), computed in float32.

    One group normalises over channels *and time*, so padding would change the statistics: with
    ``lengths`` the mean and variance come from valid frames only.
    """

    def __init__(self, channels: int, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        if lengths is None or bool((lengths == x.shape[-1]).all()):
            out = F.group_norm(x.float(), 1, weight, bias, self.eps)
            return out.type_as(x)
        xf = x.float()
        mask = frame_mask(lengths, x.shape[-1])[:, None, :].to(xf.dtype)  # [B, 1, T]
        count = (lengths.clamp(min=1) * x.shape[1]).to(xf.dtype)[:, None, None]
        mean = (xf * mask).sum(dim=(1, 2), keepdim=True) / count
        var = (((xf - mean) * mask) ** 2).sum(dim=(1, 2), keepdim=True) / count
        out = (xf - mean) * torch.rsqrt(var + self.eps)
        if weight is not None:
            out = out * weight[None, :, None] + bias[None, :, None]
        return out.type_as(x)


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r} (expected 'relu' or 'gelu')")


class EncoderLayer(nn.Module):
    """Strided conv (no bias) -> dropout -> group norm -> activation."""

    def __init__(
        self, in_channels: int, spec: ConvSpec, dropout: float, affine: bool, activation: str
    ) -> None:
        super().__init__()
        channels, kernel, stride = spec
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv1d(in_channels, channels, kernel, stride=stride, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.norm = MaskedGroupNorm(channels, affine=affine)
        self.activation = _activation(activation)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return torch.div(lengths - self.kernel, self.stride, rounding_mode="floor").clamp(min=-1) + 1

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        x = self.dropout(self.conv(x))
        lengths = None if lengths is None else self.output_lengths(lengths)
        return self.activation(self.norm(x, lengths)), lengths


class FeatureEncoder(nn.Module):
    """Raw audio ``[batch, time]`` -> latent features ``z`` ``[batch, channel, frame]``.

    fairseq: ``ConvFeatureExtractionModel`` (``conv_feature_layers``, ``log_compression``,
    ``skip_connections_feat``, ``residual_scale``, ``non_affine_group_norm``).
    """

    def __init__(
        self,
        layers: list[EncoderLayer],
        log_compression: bool = True,
        skip_connections: bool = False,
        residual_scale: float = 0.5,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.log_compression = log_compression
        self.skip_connections = skip_connections
        self.residual_scale = math.sqrt(residual_scale)  # fairseq scales by sqrt(residual_scale)

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output frame."""
        return receptive_field([(layer.kernel, layer.stride) for layer in self.layers])[0]

    @property
    def stride(self) -> int:
        return receptive_field([(layer.kernel, layer.stride) for layer in self.layers])[1]

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for layer in self.layers:
            lengths = layer.output_lengths(lengths)
        return lengths.clamp(min=0)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if waveforms.ndim != 2:
            raise ValueError(f"expected waveforms of shape [batch, time], got {tuple(waveforms.shape)}")
        if waveforms.shape[1] < self.receptive_field:
            raise ValueError(
                f"input of {waveforms.shape[1]} samples is shorter than the encoder's receptive "
                f"field ({self.receptive_field} samples)"
            )
        x = waveforms.unsqueeze(1)  # [B, 1, T]
        for layer in self.layers:
            residual = x
            x, lengths = layer(x, lengths)
            if self.skip_connections and x.shape[1] == residual.shape[1]:
                # fairseq: subsample the residual to the new frame rate (exact only without padding)
                residual = residual[..., :: residual.shape[2] // x.shape[2]][..., : x.shape[2]]
                x = (x + residual) * self.residual_scale
        if self.log_compression:
            x = (x.abs() + 1).log()
        return x, lengths


class ContextLayer(nn.Module):
    """Causal conv (left replication or zero padding) -> dropout -> group norm -> activation."""

    def __init__(
        self,
        in_channels: int,
        spec: ConvSpec,
        dropout: float,
        affine: bool,
        activation: str,
        bias: bool,
        zero_pad: bool,
        residual: bool,
    ) -> None:
        super().__init__()
        channels, kernel, stride = spec
        if stride != 1:
            raise ValueError(f"context layers must have stride 1 (causal), got {spec}")
        self.pad = kernel - 1  # fairseq: ka + kb with ka = k // 2, kb = ka - 1 (even k) or ka
        self.zero_pad = zero_pad
        self.conv = nn.Conv1d(in_channels, channels, kernel, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.norm = MaskedGroupNorm(channels, affine=affine)
        self.activation = _activation(activation)
        self.residual = residual
        self.residual_proj = (
            nn.Conv1d(in_channels, channels, 1, bias=False) if residual and in_channels != channels else None
        )

    def forward(self, x: Tensor, lengths: Tensor | None, residual_scale: float) -> Tensor:
        mode = "constant" if self.zero_pad else "replicate"
        y = self.conv(F.pad(x, (self.pad, 0), mode=mode))
        y = self.activation(self.norm(self.dropout(y), lengths))
        if self.residual:
            skip = x if self.residual_proj is None else self.residual_proj(x)
            y = (y + skip) * residual_scale
        return y


class ContextNetwork(nn.Module):
    """Latents ``z`` ``[batch, channel, frame]`` -> causal context ``c`` of the same length.

    fairseq: ``ConvAggegator`` (``conv_aggregator_layers``, ``skip_connections_agg``,
    ``residual_scale``, ``agg_zero_pad``, ``no_conv_bias``).
    """

    def __init__(self, layers: list[ContextLayer], residual_scale: float = 0.5) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.residual_scale = math.sqrt(residual_scale)

    def forward(self, z: Tensor, lengths: Tensor | None = None) -> Tensor:
        x = z
        for layer in self.layers:
            x = layer(x, lengths, self.residual_scale)
        return x


class StepPredictor(nn.Module):
    """Context ``c`` ``[batch, in, frame]`` -> predictions ``[batch, out, frame, steps]``.

    One linear map per prediction step k (fairseq: ``project_to_steps``, a ``ConvTranspose2d`` with
    kernel ``(1, steps)``; its weight ``[in, out, 1, steps]`` is stored here as ``[steps, out, in]``).
    """

    def __init__(self, in_channels: int, out_channels: int, steps: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(steps, out_channels, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.dropout = nn.Dropout(dropout)
        # Same initialisation as PyTorch's ConvTranspose2d (fan_in = out_channels * steps there).
        bound = 1 / math.sqrt(out_channels * steps)
        nn.init.kaiming_uniform_(self.weight.view(steps * out_channels, in_channels), a=math.sqrt(5))
        nn.init.uniform_(self.bias, -bound, bound)

    @property
    def steps(self) -> int:
        return self.weight.shape[0]

    def forward(self, c: Tensor) -> Tensor:
        out = torch.einsum("bit,koi->botk", c, self.weight) + self.bias[None, :, None, None]
        return self.dropout(out)
