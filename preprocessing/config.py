"""Preprocessing configuration (``python infra/preprocess.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.config import check


@dataclass
class PreprocessConfig:
    fps: float = 25.0
    clip_seconds: float = 4.0
    min_clip_seconds: float = 2.0
    crop_size: int = 512
    face_backend: str = "yunet"  # yunet (offline default) | insightface
    insightface_root: str = ""  # folder with models/<pack>/*.onnx
    insightface_pack: str = "buffalo_l"
    min_face_size: int = 64  # pixels, shorter side of the detected box
    min_face_score: float = 0.6
    crop_margin: float = 0.6  # extra margin around the union face box, relative to its size
    audio_encoder: str = "wav2vec2"  # wav2vec2 | whisper
    audio_encoder_path: str = ""  # local transformers folder; empty -> tiny random encoder (tests/demo)
    require_audio: bool = False  # False: keep video-only clips with has_audio=false
    precompute_latents: bool = False
    vae_path: str = ""
    shard_max_bytes: int = 1_000_000_000
    num_workers: int = 1  # actor-pool size for model-holding stages
    use_gpu: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self.fps > 0, "preprocess.fps", "must be > 0")
        check(self.clip_seconds > 0, "preprocess.clip_seconds", "must be > 0")
        check(0 < self.min_clip_seconds <= self.clip_seconds, "preprocess.min_clip_seconds",
              "must be in (0, clip_seconds]")
        check(self.crop_size % 8 == 0, "preprocess.crop_size", "must be a multiple of 8")
        check(self.face_backend in ("yunet", "insightface"), "preprocess.face_backend",
              f"must be yunet|insightface, got {self.face_backend!r}")
        check(0.0 <= self.min_face_score <= 1.0, "preprocess.min_face_score", "must be in [0, 1]")
        check(self.audio_encoder in ("wav2vec2", "whisper"), "preprocess.audio_encoder", "must be wav2vec2|whisper")
        check(self.shard_max_bytes > 0, "preprocess.shard_max_bytes", "must be > 0")
        check(self.num_workers >= 1, "preprocess.num_workers", "must be >= 1")
