"""Denoising UNet + ReferenceNet (tiny preset): shared suite, zero-init behaviour, branch weights, masks."""

from __future__ import annotations

import functools

import pytest
import torch

from model.build import build_denoising_unet, build_reference_net
from model.config import ModelConfig
from model.transformer import ReferenceFeatures
from model.unet_3d import UNet3DOutput, VExpressDenoisingUNet
from tests.model.model_tester import ModelTesterMixin, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = ModelConfig()  # tiny preset defaults
B, F, H = 1, 4, CFG.latent_size


def make_unet(seed: int = 0) -> VExpressDenoisingUNet:
    torch.manual_seed(seed)
    return build_denoising_unet(CFG).eval()


def make_reference_net(seed: int = 0):
    torch.manual_seed(seed)
    return build_reference_net(CFG).eval()


@torch.no_grad()
def wake_zero_inits(unet: VExpressDenoisingUNet, seed: int = 0) -> None:
    """Give the zero-initialised out-projections (audio attn2.to_out, motion proj_out) random values."""
    g = torch.Generator().manual_seed(seed)
    for name, p in unet.named_parameters():
        if ".attn2.to_out." in name or "temporal_transformer.proj_out." in name:
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def unet_inputs(seed: int = 0, frames: int = F) -> dict:
    g = torch.Generator().manual_seed(seed)
    c0 = CFG.block_out_channels[0]
    ref_shapes = [(B, n, c) for n, c in reference_shapes()]
    return {
        "sample": torch.randn(B, 4, frames, H, H, generator=g),
        "timestep": torch.tensor([500]),
        "audio_tokens": torch.randn(B, frames, CFG.audio_num_queries, CFG.cross_attention_dim, generator=g),
        "reference_features": [torch.randn(s, generator=g) for s in ref_shapes],
        "kps_features": torch.randn(B, c0, frames, H, H, generator=g) * 0.1,
    }


@functools.cache
def reference_shapes() -> list[tuple[int, int]]:
    """(tokens, channels) of each transformer's reference features, in execution order."""
    with torch.no_grad():
        feats = make_reference_net()(torch.zeros(1, 4, H, H))
    return [(f.shape[1], f.shape[2]) for f in feats.features]


def run(unet, inputs: dict, **extra) -> torch.Tensor:
    with torch.no_grad():
        return unet(**{**inputs, **extra}).sample


# ------------------------------------------------------------------------------------------ shared suites
class TestDenoisingUNetSuite(ModelTesterMixin):
    expected_output_shape = (B, 4, F, H, H)

    def build_model(self, device="cpu"):
        with torch.device(device):
            unet = build_denoising_unet(CFG)
        if device != "meta":
            wake_zero_inits(unet)  # so every parameter is exercised (grads, input sensitivity)
        return unet

    def make_inputs(self, seed=0):
        return unet_inputs(seed)


class TestReferenceNetSuite(ModelTesterMixin):
    # Nothing reads the ReferenceNet's output, so everything after its last tapped norm2 gets no gradient.
    params_without_grad = ("conv_out.", "up_blocks.3.attentions.1.proj_out.",
                           *(f"up_blocks.3.attentions.1.transformer_blocks.0.{m}." for m in ("attn2", "norm3", "ff")))

    def build_model(self, device="cpu"):
        with torch.device(device):
            return build_reference_net(CFG)

    def make_inputs(self, seed=0):
        return {"latents": torch.randn(2, 4, H, H, generator=torch.Generator().manual_seed(seed))}


# ------------------------------------------------------------------------------------------ interface
def test_reference_features_pair_with_unet_transformers():
    feats = make_reference_net()(torch.randn(2, 4, H, H))
    unet = make_unet()
    assert isinstance(feats, ReferenceFeatures)
    assert feats.names == unet.reference_feature_names
    assert len(feats) == 10  # tiny: 3 down + 1 mid + 2 x 3 up (layers_per_block=1)
    for name, f in zip(feats.names, feats.features):
        transformer = dict(unet.named_modules())[name]
        assert f.shape[0] == 2 and f.shape[2] == transformer.proj_in.in_channels
    assert not any(hook for m in make_reference_net().modules() for hook in m._forward_hooks.values())


def test_reference_net_has_no_conv_norm_out_and_uses_timestep():
    net = make_reference_net()
    assert not any(k.startswith("conv_norm_out") for k in net.state_dict())
    x = torch.randn(1, 4, H, H)
    with torch.no_grad():
        a, b = net(x, timestep=0).features[0], net(x, timestep=500).features[0]
    assert not torch.equal(a, b)


def test_output_type_and_tuple_return():
    unet, inputs = make_unet(), unet_inputs()
    with torch.no_grad():
        out = unet(**inputs)
        tup = unet(**inputs, return_dict=False)
    assert isinstance(out, UNet3DOutput)
    assert torch.equal(out.sample, tup[0])


def test_bad_shapes_raise_clear_errors():
    unet, inputs = make_unet(), unet_inputs()
    with pytest.raises(ValueError, match="audio_tokens"):
        run(unet, inputs, audio_tokens=inputs["audio_tokens"][:, :2])
    with pytest.raises(ValueError, match="reference_frame_mask"):
        run(unet, inputs, reference_frame_mask=torch.ones(1, F + 1))
    with pytest.raises(ValueError, match="reference feature tensors"):
        run(unet, inputs, reference_features=inputs["reference_features"][:3])


# ------------------------------------------------------------------------------------------ zero at init
def test_audio_path_contributes_exactly_zero_at_init():
    unet, inputs = make_unet(), unet_inputs()
    base = run(unet, inputs)
    assert torch.equal(base, run(unet, inputs, audio_tokens=torch.randn_like(inputs["audio_tokens"]) * 10))
    assert torch.equal(base, run(unet, inputs, audio_tokens=None))
    wake_zero_inits(unet)  # positive control: a trained audio path does listen
    assert not torch.allclose(run(unet, inputs), run(unet, inputs, audio_tokens=torch.randn_like(inputs["audio_tokens"])))


def test_motion_modules_are_identity_at_init():
    unet = make_unet()
    x = torch.randn(2 * F, CFG.block_out_channels[0], H, H)
    with torch.no_grad():
        assert torch.equal(unet.down_blocks[0].motion_modules[0](x, F), x)


def test_frames_are_independent_at_init_and_coupled_after_training():
    unet, inputs = make_unet(), unet_inputs()
    perm = torch.tensor([2, 0, 3, 1])
    shuffled = dict(inputs, sample=inputs["sample"][:, :, perm], audio_tokens=inputs["audio_tokens"][:, perm],
                    kps_features=inputs["kps_features"][:, :, perm])
    torch.testing.assert_close(run(unet, shuffled), run(unet, inputs)[:, :, perm], atol=1e-6, rtol=0)
    changed = dict(inputs, sample=inputs["sample"].clone())
    changed["sample"][:, :, 3] += 1.0
    torch.testing.assert_close(run(unet, changed)[:, :, :3], run(unet, inputs)[:, :, :3], atol=1e-6, rtol=0)
    wake_zero_inits(unet)  # positive control: with trained motion modules, frame 3 influences frame 0
    assert not torch.allclose(run(unet, changed)[:, :, 0], run(unet, inputs)[:, :, 0], atol=1e-5)


# ------------------------------------------------------------------------------------------ branch weights
def _after_branches(unet, inputs: dict, **weights) -> torch.Tensor:
    """Input of norm3 in the first transformer block: x + w_ref * R(x) + w_aud * A(x + w_ref * R(x))."""
    block = unet.down_blocks[0].attentions[0].transformer_blocks[0]
    seen = {}
    hook = block.norm3.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    run(unet, inputs, **weights)
    hook.remove()
    return seen["x"]


def test_weight_zero_switches_branches_off():
    unet, inputs = make_unet(), unet_inputs()
    wake_zero_inits(unet)
    other = unet_inputs(seed=7)
    off = {"reference_attention_weight": 0.0, "audio_attention_weight": 0.0}
    base = run(unet, inputs, **off)
    swapped = dict(inputs, reference_features=other["reference_features"], audio_tokens=other["audio_tokens"])
    assert torch.equal(base, run(unet, swapped, **off))
    assert torch.equal(base, run(unet, inputs, reference_features=None, audio_tokens=None, **off))


def test_branch_output_scales_linearly_with_its_weight():
    unet, inputs = make_unet(), unet_inputs()
    wake_zero_inits(unet)
    ref = {w: _after_branches(unet, inputs, reference_attention_weight=w, audio_attention_weight=0.0)
           for w in (0.0, 1.0, 2.5)}
    torch.testing.assert_close(ref[2.5] - ref[0.0], 2.5 * (ref[1.0] - ref[0.0]), atol=1e-5, rtol=1e-5)
    assert (ref[1.0] - ref[0.0]).abs().max() > 1e-3
    aud = {w: _after_branches(unet, inputs, reference_attention_weight=0.95, audio_attention_weight=w)
           for w in (0.0, 1.0, 3.0)}
    torch.testing.assert_close(aud[3.0] - aud[0.0], 3.0 * (aud[1.0] - aud[0.0]), atol=1e-5, rtol=1e-5)
    assert (aud[1.0] - aud[0.0]).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------ reference mask
def test_zero_mask_frame_equals_unconditional_frame():
    unet, inputs = make_unet(), unet_inputs()  # motion modules at init: frames independent
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    masked, uncond, full = run(unet, inputs, reference_frame_mask=mask), run(unet, inputs, reference_features=None), \
        run(unet, inputs)
    torch.testing.assert_close(masked[:, :, 1], uncond[:, :, 1], atol=1e-6, rtol=0)
    torch.testing.assert_close(masked[:, :, 0], full[:, :, 0], atol=1e-6, rtol=0)
    assert not torch.allclose(masked[:, :, 0], uncond[:, :, 0])


def test_all_zero_mask_equals_no_reference_with_motion():
    unet, inputs = make_unet(), unet_inputs()
    wake_zero_inits(unet)
    torch.testing.assert_close(run(unet, inputs, reference_frame_mask=torch.zeros(1, F)),
                               run(unet, inputs, reference_features=None), atol=1e-6, rtol=0)
    torch.testing.assert_close(run(unet, inputs, reference_frame_mask=torch.ones(1, F)), run(unet, inputs),
                               atol=0, rtol=0)


def test_reference_features_object_and_list_agree():
    net, unet = make_reference_net(), make_unet()
    with torch.no_grad():
        feats = net(torch.randn(1, 4, H, H))
    inputs = unet_inputs()
    torch.testing.assert_close(run(unet, inputs, reference_features=feats),
                               run(unet, inputs, reference_features=list(feats.features)), atol=0, rtol=0)


def test_kps_features_are_added_after_conv_in():
    unet, inputs = make_unet(), unet_inputs()
    seen = {}
    hook = unet.down_blocks[0].resnets[0].register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    run(unet, inputs, kps_features=None)
    without = seen["x"]
    run(unet, inputs)
    hook.remove()
    expected = inputs["kps_features"].permute(0, 2, 1, 3, 4).reshape(without.shape)
    torch.testing.assert_close(seen["x"] - without, expected, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------ training
def _grads(checkpointing: bool) -> dict[str, torch.Tensor]:
    net, unet = make_reference_net(), make_unet()
    wake_zero_inits(unet)
    if checkpointing:
        net.enable_gradient_checkpointing()
        unet.enable_gradient_checkpointing()
    net.train(), unet.train()
    inputs = unet_inputs()
    inputs["reference_features"] = net(torch.randn(1, 4, H, H, generator=torch.Generator().manual_seed(3)))
    unet(**inputs).sample.pow(2).mean().backward()
    named = [*(("ref." + n, p) for n, p in net.named_parameters()), *unet.named_parameters()]
    return {n: p.grad.clone() for n, p in named if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients():
    plain, ckpt = _grads(False), _grads(True)
    assert plain.keys() == ckpt.keys()
    assert any(k.startswith("ref.") for k in plain), "reference features must carry gradients to the ReferenceNet"
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_tiny_full_forward_is_fast_enough_to_be_a_test_model():
    """Not a timing assertion (see benchmarks/bench_model.py): just a 12-frame forward that completes."""
    unet, net = make_unet(), make_reference_net()
    inputs = unet_inputs(frames=12)
    with torch.no_grad():
        inputs["reference_features"] = net(torch.randn(1, 4, H, H))
        assert run(unet, inputs).shape == (1, 4, 12, H, H)


def test_bfloat16_forward():
    net, unet = make_reference_net().to(torch.bfloat16), make_unet().to(torch.bfloat16)
    inputs = unet_inputs()
    with torch.no_grad():
        inputs["reference_features"] = net(torch.randn(1, 4, H, H, dtype=torch.bfloat16))
        out = unet(**{k: v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v
                      for k, v in inputs.items()}).sample
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
