"""Stage parameter groups (model.stages) on the real-size modules (meta device) and the tiny ones."""

from __future__ import annotations

import re

import pytest

from infra.config_tree import load
from model.build import build_modules
from model.config import ModelConfig
from model.stages import FROZEN_IN_EVERY_STAGE, STAGE_GROUPS, parameter_group, set_trainable, trainable_parameter_names

AUDIO = re.compile(r"^denoising_unet\..*\.transformer_blocks\.\d+\.(attn2|norm2)\.")


@pytest.fixture(scope="module")
def sd15():
    return build_modules(load("sd15/stage1").model, device="meta")


def _by_rule(name: str, stage: int) -> bool:
    """The stage rules written out independently of model.stages."""
    module = name.split(".")[0]
    motion, audio = ".motion_modules." in name, bool(AUDIO.match(name))
    if name.startswith("reference_net.up_blocks.3."):
        return False  # frozen in every stage, as the official training
    if stage == 1:
        if module == "reference_net":
            return True
        if module == "denoising_unet":
            return not (motion or audio)
        return module == "v_kps_guider"
    if stage == 2:
        return module == "audio_projection" or (module == "denoising_unet" and (motion or audio))
    return True


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_stage_sets_follow_the_rules(sd15, stage):
    names = [n for n, _ in sd15.named_parameters()]
    assert trainable_parameter_names(sd15, stage) == {n for n in names if _by_rule(n, stage)}


def test_stage_sets_disjoint_and_cover(sd15):
    s1, s2, s3 = (trainable_parameter_names(sd15, s) for s in (1, 2, 3))
    everything = {n for n, _ in sd15.named_parameters()}
    assert not s1 & s2
    frozen_officially = {n for n in everything if n.startswith("reference_net.up_blocks.3.")}
    assert len(frozen_officially) == 114  # 3 resnets + 3 transformers (attentions) of the 320-channel level
    assert s3 == everything - frozen_officially == s1 | s2
    assert not frozen_officially & (s1 | s2 | s3)


def test_stage_counts_sd15(sd15):
    params = dict(sd15.named_parameters())
    s2 = trainable_parameter_names(sd15, 2)
    audio_names = [n for n in s2 if AUDIO.match(n)]
    assert len(audio_names) == 16 * 7  # 16 transformer blocks x (attn2 q,k,v,out.w,out.b + norm2 w,b)
    widths = [320] * 5 + [640] * 5 + [1280] * 6  # transformer blocks per width (down 2, mid 1, up 3 each)
    expected_audio = sum(c * c + 2 * c * 768 + c * c + c + 2 * c for c in widths)
    assert sum(params[n].numel() for n in audio_names) == expected_audio
    counts = set_trainable(sd15, 2)
    assert counts == {"audio_projection": 29_524_224, "denoising_unet.motion": 453_209_280,
                      "denoising_unet.audio": expected_audio}
    counts1 = set_trainable(sd15, 1)
    up3 = sum(p.numel() for n, p in params.items() if n.startswith("reference_net.up_blocks.3."))
    assert counts1["reference_net"] == 859_520_324 - up3
    assert counts1["v_kps_guider"] == 1_086_480
    # denoising UNet params = 1,363,537,604 - 1,208,320 pe buffers
    assert counts1["denoising_unet.spatial"] == 1_362_329_284 - 453_209_280 - expected_audio
    counts3 = set_trainable(sd15, 3)
    assert "reference_net.up_blocks.3" not in counts3 and counts3["reference_net"] == counts1["reference_net"]
    assert sum(counts3.values()) == sum(p.numel() for p in params.values()) - up3
    assert sum(counts3.values()) == sum(counts1.values()) + sum(counts.values())


def test_set_trainable_sets_requires_grad():
    modules = build_modules(ModelConfig(), pretrained=False)
    for stage in (1, 2, 3):
        set_trainable(modules, stage)
        wanted = trainable_parameter_names(modules, stage)
        assert {n for n, p in modules.named_parameters() if p.requires_grad} == wanted


def test_groups_and_bad_stage():
    assert parameter_group("denoising_unet.down_blocks.0.resnets.0.norm2.weight") == "denoising_unet.spatial"
    assert parameter_group("denoising_unet.mid_block.attentions.0.transformer_blocks.0.norm2.bias") == \
        "denoising_unet.audio"
    assert parameter_group("reference_net.up_blocks.3.attentions.0.norm.weight") == "reference_net.up_blocks.3"
    assert set(STAGE_GROUPS[1]) & set(STAGE_GROUPS[2]) == set()
    assert all(not (FROZEN_IN_EVERY_STAGE & groups) for groups in STAGE_GROUPS.values())
    with pytest.raises(ValueError, match="stage"):
        trainable_parameter_names(build_modules(ModelConfig(), device="meta"), 4)
