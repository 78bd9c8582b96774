"""Inference configuration (``python -m model.generate``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.config import check


@dataclass
class InferenceConfig:
    fps: float = 25.0  # output fps, unchanged; frames = round(audio seconds x fps)
    num_inference_steps: int = 25
    guidance_scale: float = 3.5  # <= 1 disables CFG (one branch per forward)
    scheduler: str = "ddim"  # ddim (official: v-pred, zero-SNR, trailing) | dpmsolver++ | euler
    context_frames: int = 12  # the paper; the official release uses 24
    context_overlap: int = 4
    reference_attention_weight: float = 0.95
    audio_attention_weight: float = 3.0
    retarget_strategy: str = "fix_face"
    dtype: str = "fp32"
    device: str = "cpu"
    devices: list[str] = field(default_factory=list)  # several -> windows split across denoiser replicas
    offload: bool = False  # keep modules on the CPU, move each to `device` only while it runs
    seed: int = 42
    median_filter: bool = True  # the official 3x3x3 spatio-temporal median on the decoded frames
    face_backend: str = "yunet"  # keypoints of the reference image and of driving videos
    kps_image_size: int = 512  # a kps file's coordinates are pixels of a square frame this size (official)
    progress: bool = True

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
        check(not (self.offload and len(self.devices) > 1), "inference.offload",
              "cannot be combined with several devices")
        check(self.face_backend in ("yunet", "insightface"), "inference.face_backend", "must be yunet|insightface")
        check(self.kps_image_size > 0, "inference.kps_image_size", "must be > 0")
