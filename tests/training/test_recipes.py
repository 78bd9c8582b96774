"""Recipe presets: configs/sd15 is the paper, configs/sd15-official the released training configs, each stage a base
plus named changes."""

from __future__ import annotations

import pytest

from infra.config import flatten
from infra.config_tree import load

# The released training_configs/stage_{1,2,3}.yaml, in our field names.
OFFICIAL = {
    "train.lr": 1e-6, "train.weight_decay": 1e-2, "train.max_grad_norm": 1.0, "train.noise_offset": 0.05,
    "train.min_snr_gamma": 5.0, "train.min_snr_form": "official", "train.uncond_ratio": 0.1,
    "train.reference_drop_rate": 0.0, "train.kps_drop_rate": 0.0, "train.mouth_loss_weight": 1.0,
    "train.latent_sampling": "sample", "train.precision": "fp16", "data.horizontal_flip": 0.5,
    "data.reference_min_distance": 30, "train.checkpoint_every": 5000,
}
OFFICIAL_BY_STAGE = {  # frames, batch per GPU, steps, gradient checkpointing
    1: {"data.num_frames": 1, "train.batch_size": 8, "train.max_steps": 40000, "train.gradient_checkpointing": False},
    2: {"data.num_frames": 20, "train.batch_size": 1, "train.max_steps": 300000, "train.gradient_checkpointing": True},
    3: {"data.num_frames": 8, "train.batch_size": 1, "train.max_steps": 100000, "train.gradient_checkpointing": False},
}
PAPER = {"train.reference_drop_rate": 0.2, "train.kps_drop_rate": 0.5, "train.mouth_loss_weight": 100.0}


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_official_preset_has_the_released_values(stage):
    cfg = flatten(load(f"sd15-official/stage{stage}"))
    for key, value in {**OFFICIAL, **OFFICIAL_BY_STAGE[stage], "train.stage": stage}.items():
        assert cfg[key] == pytest.approx(value), key


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_paper_preset_keeps_the_paper_values(stage):
    cfg = flatten(load(f"sd15/stage{stage}"))
    for key, value in PAPER.items():
        assert cfg[key] == value, key
    assert cfg["data.num_frames"] == (1 if stage == 1 else 12)
    assert (cfg["train.min_snr_gamma"], cfg["train.min_snr_form"], cfg["train.latent_sampling"]) == \
        (5.0, "official", "sample")


def test_official_stages_are_stage_one_plus_named_changes():
    s1, s2, s3 = (flatten(load(f"sd15-official/stage{s}")) for s in (1, 2, 3))
    assert {k for k in s1 if s2[k] != s1[k]} == {"train.stage", "train.init_from", "train.output_dir",
                                                 "data.num_frames", "train.max_steps", "train.batch_size",
                                                 "train.gradient_checkpointing", "train.seed"}
    assert {k for k in s2 if s3[k] != s2[k]} == {"train.stage", "train.init_from", "train.output_dir",
                                                 "data.num_frames", "train.max_steps",
                                                 "train.gradient_checkpointing"}
    paper = flatten(load("sd15/stage1"))
    assert s1["model.block_out_channels"] == paper["model.block_out_channels"]  # same model, other recipe
