"""Build the V-Express modules, the VAE and the noise schedulers from a :class:`model.config.ModelConfig`.

``sd15`` builds exactly the official shapes (see tests/model/test_official_keys.py); ``tiny`` keeps the topology
with small widths. Random initialisation is seeded, so two builds of the same config are identical.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from torch import nn

from model.audio_projection import AudioProjection
from model.config import ModelConfig
from model.reference_net import VExpressReferenceNet
from model.unet_3d import VExpressDenoisingUNet
from model.v_kps_guider import VKpsGuider


class VExpressModules(nn.Module):
    """The four trained V-Express modules; ``named_parameters()`` names are ``<module>.<key>``."""

    def __init__(self, reference_net: VExpressReferenceNet, denoising_unet: VExpressDenoisingUNet,
                 v_kps_guider: VKpsGuider, audio_projection: AudioProjection) -> None:
        super().__init__()
        self.reference_net = reference_net
        self.denoising_unet = denoising_unet
        self.v_kps_guider = v_kps_guider
        self.audio_projection = audio_projection

    def enable_gradient_checkpointing(self) -> None:
        """Checkpoint the two UNets per layer (the guider and the audio projection are small: not needed)."""
        self.reference_net.enable_gradient_checkpointing()
        self.denoising_unet.enable_gradient_checkpointing()

    def disable_gradient_checkpointing(self) -> None:
        self.reference_net.disable_gradient_checkpointing()
        self.denoising_unet.disable_gradient_checkpointing()


# ---------------------------------------------------------------------------------------------- modules
def unet_kwargs(cfg: ModelConfig) -> dict:
    """Settings shared by the ReferenceNet and the denoising UNet (SD1.5 unet/config.json for sd15)."""
    return dict(in_channels=cfg.in_channels, out_channels=cfg.out_channels,
                block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
                attention_head_dim=cfg.attention_head_dim, norm_num_groups=cfg.norm_num_groups,
                cross_attention_dim=cfg.cross_attention_dim)


def build_reference_net(cfg: ModelConfig) -> VExpressReferenceNet:
    return VExpressReferenceNet(sample_size=cfg.latent_size, **unet_kwargs(cfg))


def build_denoising_unet(cfg: ModelConfig) -> VExpressDenoisingUNet:
    return VExpressDenoisingUNet(**unet_kwargs(cfg), motion_num_attention_heads=cfg.motion_num_attention_heads,
                                 motion_max_len=cfg.motion_max_len)


def build_v_kps_guider(cfg: ModelConfig) -> VKpsGuider:
    return VKpsGuider(conditioning_embedding_channels=cfg.block_out_channels[0],
                      block_out_channels=tuple(cfg.kps_guider_channels))


def build_audio_projection(cfg: ModelConfig) -> AudioProjection:
    return AudioProjection(dim=cfg.audio_embed_dim, depth=cfg.audio_proj_depth, dim_head=cfg.audio_proj_dim_head,
                           heads=cfg.audio_proj_heads, num_queries=cfg.audio_num_queries,
                           embedding_dim=cfg.audio_embed_dim, output_dim=cfg.cross_attention_dim,
                           max_seq_len=cfg.audio_tokens_in)


@contextlib.contextmanager
def _seeded(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_modules(cfg: ModelConfig, device: str | torch.device = "cpu", *, pretrained: bool = True,
                  seed: int = 0) -> VExpressModules:
    """All four modules on ``device`` ("meta" allocates nothing: key/shape listing).

    With ``pretrained`` (and a real device), ``cfg.pretrained.sd15`` initialises both UNets (see
    :mod:`model.pretrained`). AnimateDiff motion weights (stage II) are loaded by
    ``model.pretrained.load_motion_modules``; V-Express checkpoints by :mod:`model.checkpoints`.
    """
    device = torch.device(device)
    with torch.device(device), _seeded(seed):
        modules = VExpressModules(build_reference_net(cfg), build_denoising_unet(cfg), build_v_kps_guider(cfg),
                                  build_audio_projection(cfg))
    if pretrained and device.type != "meta":
        from model.pretrained import init_from_pretrained_paths

        init_from_pretrained_paths(modules, cfg)
    return modules


# ---------------------------------------------------------------------------------------------- VAE
def _vae_path(cfg: ModelConfig) -> tuple[str, Path] | None:
    if cfg.pretrained.vae:
        return "model.pretrained.vae", Path(cfg.pretrained.vae)
    if cfg.pretrained.sd15:
        return "model.pretrained.sd15 (vae/ subfolder)", Path(cfg.pretrained.sd15) / "vae"
    return None


def build_vae(cfg: ModelConfig, seed: int = 0) -> AutoencoderKL:
    """The SD VAE from ``cfg.pretrained.vae`` (or ``<sd15>/vae``), else a small random one (seeded)."""
    found = _vae_path(cfg)
    if found is not None:
        field_name, path = found
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{field_name}: {path} is not a diffusers AutoencoderKL folder (no config.json)")
        return AutoencoderKL.from_pretrained(path)
    channels = tuple(cfg.vae_block_out_channels)
    groups = min(32, math.gcd(*channels))
    with _seeded(seed):
        return AutoencoderKL(
            in_channels=3, out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(channels),
            up_block_types=("UpDecoderBlock2D",) * len(channels),
            block_out_channels=channels, layers_per_block=2 if cfg.preset == "sd15" else 1,
            latent_channels=cfg.vae_latent_channels, norm_num_groups=groups, sample_size=cfg.resolution,
            scaling_factor=cfg.vae_scaling_factor, mid_block_add_attention=cfg.vae_mid_attention,
        )
