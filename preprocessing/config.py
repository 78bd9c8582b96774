"""Preprocessing configuration (``python infra/preprocess.py``).

Each field says what it is for in its metadata: ``OUTPUT`` fields decide what a video's samples are (rerunning
into an output made with other values would mix samples, see :func:`output_fingerprint`), ``RUNTIME`` fields only
how the job runs (left out of ``index.json``). The others (``shard_max_bytes``, ``extra``) are recorded in the
index without invalidating processed videos (shards are repacked on every run anyway).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from infra.config import check
from perception.faces import FACE_BACKENDS

OUTPUT = {"affects_output": True}
RUNTIME = {"runtime": True}


@dataclass
class PreprocessConfig:
    fps: float = field(default=25.0, metadata=OUTPUT)
    clip_seconds: float = field(default=4.0, metadata=OUTPUT)
    min_clip_seconds: float = field(default=2.0, metadata=OUTPUT)
    crop_size: int = field(default=512, metadata=OUTPUT)
    face_backend: str = field(default="yunet", metadata=OUTPUT)  # yunet (offline default) | insightface
    insightface_root: str = field(default="", metadata=OUTPUT)  # folder with models/<pack>/*.onnx
    insightface_pack: str = field(default="buffalo_l", metadata=OUTPUT)
    min_face_size: int = field(default=64, metadata=OUTPUT)  # pixels, shorter side of the detected box
    min_face_score: float = field(default=0.6, metadata=OUTPUT)
    # share of a clip's frames that must show exactly one valid face
    min_valid_fraction: float = field(default=1.0, metadata=OUTPUT)
    # frames are downscaled to this longest side for detection (0: full size);
    # detection cost grows with it (docs/preprocessing.md); raise it for HD sources with small faces
    detect_max_side: int = field(default=320, metadata=OUTPUT)
    smooth_window: int = field(default=5, metadata=OUTPUT)  # frames of moving average on the face boxes before the crop
    # frames of centred moving average on the stored keypoints (1: as detected)
    kps_smooth_window: int = field(default=1, metadata=OUTPUT)
    crop_margin: float = field(default=0.6, metadata=OUTPUT)  # extra margin around the union face box, relative to it
    # wav2vec2 | whisper | mel (log-mel, no weights: the CPU preset)
    audio_encoder: str = field(default="wav2vec2", metadata=OUTPUT)
    # local transformers folder; empty -> tiny random encoder (tests)
    audio_encoder_path: str = field(default="", metadata=OUTPUT)
    mel_bins: int = field(default=32, metadata=OUTPUT)  # feature width of the mel encoder (= model.audio_embed_dim)
    require_audio: bool = field(default=False, metadata=OUTPUT)  # False: keep video-only clips with has_audio=false
    # a clip whose audio is below silence_db is rejected ("silence")
    reject_silence: bool = field(default=True, metadata=OUTPUT)
    silence_db: float = field(default=-50.0, metadata=OUTPUT)  # dBFS (RMS over the clip)
    crf: int = field(default=18, metadata=OUTPUT)  # h264 quality of the crops
    # libx264 preset: speed vs size at a fixed crf (docs/preprocessing.md)
    encode_preset: str = field(default="veryfast", metadata=OUTPUT)
    precompute_latents: bool = field(default=False, metadata=OUTPUT)
    vae_path: str = field(default="", metadata=OUTPUT)
    shard_max_bytes: int = 1_000_000_000
    # Ray CPUs of an embedded cluster and size of each model actor pool
    num_workers: int = field(default=1, metadata=RUNTIME)
    use_gpu: bool = field(default=False, metadata=RUNTIME)  # model actors ask for actor_num_gpus GPUs each
    # logical CPUs reserved per model actor (they idle between batches)
    actor_num_cpus: float = field(default=0.25, metadata=RUNTIME)
    actor_num_gpus: float = field(default=0.5, metadata=RUNTIME)  # per model actor when use_gpu
    task_num_cpus: float = field(default=0.5, metadata=RUNTIME)  # per decode / crop+encode / write task
    # backpressure: clips submitted but not finished (0: 4 x num_workers)
    max_clips_in_flight: int = field(default=0, metadata=RUNTIME)
    max_retries: int = field(default=3, metadata=RUNTIME)  # Ray retries of a failed task / restarts of a dead actor
    # embedded Ray's temp dir (short path: unix sockets); empty -> /tmp/vexray-<pid>
    ray_temp_dir: str = field(default="", metadata=RUNTIME)
    progress_every_s: float = field(default=10.0, metadata=RUNTIME)  # period of the progress line
    # rerun into an output made with other OUTPUT fields: "error" (refuse, naming them) | "reprocess" (redo
    # every video processed with other values; the shards and index are rebuilt)
    on_config_change: str = field(default="error", metadata=RUNTIME)

    def __post_init__(self) -> None:
        check(self.fps > 0, "preprocess.fps", "must be > 0")
        check(self.clip_seconds > 0, "preprocess.clip_seconds", "must be > 0")
        check(0 < self.min_clip_seconds <= self.clip_seconds, "preprocess.min_clip_seconds",
              "must be in (0, clip_seconds]")
        check(self.crop_size % 8 == 0, "preprocess.crop_size", "must be a multiple of 8")
        check(self.face_backend in FACE_BACKENDS, "preprocess.face_backend",
              f"must be {'|'.join(FACE_BACKENDS)}, got {self.face_backend!r}")
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
        check(self.on_config_change in ("error", "reprocess"), "preprocess.on_config_change",
              f"must be error|reprocess, got {self.on_config_change!r}")


def output_fingerprint(cfg: PreprocessConfig) -> dict[str, Any]:
    """What decides a video's samples: every field declared ``OUTPUT`` (as ``preprocess.<name>``) and the shard
    format version. Equal fingerprints mean a processed video can be reused as it is."""
    from preprocessing.shards import FORMAT_VERSION

    out: dict[str, Any] = {f"preprocess.{f.name}": getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                           if f.metadata.get("affects_output")}
    out["shard format_version"] = FORMAT_VERSION
    return out


def index_config(cfg: PreprocessConfig) -> dict[str, Any]:
    """The config recorded in ``index.json``: every field but the ``RUNTIME`` ones."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if not f.metadata.get("runtime")}
