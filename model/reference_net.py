"""V-Express ReferenceNet: the SD1.5 2-D UNet run once per video on the reference latent.

See docs/official-architecture.md §4.

It runs at timestep 0 with a zero text context. Inside each of its transformer blocks the tensor
``norm2(hidden)`` (the LayerNorm-2 output after self-attention, i.e. what cross-attention would read) is the
feature the denoising UNet's reference attention uses as keys and values.

The features are collected by forward hooks on each block's ``norm2`` that exist only for the duration of one
``forward`` call: no module keeps state between calls. As in the official file, ``conv_norm_out`` does not
exist (the state dict equals ``reference_net.bin``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from model.transformer import ReferenceFeatures

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


class VExpressReferenceNet(UNet2DConditionModel):
    """SD1.5 ``UNet2DConditionModel`` without ``conv_norm_out`` whose forward returns :class:`ReferenceFeatures`."""

    @register_to_config
    def __init__(
        self,
        sample_size: int = 64,
        in_channels: int = 4,
        out_channels: int = 4,
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        attention_head_dim: int = 8,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
    ) -> None:
        super().__init__(
            sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
            down_block_types=DOWN_BLOCK_TYPES, up_block_types=UP_BLOCK_TYPES,
            block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim, norm_num_groups=norm_num_groups, norm_eps=norm_eps,
            cross_attention_dim=cross_attention_dim,
        )
        # The official ReferenceNet drops the final norm; diffusers' forward skips it when it is None.
        self.conv_norm_out = None

    def feature_blocks(self) -> dict[str, BasicTransformerBlock]:
        """Transformer path (``down_blocks.0.attentions.1``) -> its (single) transformer block."""
        blocks = {}
        for name, module in self.named_modules():
            if name.endswith(".transformer_blocks.0") and isinstance(module, BasicTransformerBlock):
                blocks[name.removesuffix(".transformer_blocks.0")] = module
        return blocks

    def forward(  # type: ignore[override]
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float | int = 0,
        encoder_hidden_states: torch.Tensor | None = None,
    ) -> ReferenceFeatures:
        """Reference latent (b, 4, h, w) -> one ``(b, h*w, C)`` feature per transformer block (execution order)."""
        if encoder_hidden_states is None:
            encoder_hidden_states = latents.new_zeros(latents.shape[0], 1, self.config.cross_attention_dim)
        names: list[str] = []
        features: list[torch.Tensor] = []

        def tap(name: str):
            def hook(_module, _inputs, output):
                names.append(name)
                features.append(output)
            return hook

        handles = [block.norm2.register_forward_hook(tap(name)) for name, block in self.feature_blocks().items()]
        try:
            super().forward(latents, timestep, encoder_hidden_states, return_dict=False)
        finally:
            for handle in handles:
                handle.remove()
        return ReferenceFeatures(features=features, names=names)
