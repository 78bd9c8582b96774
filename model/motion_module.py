"""AnimateDiff-v2 "Vanilla" motion module: temporal self-attention over the frames of a video.

Layout and state-dict keys follow the official V-Express / AnimateDiff ``mm_sd_v15_v2`` checkpoints
(docs/official-architecture.md §5)::

    motion_modules.N.temporal_transformer.{norm, proj_in,
        transformer_blocks.0.{attention_blocks.{0,1}.{to_q,to_k,to_v,to_out.0,pos_encoder.pe},
                              norms.{0,1}, ff.net.0.proj, ff.net.2, ff_norm},
        proj_out}

The denoising UNet keeps activations in the per-frame layout ``(b*f, c, h, w)``; a motion module reshapes
them to ``(b*h*w, f, c)`` so attention runs over the frame axis, then back. ``proj_out`` is zero-initialised
so a fresh module is an exact identity (residual only).
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import nn


class SinusoidalPositionalEncoding(nn.Module):
    """Adds ``pe[:, :f]`` to a ``(batch, f, C)`` tensor; ``pe`` is a persistent buffer ``[1, max_len, C]``.

    Even channels hold ``sin(pos * 10000^(-2i/C))``, odd channels the matching ``cos`` (as AnimateDiff).
    """

    def __init__(self, dim: int, max_len: int = 32) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe, persistent=True)

    @property
    def max_len(self) -> int:
        return self.pe.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.max_len:
            raise ValueError(
                f"motion module: {x.shape[1]} frames exceed the positional encoding's max_len={self.max_len}; "
                "use context windows of at most max_len frames"
            )
        return x + self.pe[:, : x.shape[1]].to(dtype=x.dtype)


class TemporalSelfAttention(Attention):
    """diffusers ``Attention`` whose input carries a sinusoidal frame-position encoding (so Q, K and V do)."""

    def __init__(self, dim: int, heads: int, max_len: int) -> None:
        super().__init__(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False, out_bias=True)
        self.pos_encoder = SinusoidalPositionalEncoding(dim, max_len)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:  # (batch, frames, C)
        return super().forward(self.pos_encoder(hidden_states), **kwargs)


class TemporalTransformerBlock(nn.Module):
    """Two pre-norm temporal self-attentions (``Temporal_Self`` x2) then a pre-norm GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, max_len: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalSelfAttention(dim, heads, max_len) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, frames, C)
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3DModel(nn.Module):
    """GroupNorm -> Linear proj_in -> temporal transformer block -> Linear proj_out (zero-init) + residual."""

    def __init__(self, channels: int, heads: int, norm_num_groups: int, max_len: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, heads, max_len)])
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        bf, c, h, w = hidden_states.shape
        b = bf // num_frames
        residual = hidden_states
        x = self.norm(hidden_states)  # per frame, as AnimateDiff (GroupNorm on (b f) c h w)
        x = rearrange(x, "(b f) c h w -> (b h w) f c", f=num_frames)  # attend along the frame axis
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x)
        x = self.proj_out(x)
        x = rearrange(x, "(b h w) f c -> (b f) c h w", b=b, h=h, w=w)
        return x + residual


class VanillaTemporalModule(nn.Module):
    """One motion module (``motion_modules.N``); input/output ``(b*f, c, h, w)`` in frame-major order."""

    def __init__(self, channels: int, heads: int = 8, norm_num_groups: int = 32, max_len: int = 32) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"motion module: channels={channels} not divisible by heads={heads}")
        self.temporal_transformer = TemporalTransformer3DModel(channels, heads, norm_num_groups, max_len)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        if hidden_states.shape[0] % num_frames:
            raise ValueError(f"motion module: batch*frames={hidden_states.shape[0]} not divisible by {num_frames}")
        return self.temporal_transformer(hidden_states, num_frames)
