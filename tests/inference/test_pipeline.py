"""The pipeline on the tiny preset with random weights: CFG batching, schedulers, seeds, devices, offload."""

import numpy as np
import pytest
import torch

from model.pipeline import VExpressPipeline
from model.retarget import fix_face
from model.schedulers import build_noise_scheduler
from model.windows import num_denoiser_calls

KPS64 = [[22.0, 26.0], [42.0, 26.0], [32.0, 38.0]]  # eyes + nose in the 64 px tiny frame


def _run(pipe, image, audio, frames, **kw):
    kw = {"num_inference_steps": 2, "context_frames": 6, "context_overlap": 2, "progress": False,
          "output_type": "latent", **kw}
    return pipe(image, fix_face(KPS64, frames), audio, num_frames=frames, size=64, **kw)


class ForwardLog:
    """Forward pre-hook on the real denoising UNet: what each forward received."""

    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.calls.append({"batch": args[0].shape[0], "frames": args[0].shape[2], **kwargs})

    def close(self):
        self.handle.remove()


def test_cfg_one_batched_forward_per_window_per_step(tiny_pipeline, reference_image, speech_like_audio):
    log = ForwardLog(tiny_pipeline.modules.denoising_unet)
    try:
        out = _run(tiny_pipeline, reference_image, speech_like_audio(0.4), 10, guidance_scale=3.5)
    finally:
        log.close()
    # 10 frames, windows of 6 with overlap 2: starts 0, 4 -> 2 windows; 2 steps -> 4 forwards of batch 2.
    assert len(log.calls) == num_denoiser_calls(10, 6, 2, 2) == 4 == out.stats.denoiser_calls
    assert out.stats.frame_evaluations == 4 * 2 * 6
    for call in log.calls:
        assert call["batch"] == 2 and call["frames"] == 6
        # Unconditional half: every condition zeroed; conditional half: present.
        assert call["audio_tokens"][0].abs().max() == 0 and call["audio_tokens"][1].abs().max() > 0
        assert call["kps_features"][0].abs().max() == 0
        assert call["reference_frame_mask"][0].max() == 0 and call["reference_frame_mask"][1].min() == 1
        assert call["reference_attention_weight"] == 0.95 and call["audio_attention_weight"] == 3.0
    assert torch.isfinite(out.latents).all() and out.latents.shape == (1, 4, 10, 8, 8)


def test_no_cfg_single_branch(tiny_pipeline, reference_image, speech_like_audio):
    log = ForwardLog(tiny_pipeline.modules.denoising_unet)
    try:
        _run(tiny_pipeline, reference_image, speech_like_audio(0.2), 4, guidance_scale=1.0,
             reference_attention_weight=0.5, audio_attention_weight=2.0)
    finally:
        log.close()
    assert [c["batch"] for c in log.calls] == [1, 1]
    assert log.calls[0]["reference_attention_weight"] == 0.5 and log.calls[0]["audio_attention_weight"] == 2.0


@pytest.mark.parametrize("kind,cls", [("ddim", "DDIMScheduler"), ("dpmsolver++", "DPMSolverMultistepScheduler"),
                                      ("euler", "EulerDiscreteScheduler")])
def test_scheduler_selection(tiny_pipeline, reference_image, speech_like_audio, kind, cls):
    sched = build_noise_scheduler(kind)
    assert type(sched).__name__ == cls
    assert sched.config.prediction_type == "v_prediction" and sched.config.timestep_spacing == "trailing"
    assert sched.config.rescale_betas_zero_snr
    if kind == "ddim":
        sched.set_timesteps(25)
        assert sched.timesteps[0] == 999 and sched.timesteps[-1] == 39  # official 25-step trailing schedule
    original = tiny_pipeline.scheduler
    tiny_pipeline.scheduler = sched
    try:
        out = _run(tiny_pipeline, reference_image, speech_like_audio(0.2), 4, num_inference_steps=3)
    finally:
        tiny_pipeline.scheduler = original
    assert torch.isfinite(out.latents).all()
    with pytest.raises(ValueError, match="inference.scheduler"):
        build_noise_scheduler("pndm")


def test_seed_reproducible(tiny_pipeline, reference_image, speech_like_audio):
    audio = speech_like_audio(0.2)
    a = _run(tiny_pipeline, reference_image, audio, 4, seed=7).latents
    b = _run(tiny_pipeline, reference_image, audio, 4, seed=7).latents
    c = _run(tiny_pipeline, reference_image, audio, 4, seed=8).latents
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_two_devices_and_offload_match_single_device(tiny_pipeline, reference_image, speech_like_audio):
    audio = speech_like_audio(0.6)
    ref = _run(tiny_pipeline, reference_image, audio, 15)  # windows at 0, 4, 8, 9
    p = tiny_pipeline
    multi = VExpressPipeline(p.modules, p.vae, p.scheduler, p.audio_encoder, devices=["cpu", "cpu"])
    assert len(multi._replicas) == 2
    torch.testing.assert_close(_run(multi, reference_image, audio, 15).latents, ref.latents)
    offload = VExpressPipeline(p.modules, p.vae, p.scheduler, p.audio_encoder, offload=True)
    torch.testing.assert_close(_run(offload, reference_image, audio, 15).latents, ref.latents)
    with pytest.raises(ValueError, match="offload"):
        VExpressPipeline(p.modules, p.vae, p.scheduler, p.audio_encoder, devices=["cpu", "cpu"], offload=True)


def test_decode_uint8_with_median_filter(tiny_pipeline, reference_image, speech_like_audio):
    out = _run(tiny_pipeline, reference_image, speech_like_audio(0.2), 5, output_type="uint8", median_filter=False)
    assert out.frames.shape == (5, 64, 64, 3) and out.frames.dtype == np.uint8
    filtered = tiny_pipeline.decode(out.latents, median_filter=True, progress=False)
    from scipy.ndimage import median_filter

    np.testing.assert_array_equal(filtered, median_filter(out.frames, size=(3, 3, 3, 1), mode="reflect"))


def test_bf16(tiny_cfg, reference_image, speech_like_audio):
    from model.pipeline_loading import load_pipeline

    pipe = load_pipeline(tiny_cfg, dtype="bf16")
    assert next(pipe.modules.parameters()).dtype == torch.bfloat16
    out = _run(pipe, reference_image, speech_like_audio(0.2), 4, output_type="uint8")
    assert out.frames.dtype == np.uint8 and torch.isfinite(out.latents).all()


def test_bad_inputs(tiny_pipeline, reference_image, speech_like_audio):
    with pytest.raises(ValueError, match="num_frames"):
        tiny_pipeline(reference_image, fix_face(KPS64, 3), speech_like_audio(0.2), num_frames=4, size=64)
    with pytest.raises(ValueError, match="uint8"):
        tiny_pipeline(reference_image.astype(np.float32), fix_face(KPS64, 4), speech_like_audio(0.2), size=64)
