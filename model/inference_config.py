"""Inference configuration (``python -m model.generate``)."""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import check


@dataclass
class InferenceConfig:
    fps: float = 25.0
    num_inference_steps: int = 25
    guidance_scale: float = 3.5
    scheduler: str = "ddim"  # ddim (official: v-pred, zero-SNR, trailing) | dpmsolver++ | euler
    context_frames: int = 12  # the paper; the official release uses 24
    context_overlap: int = 4
    reference_attention_weight: float = 0.95
    audio_attention_weight: float = 3.0
    retarget_strategy: str = "fix_face"
    dtype: str = "fp32"
    device: str = "cpu"
    seed: int = 42

    def __post_init__(self) -> None:
        check(self.fps > 0, "inference.fps", "must be > 0")
        check(self.num_inference_steps >= 1, "inference.num_inference_steps", "must be >= 1")
        check(self.guidance_scale >= 0, "inference.guidance_scale", "must be >= 0")
        check(self.context_frames >= 1, "inference.context_frames", "must be >= 1")
        check(0 <= self.context_overlap < self.context_frames, "inference.context_overlap",
              "must be in [0, context_frames)")
        check(self.retarget_strategy in ("no_retarget", "fix_face", "offset_retarget", "naive_retarget"),
              "inference.retarget_strategy", f"unknown strategy {self.retarget_strategy!r}")
        check(self.dtype in ("fp32", "fp16", "bf16"), "inference.dtype", "must be fp32|fp16|bf16")
        check(self.scheduler in ("ddim", "dpmsolver++", "euler"), "inference.scheduler",
              "must be ddim|dpmsolver++|euler")
