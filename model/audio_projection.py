"""Audio Projection: a Perceiver resampler, 10 audio vectors per frame -> 5 audio tokens.

See docs/official-architecture.md §6.

Parameter names and registration order equal the official ``audio_projection.bin``:
``latents``, ``pos_emb.weight``, ``proj_in``, ``proj_out``, ``norm_out``, then
``layers.{i}.0`` (Perceiver attention) and ``layers.{i}.1`` (LN, Linear, GELU, Linear).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    inner = dim * mult
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(), nn.Linear(inner, dim, bias=False))


class PerceiverAttention(nn.Module):
    """Latents attend to [inputs; latents] (keys/values), as in the Flamingo/IP-Adapter resampler."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        return x.view(n, length, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, inputs: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        inputs = self.norm1(inputs)
        latents = self.norm2(latents)
        q = self._split_heads(self.to_q(latents))
        k, v = self.to_kv(torch.cat((inputs, latents), dim=-2)).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(q, self._split_heads(k), self._split_heads(v))
        n, _, length, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(n, length, -1))


class AudioProjection(ModelMixin, ConfigMixin):
    """(b, f, L, E) or (n, L, E) audio windows -> (b, f, num_queries, output_dim) or (n, num_queries, output_dim)."""

    @register_to_config
    def __init__(
        self,
        dim: int = 768,
        depth: int = 4,
        dim_head: int = 64,
        heads: int = 12,
        num_queries: int = 5,
        embedding_dim: int = 768,
        output_dim: int = 768,
        ff_mult: int = 4,
        max_seq_len: int = 10,
    ) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.pos_emb = nn.Embedding(max_seq_len, embedding_dim)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _feed_forward(dim, ff_mult)]) for _ in range(depth)
        )

    def forward(self, audio_windows: torch.Tensor) -> torch.Tensor:
        if audio_windows.ndim not in (3, 4):
            raise ValueError(f"AudioProjection expects (n,L,E) or (b,f,L,E), got shape {tuple(audio_windows.shape)}")
        lead = audio_windows.shape[:-2]
        seq_len, width = audio_windows.shape[-2:]
        max_len = self.config.max_seq_len
        if seq_len > max_len or width != self.config.embedding_dim:
            raise ValueError(
                f"AudioProjection expects windows of <= {max_len} vectors of width {self.config.embedding_dim}, "
                f"got {seq_len} x {width}"
            )
        x = audio_windows.reshape(-1, seq_len, width)
        x = x + self.pos_emb(torch.arange(seq_len, device=x.device))
        x = self.proj_in(x)
        latents = self.latents.expand(x.shape[0], -1, -1)
        for attention, feed_forward in self.layers:
            latents = attention(x, latents) + latents
            latents = feed_forward(latents) + latents
        tokens = self.norm_out(self.proj_out(latents))
        return tokens.reshape(*lead, *tokens.shape[-2:])
