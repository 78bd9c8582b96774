"""Inference speed presets: how they layer under YAML/CLI, their cost, the official post-processing, and that
every preset keeps the exact frame count and fps."""

import itertools

import numpy as np
import pytest

from infra.config import CONFIG_ROOT, ConfigError
from infra.config_tree import load
from infra.generate import main
from model.inference_config import PRESETS, sampling_kwargs
from model.pipeline import postprocess
from perception.media import ffprobe_streams, write_wav


def test_quality_is_the_official_recipe_and_explicit_values_win(tmp_path):
    q = load("tiny/stage3", ["inference.preset=quality"]).inference
    assert (q.scheduler, q.num_inference_steps, q.guidance_scale, q.cfg_until) == ("ddim", 25, 3.5, 1.0)
    assert (q.context_frames, q.context_overlap, q.quantize, q.median_filter) == (24, 4, "truncate", True)
    assert load("tiny/stage3").inference.preset == "balanced"
    cli = load("tiny/stage3", ["inference.preset=quality", "inference.num_inference_steps=9"]).inference
    assert cli.num_inference_steps == 9 and cli.scheduler == "ddim"
    yaml = tmp_path / "fast10.yaml"
    yaml.write_text(f"base: {CONFIG_ROOT / 'tiny' / 'stage3.yaml'}\ninference:\n  preset: fast\n"
                    "  num_inference_steps: 10\n")
    from_yaml = load(str(yaml)).inference
    assert from_yaml.num_inference_steps == 10 and from_yaml.context_overlap == PRESETS["fast"]["context_overlap"]
    with pytest.raises(ConfigError, match="inference.preset: unknown preset 'nope'"):
        load("tiny/stage3", ["inference.preset=nope"])


def test_default_preset_costs_at_most_a_third_of_the_official():
    from model.windows import context_windows

    def evals_per_frame(p, frames=250):
        cfg_steps = int(np.ceil(p["cfg_until"] * p["num_inference_steps"] - 1e-9))
        branches = 2 * cfg_steps + (p["num_inference_steps"] - cfg_steps)
        slots = sum(len(w) for w in context_windows(frames, p["context_frames"], p["context_overlap"]))
        return branches * slots / frames

    assert evals_per_frame(PRESETS["quality"]) == pytest.approx(62.4)
    assert evals_per_frame(PRESETS["balanced"]) <= 20 < evals_per_frame(PRESETS["quality"]) / 3 + 1


def _reflect_median(u8: np.ndarray) -> np.ndarray:
    """3x3x3 median per channel, borders mirrored including the edge sample (d c b a | a b c d), by brute force."""
    f, h, w, c = u8.shape
    pad = np.pad(u8, ((1, 1), (1, 1), (1, 1), (0, 0)), mode="symmetric")
    out = np.empty_like(u8)
    for t, y, x, ch in itertools.product(range(f), range(h), range(w), range(c)):
        out[t, y, x, ch] = np.median(pad[t:t + 3, y:y + 3, x:x + 3, ch])
    return out


def test_official_postprocess_truncates_then_takes_the_reflected_median():
    rng = np.random.default_rng(0)
    video = rng.random((4, 5, 6, 3)).astype(np.float32)
    video[0, 0, 0] = 0.999  # 254.7: the official cut keeps 254, rounding would give 255
    video[-1, -1, -1] = 1.0
    truncated = (video * 255).astype(np.uint8)
    assert truncated[0, 0, 0, 0] == 254
    np.testing.assert_array_equal(postprocess(video, "truncate", median_filter=True), _reflect_median(truncated))
    np.testing.assert_array_equal(postprocess(video, "truncate", median_filter=False), truncated)
    rounded = postprocess(video, "round", median_filter=False)
    assert rounded[0, 0, 0, 0] == 255 and rounded[-1, -1, -1, 0] == 255
    with pytest.raises(ValueError, match="quantize"):
        postprocess(video, "floor")


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_keeps_the_exact_frame_count_and_fps(preset, tmp_path, reference_image, speech_like_audio,
                                                          tiny_pipeline):
    from PIL import Image

    ref = tmp_path / "ref.png"
    Image.fromarray(reference_image).save(ref)
    wav = write_wav(tmp_path / "speech.wav", speech_like_audio(2.2))  # 55 frames: windows of 24 and 32 overlap
    out = tmp_path / "out.mp4"
    assert main(["--reference", str(ref), "--audio", str(wav), "--output", str(out), f"inference.preset={preset}",
                 "inference.num_inference_steps=2", "inference.progress=false"]) == 0
    video = next(s for s in ffprobe_streams(out) if s["codec_type"] == "video")
    assert int(video["nb_read_frames"]) == 55 and video["avg_frame_rate"] == "25/1"


def test_sampling_kwargs_are_the_pipeline_arguments():
    import inspect

    from model.pipeline import VExpressPipeline

    params = inspect.signature(VExpressPipeline.__call__).parameters
    assert set(sampling_kwargs(load("tiny/stage3").inference)) <= set(params)
