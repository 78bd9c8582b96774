"""Initialisation from a local SD1.5 diffusers folder (tiny random UNet) and AnimateDiff motion weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import UNet2DConditionModel

from model.build import build_modules
from model.config import ModelConfig, PretrainedPaths
from model.pretrained import WeightsMismatchError, init_from_sd15, load_motion_modules
from model.reference_net import DOWN_BLOCK_TYPES, UP_BLOCK_TYPES

CFG = ModelConfig()


def _sd_unet(cross_attention_dim: int = CFG.cross_attention_dim) -> UNet2DConditionModel:
    torch.manual_seed(42)
    return UNet2DConditionModel(
        sample_size=CFG.latent_size, block_out_channels=tuple(CFG.block_out_channels),
        layers_per_block=CFG.layers_per_block, attention_head_dim=CFG.attention_head_dim,
        norm_num_groups=CFG.norm_num_groups, cross_attention_dim=cross_attention_dim,
        down_block_types=DOWN_BLOCK_TYPES, up_block_types=UP_BLOCK_TYPES)


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd15")
    unet = _sd_unet()
    unet.save_pretrained(folder / "unet")
    return folder, unet.state_dict()


def test_init_from_sd15_folder(sd_folder):
    folder, sd = sd_folder
    modules = build_modules(dataclasses.replace(CFG, pretrained=PretrainedPaths(sd15=str(folder))))
    ref, den = modules.reference_net.state_dict(), modules.denoising_unet.state_dict()
    assert "conv_norm_out.weight" not in ref
    for key, value in sd.items():
        if not key.startswith("conv_norm_out."):
            assert torch.equal(ref[key], value), f"reference_net.{key}"
        if ".attn2.to_out." in key:
            assert not den[key].any(), f"audio attention out-projection must start at zero: {key}"
        else:
            assert torch.equal(den[key], value), f"denoising_unet.{key}"
        if ".transformer_blocks." in key and (".attn1." in key or ".norm1." in key):
            copy = key.replace(".attn1.", ".attn1_5.").replace(".norm1.", ".norm1_5.")
            assert torch.equal(den[copy], value), f"{copy} must start as a copy of {key}"
    proj_out = [v for k, v in den.items() if k.endswith("temporal_transformer.proj_out.weight")]
    assert proj_out and not any(v.any() for v in proj_out), "motion modules keep their zero init"


def test_sd_folder_with_other_cross_attention_width_is_rejected(tmp_path):
    _sd_unet(cross_attention_dim=48).save_pretrained(tmp_path / "unet")
    modules = build_modules(CFG, pretrained=False)
    with pytest.raises(WeightsMismatchError, match="mis-shaped"):
        init_from_sd15(modules.reference_net, modules.denoising_unet, tmp_path)


def test_missing_sd_folder_names_the_field(tmp_path):
    cfg = dataclasses.replace(CFG, pretrained=PretrainedPaths(sd15=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="model.pretrained.sd15"):
        build_modules(cfg)


def _animatediff_checkpoint(unet, path, prefix="module.", wrap=True, drop=None):
    g = torch.Generator().manual_seed(5)
    weights = {f"{prefix}{k}": torch.randn(v.shape, generator=g)
               for k, v in unet.state_dict().items() if "motion_modules" in k and k != drop}
    torch.save({"state_dict": weights} if wrap else weights, path)
    return {k.removeprefix(prefix): v for k, v in weights.items()}


@pytest.mark.parametrize(("prefix", "wrap"), [("module.", True), ("", False)])
def test_load_animatediff_motion_modules(tmp_path, prefix, wrap):
    unet = build_modules(CFG, pretrained=False).denoising_unet
    before = {k: v.clone() for k, v in unet.state_dict().items() if "motion_modules" not in k}
    weights = _animatediff_checkpoint(unet, tmp_path / "mm.ckpt", prefix, wrap)
    load_motion_modules(unet, tmp_path / "mm.ckpt")
    state = unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())
    assert all(torch.equal(state[k], v) for k, v in before.items())


def test_incomplete_motion_checkpoint_lists_missing_keys(tmp_path):
    unet = build_modules(CFG, pretrained=False).denoising_unet
    drop = "mid_block.motion_modules.0.temporal_transformer.proj_out.weight"
    _animatediff_checkpoint(unet, tmp_path / "mm.ckpt", drop=drop)
    with pytest.raises(WeightsMismatchError, match="missing") as err:
        load_motion_modules(unet, tmp_path / "mm.ckpt")
    assert drop in str(err.value)
