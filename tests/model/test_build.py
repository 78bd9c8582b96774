"""build_modules / build_vae / build_noise_scheduler."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.build import build_modules, build_vae
from model.config import ModelConfig, PretrainedPaths
from model.schedulers import build_noise_scheduler
from tests.model.model_tester import one_thread  # noqa: F401

CFG = ModelConfig()


def test_build_is_deterministic_and_seeded():
    a, b = build_modules(CFG).state_dict(), build_modules(CFG).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = build_modules(CFG, seed=1).state_dict()
    assert not torch.equal(a["denoising_unet.conv_in.weight"], c["denoising_unet.conv_in.weight"])


def test_meta_build_allocates_nothing():
    modules = build_modules(CFG, device="meta")
    assert {p.device.type for p in modules.parameters()} == {"meta"}
    assert {b.device.type for b in modules.buffers()} == {"meta"}


@pytest.mark.usefixtures("one_thread")
def test_tiny_modules_work_together():
    """Guider, audio projection, ReferenceNet and denoiser chained as training/inference do."""
    m = build_modules(CFG).eval()
    f = 3
    with torch.no_grad():
        kps = m.v_kps_guider(torch.rand(1, 3, f, CFG.resolution, CFG.resolution))
        audio = m.audio_projection(torch.randn(1, f, CFG.audio_tokens_in, CFG.audio_embed_dim))
        ref = m.reference_net(torch.randn(1, 4, CFG.latent_size, CFG.latent_size))
        out = m.denoising_unet(torch.randn(1, 4, f, CFG.latent_size, CFG.latent_size), torch.tensor([10]),
                               audio, ref, kps_features=kps).sample
    assert out.shape == (1, 4, f, CFG.latent_size, CFG.latent_size)


def test_tiny_vae_shapes_and_seed():
    vae = build_vae(CFG).eval()
    x = torch.rand(1, 3, CFG.resolution, CFG.resolution) * 2 - 1
    with torch.no_grad():
        latent = vae.encode(x).latent_dist.mean
        assert latent.shape == (1, CFG.vae_latent_channels, CFG.latent_size, CFG.latent_size)
        assert vae.decode(latent).sample.shape == x.shape
    assert vae.config.scaling_factor == CFG.vae_scaling_factor
    assert torch.equal(build_vae(CFG).encoder.conv_in.weight, vae.encoder.conv_in.weight)


def test_vae_from_folder(tmp_path):
    vae = build_vae(CFG, seed=3)
    vae.save_pretrained(tmp_path / "vae")
    loaded = build_vae(dataclasses.replace(CFG, pretrained=PretrainedPaths(sd15=str(tmp_path))))
    assert torch.equal(loaded.encoder.conv_in.weight, vae.encoder.conv_in.weight)
    with pytest.raises(FileNotFoundError, match="model.pretrained.vae"):
        build_vae(dataclasses.replace(CFG, pretrained=PretrainedPaths(vae=str(tmp_path / "missing"))))


def test_official_ddim_settings():
    s = build_noise_scheduler("ddim")
    c = s.config
    assert (c.beta_start, c.beta_end, c.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert (c.prediction_type, c.rescale_betas_zero_snr, c.timestep_spacing) == ("v_prediction", True, "trailing")
    assert (c.steps_offset, c.clip_sample, c.num_train_timesteps) == (1, False, 1000)
    assert float(s.alphas_cumprod[-1]) == 0.0  # zero terminal SNR
    s.set_timesteps(25)
    assert s.timesteps.tolist() == list(range(999, 0, -40))


@pytest.mark.parametrize("kind", ["dpmsolver++", "euler"])
def test_alternative_schedulers_share_the_betas(kind):
    ddim, other = build_noise_scheduler("ddim"), build_noise_scheduler(kind)
    assert other.config.prediction_type == "v_prediction"
    torch.testing.assert_close(other.betas, ddim.betas)
    other.set_timesteps(25)
    assert [int(t) for t in other.timesteps] == list(range(999, 0, -40))


def test_scheduler_overrides_and_errors():
    assert build_noise_scheduler("ddim", steps_offset=0).config.steps_offset == 0
    with pytest.raises(ValueError, match="inference.scheduler"):
        build_noise_scheduler("pndm")


def test_modules_gradient_checkpointing_switch():
    m = build_modules(CFG, device="meta")
    m.enable_gradient_checkpointing()
    assert m.denoising_unet.down_blocks[0].gradient_checkpointing and m.reference_net.mid_block.gradient_checkpointing
    m.disable_gradient_checkpointing()
    assert not m.denoising_unet.down_blocks[0].gradient_checkpointing
