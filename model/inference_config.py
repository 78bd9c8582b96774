"""Inference configuration (``python -m infra.generate``) and its speed presets.

``inference.preset`` picks a named set of sampling settings (:data:`PRESETS`); any field given in a YAML file
or on the command line still wins over the preset's value (``infra.config.load_config`` layers it right after
the dataclass defaults). The cost of a preset is its UNet frame-evaluations per output frame: steps x CFG
branches x the windows' overlap (``benchmarks/bench_inference.py`` measures it; docs/inference.md has the
table and when to use which).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.config import check
from model.schedulers import SCHEDULERS
from perception.faces import FACE_BACKENDS

# The official recipe is ``quality`` (inference.py / inference_v2.yaml: DDIM 25 steps, CFG 3.5 on every step, the
# frames x 255 cut to uint8, then the 3x3x3 median). The others keep its guidance on every step (the audio's
# effect on the mouth comes largely from guidance) and trade the sampler, steps, window overlap and deep-feature
# reuse for speed (docs/inference.md has the measurements).
PRESETS: dict[str, dict] = {
    "quality": dict(scheduler="ddim", num_inference_steps=25, guidance_scale=3.5, cfg_until=1.0,
                    context_frames=24, context_overlap=4, quantize="truncate", median_filter=True,
                    deep_cache_interval=1),
    "balanced": dict(scheduler="dpmsolver++", num_inference_steps=7, guidance_scale=3.5, cfg_until=1.0,
                     context_frames=32, context_overlap=4, quantize="truncate", median_filter=True,
                     deep_cache_interval=1),
    "fast": dict(scheduler="dpmsolver++", num_inference_steps=4, guidance_scale=3.5, cfg_until=1.0,
                 context_frames=32, context_overlap=2, quantize="truncate", median_filter=True,
                 deep_cache_interval=2),
}
DEFAULT_PRESET = "balanced"


@dataclass
class InferenceConfig:
    PRESETS = PRESETS  # read by infra.config.load_config (a class attribute, not a field)

    preset: str = DEFAULT_PRESET  # quality (the official recipe) | balanced | fast; fields below override it
    fps: float = 25.0  # output fps, unchanged; frames = round(audio seconds x fps)
    num_inference_steps: int = PRESETS[DEFAULT_PRESET]["num_inference_steps"]
    guidance_scale: float = 3.5  # <= 1 disables CFG (one branch per forward)
    cfg_until: float = PRESETS[DEFAULT_PRESET]["cfg_until"]  # CFG on this leading fraction of the steps only
    scheduler: str = PRESETS[DEFAULT_PRESET]["scheduler"]  # ddim (official) | dpmsolver++ | euler
    context_frames: int = PRESETS[DEFAULT_PRESET]["context_frames"]  # up to the motion modules' 32 positions
    context_overlap: int = PRESETS[DEFAULT_PRESET]["context_overlap"]
    windows_per_batch: int = 1  # windows denoised in one forward (same work, fewer calls: for GPUs)
    deep_cache_interval: int = 1  # N > 1: a full UNet pass every N steps, the ones between reuse its deep features
    reference_attention_weight: float = 0.95
    audio_attention_weight: float = 3.0
    retarget_strategy: str = "fix_face"
    dtype: str = "fp32"
    device: str = "cpu"
    devices: list[str] = field(default_factory=list)  # several -> windows split across denoiser replicas
    offload: bool = False  # keep modules on the CPU, move each to `device` only while it runs
    seed: int = 42
    quantize: str = "truncate"  # frames x 255 to uint8: truncate (official) | round
    median_filter: bool = True  # the official 3x3x3 spatio-temporal median on the decoded frames
    face_backend: str = "yunet"  # keypoints of the reference image and of driving videos
    kps_image_size: int = 512  # a kps file's coordinates are pixels of a square frame this size (official)
    progress: bool = True

    def __post_init__(self) -> None:
        check(self.preset in self.PRESETS, "inference.preset",
              f"must be one of {'|'.join(self.PRESETS)}, got {self.preset!r}")
        check(self.fps > 0, "inference.fps", "must be > 0")
        check(0.0 <= self.cfg_until <= 1.0, "inference.cfg_until", f"must be in [0, 1], got {self.cfg_until}")
        check(self.windows_per_batch >= 1, "inference.windows_per_batch", "must be >= 1")
        check(self.deep_cache_interval >= 1, "inference.deep_cache_interval", "must be >= 1 (1: off)")
        check(self.quantize in ("truncate", "round"), "inference.quantize", "must be truncate|round")
        check(self.num_inference_steps >= 1, "inference.num_inference_steps", "must be >= 1")
        check(self.guidance_scale >= 0, "inference.guidance_scale", "must be >= 0")
        check(self.context_frames >= 1, "inference.context_frames", "must be >= 1")
        check(0 <= self.context_overlap < self.context_frames, "inference.context_overlap",
              "must be in [0, context_frames)")
        check(self.retarget_strategy in ("no_retarget", "fix_face", "offset_retarget", "naive_retarget"),
              "inference.retarget_strategy", f"unknown strategy {self.retarget_strategy!r}")
        check(self.dtype in ("fp32", "fp16", "bf16"), "inference.dtype", "must be fp32|fp16|bf16")
        check(self.scheduler in SCHEDULERS, "inference.scheduler", f"must be {'|'.join(SCHEDULERS)}")
        check(not (self.offload and len(self.devices) > 1), "inference.offload",
              "cannot be combined with several devices")
        check(self.face_backend in FACE_BACKENDS, "inference.face_backend", f"must be {'|'.join(FACE_BACKENDS)}")
        check(self.kps_image_size > 0, "inference.kps_image_size", "must be > 0")


def sampling_kwargs(inf: InferenceConfig) -> dict:
    """The keyword arguments of ``model.pipeline.VExpressPipeline.__call__`` that ``inf`` decides."""
    return dict(num_inference_steps=inf.num_inference_steps, guidance_scale=inf.guidance_scale,
                cfg_until=inf.cfg_until, context_frames=inf.context_frames, context_overlap=inf.context_overlap,
                windows_per_batch=inf.windows_per_batch, deep_cache_interval=inf.deep_cache_interval,
                reference_attention_weight=inf.reference_attention_weight,
                audio_attention_weight=inf.audio_attention_weight, seed=inf.seed, quantize=inf.quantize,
                median_filter=inf.median_filter, progress=inf.progress)
