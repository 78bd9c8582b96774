"""Initialise the V-Express UNets from local Stable Diffusion 1.5 / AnimateDiff weights (training stage I / II).

- SD1.5 (diffusers folder with ``unet/``): the UNet weights go into both the ReferenceNet (without
  ``conv_norm_out``) and the denoising UNet. As the official "moore_pretrained" mapping, the reference attention
  ``attn1_5``/``norm1_5`` start as copies of the self-attention ``attn1``/``norm1``, and the audio attention's
  ``attn2.to_out`` is zeroed (so the audio branch starts silent). Motion modules keep their init.
- AnimateDiff ``mm_sd_v15_v2.ckpt``: the ``*.motion_modules.*`` weights of the denoising UNet.

Every load is checked: an incompatible file raises an error listing missing / unexpected / mis-shaped keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from model.config import ModelConfig

log = logging.getLogger(__name__)

MOTION = "motion_modules."


class WeightsMismatchError(ValueError):
    """A weights file does not fit the module; the message lists the offending keys."""


def _describe(source: str, missing: list[str], unexpected: list[str], mismatched: list[str]) -> str:
    parts = [f"{source}: weights do not fit"]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched)):
        if keys:
            parts.append(f"{len(keys)} {label} (e.g. {keys[:5]})")
    return "; ".join(parts)


def load_checked(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
                 allow_missing: tuple[str, ...] = ()) -> None:
    """``module.load_state_dict`` that fails with a clear list of problems; keys containing one of
    ``allow_missing`` may be absent."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict and not any(a in k for a in allow_missing)]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
                  for k in state_dict if k in own and state_dict[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise WeightsMismatchError(_describe(source, missing, unexpected, mismatched))
    module.load_state_dict(dict(state_dict), strict=False)


# ---------------------------------------------------------------------------------------------- SD1.5
def sd15_unet_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """The UNet state dict of a local diffusers SD folder (``<folder>/unet`` or a bare unet folder)."""
    from diffusers import UNet2DConditionModel

    folder = Path(folder)
    unet_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    if not (unet_dir / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: not a diffusers Stable Diffusion folder (no unet/config.json)")
    return UNet2DConditionModel.from_pretrained(unet_dir).state_dict()


def denoising_unet_from_sd(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a 2-D SD UNet state dict onto the denoising UNet: attn1_5/norm1_5 copied from attn1/norm1."""
    mapped = dict(sd)
    for key, value in sd.items():
        if ".transformer_blocks." not in key:
            continue  # resnets also have norm1: only the transformer blocks' are copied
        for src, dst in ((".attn1.", ".attn1_5."), (".norm1.", ".norm1_5.")):
            if src in key:
                mapped[key.replace(src, dst)] = value.clone()
    return mapped


@torch.no_grad()
def zero_audio_out(denoising_unet: nn.Module) -> None:
    """Zero every transformer block's ``attn2.to_out`` (weight and bias): the audio branch starts silent."""
    for name, param in denoising_unet.named_parameters():
        if ".attn2.to_out." in name:
            param.zero_()


def init_from_sd15(reference_net: nn.Module, denoising_unet: nn.Module, folder: str | Path) -> None:
    sd = sd15_unet_state_dict(folder)
    load_checked(reference_net, {k: v for k, v in sd.items() if not k.startswith("conv_norm_out.")},
                 f"{folder} -> reference_net")
    load_checked(denoising_unet, denoising_unet_from_sd(sd), f"{folder} -> denoising_unet", allow_missing=(MOTION,))
    zero_audio_out(denoising_unet)
    log.info("initialised reference_net and denoising_unet from %s", folder)


# ---------------------------------------------------------------------------------------------- AnimateDiff
def motion_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The motion-module entries of a checkpoint, with any ``module.`` prefix removed."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if MOTION in key:
            out[key] = value
    return out


def load_motion_modules(denoising_unet: nn.Module, path: str | Path) -> None:
    """Load AnimateDiff (``mm_sd_v15_v2.ckpt``) or V-Express ``motion_module.bin`` weights into the motion modules."""
    from model.checkpoints import read_state_dict

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    weights = motion_state_dict(read_state_dict(path))
    own_motion = {k for k in denoising_unet.state_dict() if MOTION in k}
    if not weights:
        raise WeightsMismatchError(f"{path}: no '{MOTION}' keys in this file")
    missing = sorted(own_motion - set(weights))
    if missing:
        raise WeightsMismatchError(_describe(str(path), missing, [], []))
    load_checked(denoising_unet, weights, str(path), allow_missing=("",))  # non-motion keys stay as they are
    log.info("loaded %d motion-module tensors from %s", len(weights), path)


# ---------------------------------------------------------------------------------------------- from config
def init_from_pretrained_paths(modules: nn.Module, cfg: ModelConfig, motion_module: bool = False) -> None:
    """Apply ``cfg.pretrained.sd15`` (and, with ``motion_module``, ``cfg.pretrained.motion_module``) when set.

    The AnimateDiff weights are opt-in: officially they initialise stage II only (stage I trains with zeroed
    motion modules), so a stage-II run loads them after the stage-I weights.
    """
    if cfg.pretrained.sd15:
        if not Path(cfg.pretrained.sd15).is_dir():
            raise FileNotFoundError(f"model.pretrained.sd15: {cfg.pretrained.sd15} is not a folder")
        init_from_sd15(modules.reference_net, modules.denoising_unet, cfg.pretrained.sd15)
    if motion_module and cfg.pretrained.motion_module:
        if not Path(cfg.pretrained.motion_module).is_file():
            raise FileNotFoundError(f"model.pretrained.motion_module: {cfg.pretrained.motion_module} not found")
        load_motion_modules(modules.denoising_unet, cfg.pretrained.motion_module)
