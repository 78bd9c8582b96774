"""Diffusion objective: v-prediction on the zero-terminal-SNR schedule, noise offset, min-SNR, mouth weight.

The schedule is the official one (``model.schedulers.build_noise_scheduler("ddim")``: scaled-linear betas rescaled to
zero terminal SNR, v-prediction). The loss is a per-element weighted MSE:

    weight map  m = 1 + (mouth_loss_weight - 1) * mouth_mask        (mouth_mask in latent space, in [0, 1])
    loss_i      = mean_{c,f,h,w}( m * (pred - v)^2 ) * s_i           (s_i = min-SNR weight, 1 when disabled)
    loss        = mean_i loss_i

so the mouth region counts ``mouth_loss_weight`` times as much as the rest (the paper's mouth loss weight).

Min-SNR weighting (Hang et al., 2023) comes in two forms for v-prediction (:data:`MIN_SNR_FORMS`):

* ``official`` (the V-Express and Moore-AnimateAnyone training code): ``min(SNR + 1, gamma) / (SNR + 1)``.
  It is 1 wherever ``SNR + 1 <= gamma`` -- including the zero-SNR terminal step -- and only damps the
  low-noise steps.
* ``diffusers`` (diffusers' example scripts): ``min(SNR, gamma) / (SNR + 1)``, which also goes to 0 as SNR -> 0,
  so the high-noise half of the schedule hardly trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossTerms:
    total: torch.Tensor  # the optimised scalar
    mouth: torch.Tensor  # plain MSE over the mouth region only (for logging; 0 when there is no mouth pixel)


def offset_noise(shape: tuple[int, ...], noise_offset: float, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Gaussian noise plus ``noise_offset`` x a per-(sample, channel) constant (shape (b, c, 1, ...))."""
    noise = torch.randn(shape, generator=generator, device=device)
    if noise_offset > 0:
        per_channel = torch.randn(shape[:2] + (1,) * (len(shape) - 2), generator=generator, device=device)
        noise = noise + noise_offset * per_channel
    return noise


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1)))


def add_noise_and_velocity(alphas_cumprod: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor,
                           timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x_t = sqrt(a) x0 + sqrt(1-a) eps`` and the v target ``sqrt(a) eps - sqrt(1-a) x0`` (diffusers' formulas)."""
    a = alphas_cumprod.to(latents.device, torch.float32)[timesteps]
    sqrt_a = _expand(a.sqrt(), latents)
    sqrt_1ma = _expand((1 - a).sqrt(), latents)
    noisy = sqrt_a * latents + sqrt_1ma * noise
    velocity = sqrt_a * noise - sqrt_1ma * latents
    return noisy, velocity


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod.to(torch.float32)[timesteps.cpu()].to(timesteps.device)
    return a / (1 - a).clamp_min(1e-12)


MIN_SNR_FORMS = ("official", "diffusers")


def min_snr_weights(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float,
                    form: str = "official") -> torch.Tensor:
    """Per-sample min-SNR weights for v-prediction in ``form`` (see the module docstring); ones when ``gamma == 0``."""
    if form not in MIN_SNR_FORMS:
        raise ValueError(f"min-SNR form must be one of {MIN_SNR_FORMS}, got {form!r}")
    if gamma <= 0:
        return torch.ones(timesteps.shape[0], device=timesteps.device)
    s = snr(alphas_cumprod, timesteps)
    capped = s + 1 if form == "official" else s
    return torch.minimum(capped, torch.full_like(s, gamma)) / (s + 1)


def mouth_weight_map(mouth_mask: torch.Tensor, mouth_loss_weight: float) -> torch.Tensor:
    return 1.0 + (mouth_loss_weight - 1.0) * mouth_mask


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, mouth_mask: torch.Tensor, mouth_loss_weight: float,
                   sample_weights: torch.Tensor | None = None) -> LossTerms:
    """Mouth-weighted MSE. ``pred``/``target`` (b, c, f, h, w); ``mouth_mask`` (b, 1, f, h, w) broadcast over c."""
    pred, target, mouth_mask = pred.float(), target.float(), mouth_mask.float()
    err = (pred - target) ** 2
    weighted = (mouth_weight_map(mouth_mask, mouth_loss_weight) * err).flatten(1).mean(1)
    if sample_weights is not None:
        weighted = weighted * sample_weights.float()
    mask = mouth_mask.expand_as(err)
    mouth = (err * mask).sum() / mask.sum().clamp_min(1.0)
    return LossTerms(total=weighted.mean(), mouth=mouth.detach())
