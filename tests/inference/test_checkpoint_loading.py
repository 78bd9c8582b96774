"""The inference loader takes our safetensors checkpoints and the official five-file .bin layout."""

import pytest
import torch

from model.build import build_modules
from model.checkpoints import save_vexpress_weights
from model.pipeline_loading import load_pipeline


@pytest.mark.parametrize("fmt,dtype", [("safetensors", None), ("bin", torch.float16)])
def test_load_checkpoint_folder(tiny_cfg, tmp_path, fmt, dtype):
    trained = build_modules(tiny_cfg.model, seed=123)  # differs from the loader's own seeded init
    save_vexpress_weights(trained, tmp_path / "weights", dtype=dtype, file_format=fmt)
    pipe = load_pipeline(tiny_cfg, checkpoint=tmp_path)  # finds the weights/ subfolder
    want, got = trained.state_dict(), pipe.modules.state_dict()
    assert want.keys() == got.keys()
    tol = {} if dtype is None else {"atol": 1e-3, "rtol": 1e-3}
    for key in want:
        torch.testing.assert_close(got[key].float(), want[key].float(), **({"atol": 0, "rtol": 0} | tol))


def test_missing_checkpoint_folder_named(tiny_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_pipeline(tiny_cfg, checkpoint=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="denoising_unet"):
        load_pipeline(tiny_cfg, checkpoint=tmp_path / "empty")


def test_real_preset_needs_an_audio_encoder_folder(tmp_path):
    from infra.config_tree import load
    from model.pipeline_loading import make_audio_encoder

    with pytest.raises(ValueError, match="model.pretrained.audio_encoder"):
        make_audio_encoder(load("sd15/stage3", ["model.pretrained.audio_encoder=", "preprocess.audio_encoder_path="]))
    with pytest.raises(FileNotFoundError, match="nofolder"):
        make_audio_encoder(load("sd15/stage3", [f"model.pretrained.audio_encoder={tmp_path / 'nofolder'}"]))
