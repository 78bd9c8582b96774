"""Which parameters each training stage trains (the one staged-freezing API; paper §3.4, official train.py).

- Stage I (single frames): ReferenceNet except ``up_blocks.3``, the V-Kps guider, and the denoising UNet's
  spatial layers, i.e. without its audio attention (``attn2`` + ``norm2`` of each transformer block) and without
  its motion modules.
- Stage II (video clips): the audio projection, the denoising UNet's audio attention layers (+ their norms) and
  the motion modules.
- Stage III: everything except ReferenceNet ``up_blocks.3``.

ReferenceNet ``up_blocks.3`` (the 320-channel decoder level) stays frozen in every stage, as the official training
does (:data:`FROZEN_IN_EVERY_STAGE`). Its transformer blocks still write reference features, from their pretrained
weights.

Names are the full names of :class:`model.build.VExpressModules`' ``named_parameters()``
(``denoising_unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q.weight``).
"""

from __future__ import annotations

import re

from torch import nn

STAGES = (1, 2, 3)

# A transformer block's audio attention and its pre-norm (resnets' norm2 are not matched).
_AUDIO = re.compile(r"\.transformer_blocks\.\d+\.(attn2|norm2)\.")
_MOTION = ".motion_modules."


def parameter_group(name: str) -> str:
    """The group a full parameter name belongs to (for counts and logging)."""
    module, _, key = name.partition(".")
    if module == "denoising_unet":
        if _MOTION in f".{key}":
            return "denoising_unet.motion"
        if _AUDIO.search(f".{key}"):
            return "denoising_unet.audio"
        return "denoising_unet.spatial"
    if module == "reference_net" and key.startswith("up_blocks.3."):
        return "reference_net.up_blocks.3"
    return module


STAGE_GROUPS: dict[int, frozenset[str]] = {
    1: frozenset({"reference_net", "v_kps_guider", "denoising_unet.spatial"}),
    2: frozenset({"audio_projection", "denoising_unet.audio", "denoising_unet.motion"}),
    3: frozenset({"reference_net", "v_kps_guider", "audio_projection",
                  "denoising_unet.spatial", "denoising_unet.audio", "denoising_unet.motion"}),
}
FROZEN_IN_EVERY_STAGE = frozenset({"reference_net.up_blocks.3"})


def _check_stage(stage: int) -> None:
    if stage not in STAGES:
        raise ValueError(f"training stage must be one of {STAGES}, got {stage!r}")


def trainable_parameter_names(modules: nn.Module, stage: int) -> set[str]:
    """Full names of the parameters ``stage`` trains."""
    _check_stage(stage)
    groups = STAGE_GROUPS[stage]
    return {name for name, _ in modules.named_parameters() if parameter_group(name) in groups}


def set_trainable(modules: nn.Module, stage: int) -> dict[str, int]:
    """Set ``requires_grad`` for ``stage``; return ``{group: trainable element count}`` (frozen groups absent)."""
    names = trainable_parameter_names(modules, stage)
    counts: dict[str, int] = {}
    for name, param in modules.named_parameters():
        param.requires_grad_(name in names)
        if name in names:
            group = parameter_group(name)
            counts[group] = counts.get(group, 0) + param.numel()
    return counts
