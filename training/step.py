"""One training step's pieces: the module DeepSpeed wraps, and batch -> model inputs.

:class:`VExpressTrainModule` runs reference net, V-Kps guider, audio projection and denoising UNet in one
``forward`` (so DeepSpeed's engine sees one module and handles precision/partitioning for all of them) and
applies the condition masks from :mod:`training.dropout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from training.config import TrainConfig
from training.dropout import ConditionMasks, sample_condition_masks
from training.losses import add_noise_and_velocity, min_snr_weights, offset_noise


class VExpressTrainModule(nn.Module):
    def __init__(self, modules: nn.Module) -> None:
        super().__init__()
        self.vexpress = modules

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, reference_latents: torch.Tensor,
                vkps: torch.Tensor, audio: torch.Tensor, reference_mask: torch.Tensor, kps_mask: torch.Tensor,
                audio_mask: torch.Tensor) -> torch.Tensor:
        m = self.vexpress
        dtype = next(m.denoising_unet.parameters()).dtype
        reference_features = m.reference_net(reference_latents.to(dtype), timestep=0)
        kps_features = m.v_kps_guider(vkps.to(dtype)) * kps_mask.to(dtype)[:, None, :, None, None]
        audio_tokens = m.audio_projection(audio.to(dtype)) * audio_mask.to(dtype)[:, None, None, None]
        return m.denoising_unet(noisy.to(dtype), timesteps, audio_tokens=audio_tokens,
                                reference_features=reference_features, kps_features=kps_features,
                                reference_frame_mask=reference_mask.to(dtype)).sample


@dataclass
class StepInputs:
    model_inputs: dict[str, torch.Tensor]  # keyword arguments of VExpressTrainModule.forward
    target: torch.Tensor  # v target (b, 4, f, h, w)
    mouth_mask: torch.Tensor  # (b, 1, f, h, w)
    sample_weights: torch.Tensor  # (b,) min-SNR weights (ones when disabled)
    masks: ConditionMasks


@torch.no_grad()
def encode_latents(vae: nn.Module, frames: torch.Tensor, scaling: float) -> torch.Tensor:
    """(b, 3, f, H, W) or (b, 3, H, W) in [-1, 1] -> latents (posterior mean x scaling), same layout."""
    video = frames.ndim == 5
    if video:
        b, c, f, h, w = frames.shape
        frames = frames.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    dtype = next(vae.parameters()).dtype
    latents = vae.encode(frames.to(dtype)).latent_dist.mean.float() * scaling
    if video:
        latents = latents.reshape(b, f, *latents.shape[1:]).permute(0, 2, 1, 3, 4)
    return latents


def make_step_inputs(batch: dict[str, Any], vae: nn.Module | None, alphas_cumprod: torch.Tensor, cfg: TrainConfig,
                     generator: torch.Generator, device: torch.device, scaling: float) -> StepInputs:
    """Latents (given or VAE-encoded), offset noise, timesteps, v target, condition masks -- all from ``generator``."""
    target, reference = batch["target"].to(device), batch["reference"].to(device)
    if not batch["is_latent"]:
        if vae is None:
            raise ValueError("batch holds frames but no VAE was built to encode them")
        target, reference = encode_latents(vae, target, scaling), encode_latents(vae, reference, scaling)
    b, _, f = target.shape[:3]
    noise = offset_noise(tuple(target.shape), cfg.noise_offset, generator).to(device)
    timesteps = torch.randint(0, len(alphas_cumprod), (b,), generator=generator).to(device)
    noisy, velocity = add_noise_and_velocity(alphas_cumprod, target, noise, timesteps)
    masks = sample_condition_masks(b, f, cfg.stage, cfg.uncond_ratio, cfg.reference_drop_rate, cfg.kps_drop_rate,
                                   generator)
    audio_keep = masks.audio * batch["has_audio"].float()
    model_inputs = {
        "noisy": noisy, "timesteps": timesteps, "reference_latents": reference,
        "vkps": batch["vkps"].to(device), "audio": batch["audio"].to(device),
        "reference_mask": masks.reference.to(device), "kps_mask": masks.kps.to(device),
        "audio_mask": audio_keep.to(device),
    }
    weights = min_snr_weights(alphas_cumprod, timesteps.cpu(), cfg.min_snr_gamma).to(device)
    return StepInputs(model_inputs=model_inputs, target=velocity, mouth_mask=batch["mouth_mask"].to(device),
                      sample_weights=weights, masks=masks)
