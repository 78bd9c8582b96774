"""One training step's pieces: the module DeepSpeed wraps, and batch -> model inputs.

:class:`VExpressTrainModule` runs reference net, V-Kps guider, audio projection and denoising UNet in one
``forward`` (so DeepSpeed's engine sees one module and handles precision/partitioning for all of them) and
applies the condition masks from :mod:`training.dropout`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from training.config import TrainConfig
from training.dropout import ConditionMasks, sample_condition_masks
from training.losses import add_noise_and_velocity, min_snr_weights, offset_noise

log = logging.getLogger(__name__)


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
def encode_latents(vae: nn.Module, frames: torch.Tensor, scaling: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """(b, 3, f, H, W) or (b, 3, H, W) in [-1, 1] -> latents x scaling, same layout: a draw from the VAE posterior
    when ``generator`` is given (as the official training), else its mean."""
    video = frames.ndim == 5
    if video:
        b, c, f, h, w = frames.shape
        frames = frames.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    dtype = next(vae.parameters()).dtype
    posterior = vae.encode(frames.to(dtype)).latent_dist
    latents = posterior.mean.float()
    if generator is not None:
        latents = latents + posterior.std.float() * _randn_like(latents, generator)
    latents = latents * scaling
    if video:
        latents = latents.reshape(b, f, *latents.shape[1:]).permute(0, 2, 1, 3, 4)
    return latents


def _randn_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator).to(x.device, x.dtype)  # CPU generator: same draws on any device


def sample_posterior(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``mean + std * eps`` for stored (already scaled) posterior moments."""
    return mean + std.to(mean) * _randn_like(mean, generator)


def step_latents(batch: dict[str, Any], vae: nn.Module | None, cfg: TrainConfig, generator: torch.Generator,
                 device: torch.device, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Target and reference latents for one step, per ``train.latent_sampling`` (posterior draw or mean)."""
    target, reference = batch["target"].to(device), batch["reference"].to(device)
    sample = cfg.latent_sampling == "sample"
    if not batch["is_latent"]:
        if vae is None:
            raise ValueError("batch holds frames but no VAE was built to encode them")
        g = generator if sample else None
        return encode_latents(vae, target, scaling, g), encode_latents(vae, reference, scaling, g)
    if sample and "target_std" in batch:
        if not bool(batch["latent_std_known"].all()):
            _warn_once("nostd", "train.latent_sampling=sample, but some shards store only the posterior mean "
                                "(format v1, or written without latents_std): those samples train on the mean")
        target = sample_posterior(target, batch["target_std"].to(device), generator)
        reference = sample_posterior(reference, batch["reference_std"].to(device), generator)
    return target, reference


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def make_step_inputs(batch: dict[str, Any], vae: nn.Module | None, alphas_cumprod: torch.Tensor, cfg: TrainConfig,
                     generator: torch.Generator, device: torch.device, scaling: float) -> StepInputs:
    """Latents (stored or VAE-encoded; posterior draw or mean), offset noise, timesteps, v target, condition masks
    -- all from ``generator``."""
    target, reference = step_latents(batch, vae, cfg, generator, device, scaling)
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
    weights = min_snr_weights(alphas_cumprod, timesteps.cpu(), cfg.min_snr_gamma, cfg.min_snr_form).to(device)
    return StepInputs(model_inputs=model_inputs, target=velocity, mouth_mask=batch["mouth_mask"].to(device),
                      sample_weights=weights, masks=masks)
