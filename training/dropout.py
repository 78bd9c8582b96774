"""Condition dropout: classifier-free-guidance dropout and the paper's per-frame conditional dropout.

* CFG dropout (``uncond_ratio``, default 10 %): per sample, all conditions are dropped together -- the
  reference features, the V-Kps features and the audio tokens are zeroed (as the official training and the
  unconditional branch at inference).
* Conditional dropout (stages II/III only): per frame, the reference features are zeroed with p =
  ``reference_drop_rate`` (through the denoising UNet's ``reference_frame_mask``) and the V-Kps features with
  p = ``kps_drop_rate``, independently.

Masks are *keep* masks (1 = condition present, 0 = dropped), float, so they multiply features directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ConditionMasks:
    reference: torch.Tensor  # (b, f) keep mask for the reference features
    kps: torch.Tensor  # (b, f) keep mask for the V-Kps features
    audio: torch.Tensor  # (b,) keep mask for the audio tokens
    uncond: torch.Tensor  # (b,) True where CFG dropped every condition


def sample_condition_masks(batch: int, frames: int, stage: int, uncond_ratio: float, reference_drop_rate: float,
                           kps_drop_rate: float, generator: torch.Generator | None = None) -> ConditionMasks:
    uncond = torch.rand(batch, generator=generator) < uncond_ratio
    keep = (~uncond).float()
    reference = keep[:, None].repeat(1, frames)
    kps = reference.clone()
    if stage >= 2:
        reference = reference * (torch.rand(batch, frames, generator=generator) >= reference_drop_rate).float()
        kps = kps * (torch.rand(batch, frames, generator=generator) >= kps_drop_rate).float()
    return ConditionMasks(reference=reference, kps=kps, audio=keep.clone(), uncond=uncond)
