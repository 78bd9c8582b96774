"""The V-Express spatial transformer of the denoising UNet and the reference features it reads.

Each spatial transformer (``...attentions.N``) is the SD1.5 ``Transformer2DModel`` layout with ONE block,
applied per frame (docs/official-architecture.md §3)::

    GroupNorm(eps 1e-6) -> 1x1 conv proj_in -> block -> 1x1 conv proj_out -> + residual

and the block runs four pre-LayerNorm sub-layers with residuals, in this order:

1. ``norm1 -> attn1``: spatial self-attention over the frame's h*w tokens;
2. ``norm1_5 -> attn1_5``: reference attention, K/V = the ReferenceNet features of the same block,
   output times ``reference_attention_weight``;
3. ``norm2 -> attn2``: audio cross-attention to the frame's audio tokens (``to_out`` zero-initialised),
   output times ``audio_attention_weight``;
4. ``norm3 -> ff``: GEGLU feed-forward.

Module registration order (attn1, norm1, attn1_5, norm1_5, attn2, norm2, ff, norm3) reproduces the official
state-dict key order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import nn


@dataclass
class ReferenceFeatures:
    """ReferenceNet output: one ``(b, h*w, C)`` tensor per transformer block.

    ``names[i]`` is the module path of the transformer that produced ``features[i]`` (e.g.
    ``"down_blocks.0.attentions.1"``); the denoising UNet's transformer with the same path reads it.
    The list is in forward-execution order (down, mid, up), which is also the order the denoising UNet
    consumes them. This pairing equals the official one (all blocks in module order, stably sorted by width):
    both UNets share one layout, so the i-th writer always feeds the i-th reader.
    """

    features: list[torch.Tensor]
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.features)

    def as_dict(self) -> dict[str, torch.Tensor]:
        if len(self.names) != len(self.features):
            raise ValueError(f"ReferenceFeatures: {len(self.names)} names for {len(self.features)} tensors")
        return dict(zip(self.names, self.features))


@dataclass
class FrameConditioning:
    """What the spatial transformers read besides their input; built once per denoiser forward.

    ``reference``: transformer path -> ``(b, n_ref, C)`` features, or None for "all zero" (unconditional);
    ``reference_mask``: ``(b, f)`` multiplier of the reference features per frame, or None (all ones);
    ``audio``: ``(b*f, n, D)`` audio tokens, or None for zeros.
    """

    num_frames: int
    audio: torch.Tensor | None = None
    reference: dict[str, torch.Tensor] | None = None
    reference_mask: torch.Tensor | None = None
    reference_weight: float = 1.0
    audio_weight: float = 1.0

    def reference_for(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """K/V tokens for transformer ``name``, per frame: ``(b*f, n_ref, C)``; zeros when unconditional."""
        if self.reference is None:
            return like.new_zeros(like.shape[0], 1, like.shape[-1])
        if name not in self.reference:
            raise KeyError(f"reference features: no tensor for transformer {name!r} (have {list(self.reference)})")
        feats = self.reference[name].to(dtype=like.dtype)
        b, n, c = feats.shape
        if b * self.num_frames != like.shape[0] or c != like.shape[-1]:
            raise ValueError(
                f"reference features for {name}: shape {tuple(feats.shape)} does not fit "
                f"{like.shape[0]} = batch*frames tokens of width {like.shape[-1]}"
            )
        frames = feats.unsqueeze(1).expand(b, self.num_frames, n, c)
        if self.reference_mask is not None:
            frames = frames * self.reference_mask.to(feats.dtype)[:, :, None, None]
        return frames.reshape(b * self.num_frames, n, c)

    def audio_tokens(self, like: torch.Tensor, cross_dim: int) -> torch.Tensor:
        if self.audio is None:
            return like.new_zeros(like.shape[0], 1, cross_dim)
        return self.audio.to(dtype=like.dtype)


class VExpressTransformerBlock(nn.Module):
    """Self-attention, reference attention, audio cross-attention, feed-forward (pre-LayerNorm, residuals)."""

    def __init__(self, dim: int, heads: int, cross_attention_dim: int) -> None:
        super().__init__()
        dim_head = dim // heads
        self.attn1 = Attention(dim, heads=heads, dim_head=dim_head, bias=False)
        self.norm1 = nn.LayerNorm(dim)
        self.attn1_5 = Attention(dim, cross_attention_dim=dim, heads=heads, dim_head=dim_head, bias=False)
        self.norm1_5 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, cross_attention_dim=cross_attention_dim, heads=heads, dim_head=dim_head, bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.norm3 = nn.LayerNorm(dim)
        # The audio branch starts silent (official zero-inits attn2.to_out; we zero the bias too so the
        # branch output is exactly 0 at init, not a constant).
        nn.init.zeros_(self.attn2.to_out[0].weight)
        nn.init.zeros_(self.attn2.to_out[0].bias)

    def forward(self, x: torch.Tensor, reference: torch.Tensor, audio: torch.Tensor,
                reference_weight: float = 1.0, audio_weight: float = 1.0) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        if reference_weight != 0.0:  # weight 0 = branch off: skip the work, the result is identical
            x = self.attn1_5(self.norm1_5(x), encoder_hidden_states=reference) * reference_weight + x
        if audio_weight != 0.0:
            x = self.attn2(self.norm2(x), encoder_hidden_states=audio) * audio_weight + x
        return self.ff(self.norm3(x)) + x


class VExpressTransformer(nn.Module):
    """Per-frame spatial transformer (``attentions.N``): GroupNorm, conv proj_in, one block, conv proj_out."""

    def __init__(self, channels: int, heads: int, cross_attention_dim: int, norm_num_groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([VExpressTransformerBlock(channels, heads, cross_attention_dim)])
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)
        self.cross_attention_dim = cross_attention_dim
        # Module path inside the UNet ("down_blocks.0.attentions.1"); set by the UNet, used to pick the
        # matching ReferenceNet features.
        self.feature_name = ""

    def forward(self, hidden_states: torch.Tensor, cond: FrameConditioning) -> torch.Tensor:
        bf, c, h, w = hidden_states.shape
        residual = hidden_states
        x = self.proj_in(self.norm(hidden_states))
        x = rearrange(x, "bf c h w -> bf (h w) c")
        reference = cond.reference_for(self.feature_name, x)
        audio = cond.audio_tokens(x, self.cross_attention_dim)
        for block in self.transformer_blocks:
            x = block(x, reference, audio, cond.reference_weight, cond.audio_weight)
        x = rearrange(x, "bf (h w) c -> bf c h w", h=h, w=w)
        return self.proj_out(x) + residual
