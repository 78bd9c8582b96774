"""V-Kps Guider: a small per-frame conv encoder for the V-Kps image (docs/official-architecture.md §7).

Key layout equals the official ``v_kps_guider.bin`` (``conv_in``, ``blocks.0..5``,
``conv_out``); the output conv is zero-initialised so a fresh guider adds
nothing to the denoising UNet's ``conv_in`` output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn


class VKpsGuider(ModelMixin, ConfigMixin):
    """(b, 3, f, H, W) or (b, 3, H, W) V-Kps images in [0, 1] -> (b, C, f, H/8, W/8) or (b, C, H/8, W/8)."""

    @register_to_config
    def __init__(
        self,
        conditioning_embedding_channels: int = 320,
        conditioning_channels: int = 3,
        block_out_channels: Sequence[int] = (16, 32, 96, 256),
    ) -> None:
        super().__init__()
        channels = list(block_out_channels)
        self.conv_in = nn.Conv2d(conditioning_channels, channels[0], kernel_size=3, padding=1)
        blocks: list[nn.Module] = []
        # Each width step: a same-width conv, then a stride-2 conv to the next width (3 downsamplings = /8).
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(channels[-1], conditioning_embedding_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _encode_images(self, images: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.conv_in(images))
        for block in self.blocks:
            hidden = F.silu(block(hidden))
        return self.conv_out(hidden)

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        if conditioning.ndim == 4:
            return self._encode_images(conditioning)
        if conditioning.ndim != 5:
            raise ValueError(f"VKpsGuider expects (b,3,H,W) or (b,3,f,H,W), got shape {tuple(conditioning.shape)}")
        b, c, f, h, w = conditioning.shape
        frames = rearrange(conditioning, "b c f h w -> (b f) c h w")
        encoded = self._encode_images(frames)
        return rearrange(encoded, "(b f) c h w -> b c f h w", b=b)
