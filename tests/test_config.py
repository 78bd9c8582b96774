"""Config tree: defaults <- YAML <- dot-list, round-trip and validation."""

from __future__ import annotations

import pytest

from infra.config import ConfigError, dump_config, flatten, load_config
from infra.config_tree import VExpressConfig


def test_yaml_with_override_round_trips(tmp_path):
    cfg = load_config(VExpressConfig, "tiny/stage2", ["train.lr=3e-4", "data.num_frames=8"])
    assert cfg.train.stage == 2 and cfg.train.lr == pytest.approx(3e-4) and cfg.data.num_frames == 8
    dumped = tmp_path / "cfg.yaml"
    dumped.write_text(dump_config(cfg))
    again = load_config(VExpressConfig, dumped)
    assert again == cfg


def test_stage_configs_are_stage_one_plus_named_changes():
    s1 = load_config(VExpressConfig, "tiny/stage1")
    s3 = load_config(VExpressConfig, "tiny/stage3")
    diff = {k for k, v in flatten(s3).items() if flatten(s1)[k] != v}
    assert diff == {"train.stage", "train.init_from", "train.output_dir", "data.num_frames"}


def test_sd15_preset_has_official_widths():
    cfg = load_config(VExpressConfig, "sd15/stage3")
    assert cfg.model.block_out_channels == [320, 640, 1280, 1280] and cfg.model.cross_attention_dim == 768
    assert cfg.model.audio_tokens_in == 10 and cfg.model.latent_size == 64


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.lr=-1", "train.lr"),
        ("train.stage=4", "train.stage"),
        ("train.kps_drop_rate=1.5", "train.kps_drop_rate"),
        ("model.resolution=100", "model.resolution"),
        ("inference.context_overlap=40", "inference.context_overlap"),
        ("preprocess.face_backend=dlib", "preprocess.face_backend"),
    ],
)
def test_bad_value_names_the_field(override, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        load_config(VExpressConfig, "tiny/stage1", [override])


def test_unknown_key_and_bad_type_are_clear_errors():
    with pytest.raises(ConfigError, match="no_such_key"):
        load_config(VExpressConfig, None, ["train.no_such_key=1"])
    with pytest.raises(ConfigError, match="lr"):
        load_config(VExpressConfig, None, ["train.lr=fast"])
    with pytest.raises(ConfigError, match="not found|no such"):
        load_config(VExpressConfig, "does/not/exist.yaml")
