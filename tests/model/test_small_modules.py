"""V-Kps Guider and Audio Projection: shared model suite on tiny configs, official keys/shapes on sd15 sizes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from model.audio_projection import AudioProjection
from model.build import build_audio_projection, build_v_kps_guider
from model.config import ModelConfig
from model.official_manifest import official_manifest
from model.v_kps_guider import VKpsGuider
from tests.model.model_tester import ModelTesterMixin, one_thread  # noqa: F401

TINY = ModelConfig()  # the dataclass defaults are the tiny preset
pytestmark = pytest.mark.usefixtures("one_thread")


class TestVKpsGuiderSuite(ModelTesterMixin):
    expected_output_shape = (2, TINY.block_out_channels[0], 3, TINY.resolution // 8, TINY.resolution // 8)

    def build_model(self, device="cpu"):
        with torch.device(device):
            guider = build_v_kps_guider(TINY)
        if device != "meta":  # a trained guider: the zero-initialised conv_out would hide every input
            with torch.no_grad():
                nn.init.normal_(guider.conv_out.weight, std=0.1)
        return guider

    def make_inputs(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        return {"conditioning": torch.rand(2, 3, 3, TINY.resolution, TINY.resolution, generator=g)}


class TestAudioProjectionSuite(ModelTesterMixin):
    expected_output_shape = (2, 3, TINY.audio_num_queries, TINY.cross_attention_dim)
    atol = 1e-5

    def build_model(self, device="cpu"):
        with torch.device(device):
            return build_audio_projection(TINY)

    def make_inputs(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        return {"audio_windows": torch.randn(2, 3, TINY.audio_tokens_in, TINY.audio_embed_dim, generator=g)}


# ------------------------------------------------------------------------------------------ official sizes
@pytest.fixture(scope="module")
def manifest() -> dict:
    return official_manifest()  # shipped in model/data/: a missing file fails, never skips


@pytest.mark.parametrize(("file", "factory", "count"), [
    ("v_kps_guider.bin", lambda m: VKpsGuider(**m["configs"]["v_kps_guider_kwargs"]), 1_086_480),
    ("audio_projection.bin",
     lambda m: AudioProjection(**{k: v for k, v in m["configs"]["audio_projection_kwargs"].items()
                                  if k != "num_latents_mean_pooled"}), 29_524_224),
])
def test_official_keys_shapes_order_and_count(manifest, file, factory, count):
    with torch.device("meta"):
        module = factory(manifest)
    ours = [[k, list(v.shape)] for k, v in module.state_dict().items()]
    entry = manifest["files"][file]
    assert ours == entry["tensors"]
    assert len(ours) == entry["num_tensors"]
    assert sum(v.numel() for v in module.state_dict().values()) == entry["num_params"] == count


def test_default_constructors_are_the_official_sizes():
    assert VKpsGuider().config.block_out_channels == (16, 32, 96, 256)
    assert sum(p.numel() for p in VKpsGuider().parameters()) == 1_086_480
    with torch.device("meta"):
        assert sum(p.numel() for p in AudioProjection().parameters()) == 29_524_224


# ------------------------------------------------------------------------------------------ behaviour
def test_guider_is_zero_at_initialisation_and_downsamples_by_8():
    guider = VKpsGuider(conditioning_embedding_channels=24, block_out_channels=(4, 8, 8, 16))
    out = guider(torch.rand(2, 3, 5, 32, 48))
    assert out.shape == (2, 24, 5, 4, 6)
    assert torch.count_nonzero(out) == 0
    assert torch.count_nonzero(guider.conv_out.weight) == 0 and torch.count_nonzero(guider.conv_out.bias) == 0


def test_guider_video_input_equals_per_frame_images():
    torch.manual_seed(0)
    guider = build_v_kps_guider(TINY)
    nn.init.normal_(guider.conv_out.weight, std=0.1)
    video = torch.rand(2, 3, 4, 32, 32)
    out = guider(video)
    for f in range(4):
        torch.testing.assert_close(out[:, :, f], guider(video[:, :, f]))
    with pytest.raises(ValueError, match="expects"):
        guider(torch.rand(3, 32, 32))


def _reference_resampler(model: AudioProjection, x: torch.Tensor) -> torch.Tensor:
    """The IP-Adapter/V-Express resampler written out with explicit matmuls (scale split over q and k)."""
    x = x + model.pos_emb.weight[: x.shape[1]]
    x = model.proj_in(x)
    latents = model.latents.repeat(x.shape[0], 1, 1)
    for attn, ff in model.layers:
        h, n = attn.heads, attn.to_q.out_features // attn.heads
        xi, lat = attn.norm1(x), attn.norm2(latents)
        q = attn.to_q(lat)
        k, v = attn.to_kv(torch.cat((xi, lat), dim=-2)).chunk(2, dim=-1)
        q, k, v = (t.view(t.shape[0], t.shape[1], h, n).transpose(1, 2) for t in (q, k, v))
        scale = 1 / math.sqrt(math.sqrt(n))
        weight = torch.softmax((q * scale) @ (k * scale).transpose(-2, -1), dim=-1)
        out = (weight @ v).permute(0, 2, 1, 3).reshape(latents.shape[0], latents.shape[1], -1)
        latents = attn.to_out(out) + latents
        latents = ff(latents) + latents
    return model.norm_out(model.proj_out(latents))


def test_audio_projection_matches_explicit_perceiver_math():
    torch.manual_seed(0)
    model = AudioProjection(dim=32, depth=2, dim_head=8, heads=4, num_queries=5, embedding_dim=24, output_dim=16,
                            max_seq_len=10).eval()
    x = torch.randn(6, 10, 24)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference_resampler(model, x), atol=1e-5, rtol=1e-5)
        batched = model(x.view(2, 3, 10, 24))
    assert batched.shape == (2, 3, 5, 16)
    torch.testing.assert_close(batched.reshape(6, 5, 16), model(x), atol=1e-6, rtol=0)


def test_audio_projection_rejects_bad_windows():
    model = AudioProjection(dim=16, depth=1, dim_head=8, heads=2, embedding_dim=16, output_dim=16, max_seq_len=10)
    with pytest.raises(ValueError, match="<= 10 vectors of width 16"):
        model(torch.randn(2, 11, 16))
    with pytest.raises(ValueError, match="<= 10 vectors of width 16"):
        model(torch.randn(2, 10, 8))
