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
    min_valid_fraction: float = 1.0  # share of a clip's frames that must show exactly one valid face
    detect_max_side: int = 320  # frames are downscaled to this longest side for detection (0: full size);
    # YuNet costs ~21 ms at 480 vs ~10 ms at 320 per frame; raise it for HD sources with small faces
    smooth_window: int = 5  # frames of moving average on the face boxes before the union crop
    kps_smooth_window: int = 1  # frames of centred moving average on the stored keypoints (1: as detected)
    crop_margin: float = 0.6  # extra margin around the union face box, relative to its size
    audio_encoder: str = "wav2vec2"  # wav2vec2 | whisper | mel (log-mel, no weights: the CPU preset)
    audio_encoder_path: str = ""  # local transformers folder; empty -> tiny random encoder (tests)
    mel_bins: int = 32  # feature width of the mel encoder (= model.audio_embed_dim)
    require_audio: bool = False  # False: keep video-only clips with has_audio=false
    reject_silence: bool = True  # a clip whose audio is below silence_db is rejected ("silence")
    silence_db: float = -50.0  # dBFS (RMS over the clip)
    crf: int = 18  # h264 quality of the crops
    encode_preset: str = "veryfast"  # libx264 preset (speed vs size at a fixed crf): 11.5 ms vs 28 ms (medium) per 512² frame
    precompute_latents: bool = False
    vae_path: str = ""
    shard_max_bytes: int = 1_000_000_000
    num_workers: int = 1  # Ray CPUs of an embedded cluster and size of each model actor pool
    use_gpu: bool = False  # model actors ask for actor_num_gpus GPUs each
    actor_num_cpus: float = 0.25  # logical CPUs reserved per model actor (they idle between batches)
    actor_num_gpus: float = 0.5  # per model actor when use_gpu
    task_num_cpus: float = 0.5  # per decode / crop+encode / write task
    max_clips_in_flight: int = 0  # backpressure: clips submitted but not finished (0: 4 x num_workers)
    max_retries: int = 3  # Ray retries of a failed task / restarts of a dead actor
    ray_temp_dir: str = ""  # embedded Ray's temp dir (short path: unix sockets); empty -> /tmp/vexray-<pid>
    progress_every_s: float = 10.0  # period of the progress line
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
        check(self.audio_encoder in ("wav2vec2", "whisper", "mel"), "preprocess.audio_encoder",
              "must be wav2vec2|whisper|mel")
        check(self.mel_bins >= 1, "preprocess.mel_bins", "must be >= 1")
        check(self.shard_max_bytes > 0, "preprocess.shard_max_bytes", "must be > 0")
        check(self.num_workers >= 1, "preprocess.num_workers", "must be >= 1")
        check(0.0 < self.min_valid_fraction <= 1.0, "preprocess.min_valid_fraction", "must be in (0, 1]")
        check(self.detect_max_side >= 0, "preprocess.detect_max_side", "must be >= 0")
        check(self.smooth_window >= 1, "preprocess.smooth_window", "must be >= 1")
        check(self.kps_smooth_window >= 1, "preprocess.kps_smooth_window", "must be >= 1")
        check(0 <= self.crf <= 51, "preprocess.crf", "must be in [0, 51]")
        check(self.actor_num_cpus >= 0 and self.task_num_cpus > 0, "preprocess.task_num_cpus",
              "actor_num_cpus must be >= 0 and task_num_cpus > 0")
        check(self.max_retries >= 0, "preprocess.max_retries", "must be >= 0")
        check(self.min_face_size >= 0, "preprocess.min_face_size", "must be >= 0")
