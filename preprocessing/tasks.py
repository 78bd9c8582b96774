"""The Ray tasks and actors of the preprocessing job (``preprocessing.pipeline`` schedules them).

Each is a thin wrapper over the Ray-free stage functions of ``preprocessing.stages``; actors hold the models
(face detector, audio encoder, VAE) so a pool loads each once per worker.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from preprocessing import shards, stages
from preprocessing.config import PreprocessConfig
from preprocessing.inputs import localize

CRASH_ONCE_ENV = "VEXPRESS_PREPROCESS_CRASH_ONCE"  # tests: a folder; the first crop_encode task kills its worker


def _limit_threads(uses_torch: bool = False) -> None:
    """One thread per Ray worker: Ray already runs one worker per logical CPU."""
    import cv2

    cv2.setNumThreads(1)
    if uses_torch:
        import torch

        torch.set_num_threads(1)


def face_backend_name(cfg: PreprocessConfig) -> str:
    return cfg.face_backend if cfg.face_backend == "yunet" else f"insightface:{cfg.insightface_pack}"


def make_face_backend(cfg: PreprocessConfig):
    """The configured detector, thresholded below ``min_face_score`` (the clip rules apply that score)."""
    from perception.faces import FaceSettings
    from perception.faces import make_face_backend as make

    return make(cfg.face_backend, FaceSettings(score_threshold=min(0.5, cfg.min_face_score), root=cfg.insightface_root,
                                               pack=cfg.insightface_pack, gpu=cfg.use_gpu))


class FaceActor:
    def __init__(self, cfg: PreprocessConfig) -> None:
        _limit_threads()
        self.cfg, self.backend = cfg, make_face_backend(cfg)

    def ready(self) -> bool:
        return True

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        return stages.detect_faces(self.backend, frames, self.cfg.detect_max_side)


class AudioActor:
    def __init__(self, cfg: PreprocessConfig, path: str) -> None:
        from perception.audio import AudioEncoder

        _limit_threads(uses_torch=True)
        self.encoder = AudioEncoder(path, cfg.audio_encoder, device="cuda" if cfg.use_gpu else "cpu",
                                    mel_bins=cfg.mel_bins)

    def ready(self) -> bool:
        return True

    def features(self, audio: np.ndarray, start_s: float, num_frames: int, fps: float) -> np.ndarray:
        return self.encoder.features_for_clip(stages.clip_audio(audio, start_s, num_frames, fps), num_frames)


class VaeActor:
    def __init__(self, cfg: PreprocessConfig, path: str) -> None:
        import torch
        from diffusers import AutoencoderKL

        _limit_threads(uses_torch=True)
        self.device = torch.device("cuda" if cfg.use_gpu else "cpu")
        self.vae = AutoencoderKL.from_pretrained(path).eval().to(self.device)

    def ready(self) -> bool:
        return True

    def add_latents(self, payload: dict) -> dict:
        import torch

        if "sample" not in payload:
            return payload
        crops = payload.pop("crops")
        means, stds = [], []
        with torch.inference_mode():
            for i in range(0, len(crops), 8):
                x = torch.from_numpy(crops[i:i + 8]).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
                posterior = self.vae.encode(x).latent_dist  # stored as mean and std so training can sample it
                means.append((posterior.mean * self.vae.config.scaling_factor).half().cpu().numpy())
                stds.append((posterior.std * self.vae.config.scaling_factor).half().cpu().numpy())
        sample = shards.add_latents(payload["sample"], np.concatenate(means), np.concatenate(stds))
        return {"sample": sample, "crops": None}


def probe_task(source: str, cfg: PreprocessConfig, cache_dir: str) -> tuple[dict, Any]:
    try:
        local = localize(source, Path(cache_dir))
    except Exception as exc:  # network/permission errors on a remote source
        return {"rejection": stages.Rejection(source, "unreadable", f"{source}: cannot fetch ({exc})").as_dict()}, None
    plan, audio = stages.probe_video(local, cfg)
    if isinstance(plan, stages.Rejection):
        return {"rejection": plan.as_dict()}, None
    plan.content_sha256 = shards.file_sha256(local)  # the same file under two names is processed once
    return {"plan": plan, "local": local}, audio


def decode_task(local: str, start_s: float, num_frames: int, fps: float) -> np.ndarray:
    return stages.decode_clip(local, start_s, num_frames, fps)


def crop_encode_task(plan, span, frames, detections, audio, audio_features, cfg, names) -> tuple[dict, dict]:
    crash_dir = os.environ.get(CRASH_ONCE_ENV)
    if crash_dir and not (marker := Path(crash_dir) / "crashed").exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))
        os._exit(1)  # a dying worker: Ray must retry this task
    segment = stages.clip_audio(audio, span.start_s(plan.fps), span.num_frames, plan.fps) if audio is not None else None
    sample, rejection, crops = stages.crop_and_encode(plan, span, frames, detections, segment, audio_features, cfg,
                                                      names["face"], names["audio"])
    if rejection is not None:
        return {"ok": False, "reason": rejection.reason}, {"rejection": rejection.as_dict()}
    summary = {"ok": True, "key": sample["__key__"], "num_frames": span.num_frames}
    return summary, {"sample": sample, "crops": crops if cfg.precompute_latents else None}


def commit_task(work_dir: str, plan: stages.VideoPlan, fingerprint: str, *payloads: dict) -> dict:
    """Write one video's samples (tar) and record (json) atomically; the json is the 'done' marker (for the
    output fingerprint it records)."""
    samples = [p["sample"] for p in payloads if "sample" in p]
    rejected = [p["rejection"] for p in payloads if "rejection" in p]
    vdir = Path(work_dir)
    if samples:
        shards.write_tar(vdir / f"{plan.video_id}.tar", samples)
    record = {
        "source": plan.source, "video_id": plan.video_id, "duration_s": plan.duration_s,
        "samples": [{"key": s["__key__"], "bytes": shards.sample_bytes(s), "sha256": shards.sample_sha256(s),
                     "num_frames": shards.sample_meta(s)["num_frames"],
                     "seconds": round(shards.sample_meta(s)["num_frames"] / plan.fps, 6),
                     "has_audio": shards.sample_meta(s)["has_audio"]} for s in samples],
        "rejected": rejected, "fingerprint": fingerprint, "content_sha256": plan.content_sha256,
    }
    if not samples:
        (vdir / f"{plan.video_id}.tar").unlink(missing_ok=True)  # samples of an earlier config
    shards.write_json_atomic(vdir / f"{plan.video_id}.json", record)
    return {"video_id": plan.video_id, "kept": len(samples), "rejected": len(rejected), "seconds": plan.duration_s}


def write_shard_task(path: str, keys: list[str], video_tars: list[str]) -> dict:
    wanted = set(keys)
    by_key = {}
    for tar in video_tars:
        for sample in shards.iter_tar_samples(tar):
            if sample["__key__"] in wanted:
                by_key[sample["__key__"]] = sample
    missing = wanted - set(by_key)
    if missing:
        raise RuntimeError(f"{path}: samples missing from work/: {sorted(missing)[:5]}")
    shards.write_tar(path, (by_key[k] for k in keys))
    return {"name": Path(path).name, "bytes": Path(path).stat().st_size, "sha256": shards.file_sha256(path)}
