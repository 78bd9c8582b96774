"""V-Express denoising UNet: SD1.5 layout on video-shaped latents, with reference, audio and motion attention.

Input ``sample`` is ``(b, c, f, h, w)``. Internally activations stay in the per-frame layout ``(b*f, c, h, w)``:
every "inflated" 2-D layer (convs, resnets with their GroupNorms, down/up-samplers, conv_norm_out) then is the
plain diffusers 2-D layer applied to each frame, and only the motion modules look across frames.

State-dict keys and order equal the official ``denoising_unet.bin`` (docs/official-architecture.md §1, §3, §5):
conv_in, time_embedding, down_blocks, up_blocks, mid_block, conv_norm_out, conv_out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from diffusers.utils import BaseOutput
from einops import rearrange
from torch import nn

from model.motion_module import VanillaTemporalModule
from model.transformer import FrameConditioning, ReferenceFeatures, VExpressTransformer


@dataclass
class UNet3DOutput(BaseOutput):
    sample: torch.Tensor  # (b, c, f, h, w)


@dataclass
class BlockSpec:
    """Shared hyper-parameters of the UNet's blocks."""

    temb_channels: int
    heads: int
    cross_attention_dim: int
    norm_num_groups: int
    norm_eps: float
    motion_heads: int
    motion_max_len: int
    use_motion_module: bool

    def resnet(self, in_channels: int, out_channels: int) -> ResnetBlock2D:
        return ResnetBlock2D(in_channels=in_channels, out_channels=out_channels, temb_channels=self.temb_channels,
                             eps=self.norm_eps, groups=self.norm_num_groups, non_linearity="silu")

    def transformer(self, channels: int) -> VExpressTransformer:
        return VExpressTransformer(channels, self.heads, self.cross_attention_dim, self.norm_num_groups)

    def motion_modules(self, channels: int, count: int) -> nn.ModuleList:
        if not self.use_motion_module:
            return nn.ModuleList()
        return nn.ModuleList(
            [VanillaTemporalModule(channels, self.motion_heads, self.norm_num_groups, self.motion_max_len)
             for _ in range(count)])


class _Block3D(nn.Module):
    """Common per-layer step: resnet -> [spatial transformer] -> [motion module], optionally checkpointed."""

    resnets: nn.ModuleList
    motion_modules: nn.ModuleList

    def __init__(self) -> None:
        super().__init__()
        self.gradient_checkpointing = False
        self._gradient_checkpointing_func: Callable | None = None

    def _layer(self, i: int, x: torch.Tensor, temb: torch.Tensor, cond: FrameConditioning) -> torch.Tensor:
        x = self.resnets[i](x, temb)
        if hasattr(self, "attentions"):
            x = self.attentions[i](x, cond)
        if len(self.motion_modules):
            x = self.motion_modules[i](x, cond.num_frames)
        return x

    def _run_layer(self, i: int, x: torch.Tensor, temb: torch.Tensor, cond: FrameConditioning) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled() and self._gradient_checkpointing_func:
            return self._gradient_checkpointing_func(lambda *a: self._layer(i, *a), x, temb, cond)
        return self._layer(i, x, temb, cond)


class DownBlock3D(_Block3D):
    """CrossAttnDownBlock3D (``with_attention``) or DownBlock3D; returns the output and its skip tensors."""

    def __init__(self, spec: BlockSpec, in_channels: int, out_channels: int, num_layers: int,
                 with_attention: bool, add_downsample: bool) -> None:
        super().__init__()
        if with_attention:
            self.attentions = nn.ModuleList([spec.transformer(out_channels) for _ in range(num_layers)])
        self.resnets = nn.ModuleList(
            [spec.resnet(in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)])
        self.motion_modules = spec.motion_modules(out_channels, num_layers)
        if add_downsample:
            self.downsamplers = nn.ModuleList(
                [Downsample2D(out_channels, use_conv=True, out_channels=out_channels, padding=1, name="op")])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, cond: FrameConditioning
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i in range(len(self.resnets)):
            x = self._run_layer(i, x, temb, cond)
            skips.append(x)
        if hasattr(self, "downsamplers"):
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class MidBlock3D(_Block3D):
    """UNetMidBlock3DCrossAttn: resnet, then (transformer -> motion module -> resnet)."""

    def __init__(self, spec: BlockSpec, channels: int) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([spec.transformer(channels)])
        self.resnets = nn.ModuleList([spec.resnet(channels, channels) for _ in range(2)])
        self.motion_modules = spec.motion_modules(channels, 1)

    def _middle(self, x: torch.Tensor, temb: torch.Tensor, cond: FrameConditioning) -> torch.Tensor:
        x = self.attentions[0](x, cond)
        if len(self.motion_modules):
            x = self.motion_modules[0](x, cond.num_frames)
        return self.resnets[1](x, temb)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, cond: FrameConditioning) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        if self.gradient_checkpointing and torch.is_grad_enabled() and self._gradient_checkpointing_func:
            return self._gradient_checkpointing_func(self._middle, x, temb, cond)
        return self._middle(x, temb, cond)


class UpBlock3D(_Block3D):
    """CrossAttnUpBlock3D (``with_attention``) or UpBlock3D; each layer first concatenates one skip tensor."""

    def __init__(self, spec: BlockSpec, in_channels: int, prev_output_channels: int, out_channels: int,
                 num_layers: int, with_attention: bool, add_upsample: bool) -> None:
        super().__init__()
        if with_attention:
            self.attentions = nn.ModuleList([spec.transformer(out_channels) for _ in range(num_layers)])
        resnets = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in = prev_output_channels if i == 0 else out_channels
            resnets.append(spec.resnet(resnet_in + skip_channels, out_channels))
        self.resnets = nn.ModuleList(resnets)
        self.motion_modules = spec.motion_modules(out_channels, num_layers)
        if add_upsample:
            self.upsamplers = nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor, cond: FrameConditioning,
                upsample_size: Sequence[int] | None = None) -> torch.Tensor:
        for i in range(len(self.resnets)):
            x = torch.cat([x, skips.pop()], dim=1)
            x = self._run_layer(i, x, temb, cond)
        if hasattr(self, "upsamplers"):
            x = self.upsamplers[0](x, upsample_size)
        return x


class VExpressDenoisingUNet(ModelMixin, ConfigMixin):
    """The V-Express denoising UNet (official ``denoising_unet.bin`` + ``motion_module.bin``)."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        attention_head_dim: int = 8,  # SD1.5 naming: this is the number of heads
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
        motion_num_attention_heads: int = 8,
        motion_max_len: int = 32,
        use_motion_module: bool = True,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
    ) -> None:
        super().__init__()
        channels = list(block_out_channels)
        temb_channels = channels[0] * 4
        spec = BlockSpec(temb_channels, attention_head_dim, cross_attention_dim, norm_num_groups, norm_eps,
                         motion_num_attention_heads, motion_max_len, use_motion_module)

        # ----- input and time embedding -----
        self.conv_in = nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(channels[0], temb_channels)

        # ----- encoder: 3 x CrossAttnDownBlock3D + DownBlock3D -----
        self.down_blocks = nn.ModuleList()
        self.up_blocks = nn.ModuleList()  # registered before mid_block: the official key order has up before mid
        out_ch = channels[0]
        for i, ch in enumerate(channels):
            in_ch, out_ch = out_ch, ch
            last = i == len(channels) - 1
            self.down_blocks.append(DownBlock3D(spec, in_ch, out_ch, layers_per_block,
                                                with_attention=not last, add_downsample=not last))

        # ----- decoder: UpBlock3D + 3 x CrossAttnUpBlock3D -----
        reversed_channels = channels[::-1]
        out_ch = reversed_channels[0]
        for i, ch in enumerate(reversed_channels):
            prev_out, out_ch = out_ch, ch
            in_ch = reversed_channels[min(i + 1, len(channels) - 1)]
            last = i == len(channels) - 1
            self.up_blocks.append(UpBlock3D(spec, in_ch, prev_out, out_ch, layers_per_block + 1,
                                            with_attention=i > 0, add_upsample=not last))

        # ----- middle -----
        self.mid_block = MidBlock3D(spec, channels[-1])

        # ----- output -----
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], out_channels, kernel_size=3, padding=1)

        for name, module in self.named_modules():
            if isinstance(module, VExpressTransformer):
                module.feature_name = name

    # ----- reference-feature bookkeeping -----
    @property
    def transformers(self) -> list[VExpressTransformer]:
        """Spatial transformers in forward-execution order (down, mid, up): the ReferenceFeatures order."""
        blocks = [*self.down_blocks, self.mid_block, *self.up_blocks]
        return [t for block in blocks for t in getattr(block, "attentions", [])]

    @property
    def reference_feature_names(self) -> list[str]:
        return [t.feature_name for t in self.transformers]

    def _reference_dict(self, reference_features: ReferenceFeatures | Sequence[torch.Tensor] | None
                        ) -> dict[str, torch.Tensor] | None:
        if reference_features is None:
            return None
        names = self.reference_feature_names
        if isinstance(reference_features, ReferenceFeatures) and reference_features.names:
            found = reference_features.as_dict()
            if set(found) != set(names):
                raise ValueError(f"reference features name transformers {sorted(found)}, the UNet has {names}")
            return found
        features = list(getattr(reference_features, "features", reference_features))
        if len(features) != len(names):
            raise ValueError(f"got {len(features)} reference feature tensors, the UNet has {len(names)} transformers")
        return dict(zip(names, features))

    # ----- forward -----
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        audio_tokens: torch.Tensor | None,
        reference_features: ReferenceFeatures | Sequence[torch.Tensor] | None,
        kps_features: torch.Tensor | None = None,
        reference_frame_mask: torch.Tensor | None = None,
        reference_attention_weight: float = 1.0,
        audio_attention_weight: float = 1.0,
        return_dict: bool = True,
        deep_cache=None,
        deep_cache_key=None,
    ) -> UNet3DOutput | tuple[torch.Tensor]:
        """Predict the noise (or v) for ``sample`` (b, c, f, h, w).

        audio_tokens: (b, f, n, D) per-frame audio tokens, or None for zeros (unconditional).
        reference_features: ReferenceNet output (or its tensor list in execution order); None = all zero.
        kps_features: (b, C0, f, h, w) V-Kps guider output, added to conv_in's output.
        reference_frame_mask: (b, f) multiplier of the reference features per frame (0 = dropped).
        deep_cache: an object with ``full_step``, ``features`` (dict) and ``last_was_shallow`` (e.g.
        ``model.pipeline.DeepFeatureCache``): on a full step the input of the last up block is kept under
        ``deep_cache_key``; otherwise only conv_in, the first down block and the last up block run, on the kept
        input (the deep blocks' output changes little between adjacent steps).
        """
        b, _, f, h, w = sample.shape
        x = rearrange(sample, "b c f h w -> (b f) c h w")  # frames fold into the batch: 2-D layers per frame
        temb = self._time_embedding(timestep, b, x).repeat_interleave(f, dim=0)
        cond = FrameConditioning(
            num_frames=f,
            audio=self._frame_audio(audio_tokens, b, f),
            reference=self._reference_dict(reference_features),
            reference_mask=self._check_mask(reference_frame_mask, b, f),
            reference_weight=reference_attention_weight,
            audio_weight=audio_attention_weight,
        )

        x = self.conv_in(x)
        if kps_features is not None:
            if kps_features.shape[0] != b or kps_features.shape[2] != f:
                raise ValueError(f"kps_features {tuple(kps_features.shape)} do not match sample {tuple(sample.shape)}")
            x = x + rearrange(kps_features, "b c f h w -> (b f) c h w").to(x.dtype)

        reuse = (deep_cache is not None and not deep_cache.full_step and deep_cache_key in deep_cache.features)
        if deep_cache is not None:
            deep_cache.last_was_shallow = reuse
        x = self._shallow_path(x, temb, cond, deep_cache.features[deep_cache_key]) if reuse else \
            self._full_path(x, temb, cond, deep_cache, deep_cache_key)

        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        out = rearrange(x, "(b f) c h w -> b c f h w", b=b)
        return UNet3DOutput(sample=out) if return_dict else (out,)

    def _full_path(self, x, temb, cond, deep_cache=None, deep_cache_key=None) -> torch.Tensor:
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb, cond)
            skips.extend(block_skips)
        x = self.mid_block(x, temb, cond)
        for i, block in enumerate(self.up_blocks):
            if deep_cache is not None and i == len(self.up_blocks) - 1:
                deep_cache.features[deep_cache_key] = x
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            upsample_size = skips[-1].shape[-2:] if skips else None
            x = block(x, block_skips, temb, cond, upsample_size)
        return x

    def _shallow_path(self, x, temb, cond, deep: torch.Tensor) -> torch.Tensor:
        """conv_in's output ``x`` -> the first down block's skips + the kept deep features -> the last up block."""
        _, block_skips = self.down_blocks[0](x, temb, cond)
        last = self.up_blocks[-1]
        skips = [x, *block_skips][:len(last.resnets)]  # not the first block's downsampled output
        return last(deep, skips, temb, cond, None)

    def _time_embedding(self, timestep: torch.Tensor | float | int, batch: int, like: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=like.device)
        if t.ndim == 0:
            t = t[None]
        t = t.expand(batch)
        return self.time_embedding(self.time_proj(t).to(dtype=like.dtype))

    @staticmethod
    def _frame_audio(audio_tokens: torch.Tensor | None, b: int, f: int) -> torch.Tensor | None:
        if audio_tokens is None:
            return None
        if audio_tokens.ndim != 4 or audio_tokens.shape[:2] != (b, f):
            raise ValueError(f"audio_tokens must be (b={b}, f={f}, n, D), got {tuple(audio_tokens.shape)}")
        return audio_tokens.reshape(b * f, *audio_tokens.shape[2:])

    @staticmethod
    def _check_mask(mask: torch.Tensor | None, b: int, f: int) -> torch.Tensor | None:
        if mask is not None and tuple(mask.shape) != (b, f):
            raise ValueError(f"reference_frame_mask must be (b={b}, f={f}), got {tuple(mask.shape)}")
        return mask
