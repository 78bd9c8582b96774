"""Synthetic clips written as shards in the documented format (docs/shard-format.md) with
``preprocessing.shards``: a moving square "face" with keypoints, mouth and lip boxes, random audio features and
optional latents (posterior mean and std). For tests and the training benchmark; real shards come from
``infra/preprocess.py``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_synthetic_shards(out: Path, clips: int = 6, frames: int = 16, size: int = 64, audio_dim: int = 32,
                           latent_size: int | None = 8, no_audio: tuple[int, ...] = (), per_shard: int = 3,
                           seed: int = 0) -> Path:
    """Moving-square clips with keypoints, mouth boxes, audio features and (optionally) latents."""
    from perception.media import encode_mp4_bytes, wav_bytes
    from preprocessing.shards import FORMAT_VERSION, encode_sample, file_sha256, sample_sha256, write_tar

    rng = np.random.default_rng(seed)
    samples, index_samples = [], []
    for c in range(clips):
        video = np.zeros((frames, size, size, 3), np.uint8)
        video[..., 0] = 40 + 10 * c
        kps = np.zeros((frames, 5, 2), np.float32)
        mouth = np.zeros((frames, 4), np.float32)
        lips = np.zeros((frames, 4), np.float32)
        for f in range(frames):
            cx, cy = size / 2 + 4 * np.sin(f / 3 + c), size / 2 + 2 * np.cos(f / 4)
            video[f, int(cy) - 8:int(cy) + 8, int(cx) - 8:int(cx) + 8] = (200, 180, 160)
            kps[f] = [[cx - 6, cy - 5], [cx + 6, cy - 5], [cx, cy], [cx - 4, cy + 6], [cx + 4, cy + 6]]
            mouth[f] = [cx - 6, cy + 3, cx + 6, cy + 9]
            lips[f] = [cx - 4, cy + 4.5, cx + 4, cy + 7.5 + (f % 4)]  # the mouth opens and closes
        has_audio = c not in no_audio
        meta = {"source": f"synthetic://{c}", "video_id": f"syn{c}", "clip_index": 0, "start_s": 0.0,
                "end_s": frames / 25, "fps": 25, "num_frames": frames, "crop_box": [0, 0, size, size],
                "crop_size": size, "has_audio": has_audio, "face_backend": "synthetic",
                "audio_encoder": "synthetic", "audio_dim": audio_dim, "has_latents": latent_size is not None,
                "lips": "synthetic"}
        audio = rng.standard_normal((2 * frames, audio_dim)).astype(np.float16) if has_audio else None
        wav = wav_bytes(rng.uniform(-0.1, 0.1, 16000 * frames // 25).astype(np.float32)) if has_audio else None
        latents = (rng.standard_normal((frames, 4, latent_size, latent_size)).astype(np.float16)
                   if latent_size else None)
        latents_std = rng.uniform(0.05, 0.2, latents.shape).astype(np.float16) if latent_size else None
        key = f"syn{c}_c0000"
        samples.append(encode_sample(key, meta, encode_mp4_bytes(video, 25), kps, mouth, wav=wav,
                                     audio_features=audio, latents=latents, lips=lips, latents_std=latents_std))
        index_samples.append({"key": key, "num_frames": frames, "has_audio": has_audio,
                              "shard": f"shard-{c // per_shard:06d}.tar", "sha256": sample_sha256(samples[-1])})
    shards = []
    for i in range(0, clips, per_shard):
        name = f"shard-{i // per_shard:06d}.tar"
        path = write_tar(out / "shards" / name, samples[i:i + per_shard])
        shards.append({"name": name, "num_samples": len(samples[i:i + per_shard]), "bytes": path.stat().st_size,
                       "sha256": file_sha256(path)})
    (out / "index.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "shards": shards,
                                                "samples": index_samples, "totals": {}}))
    return out
