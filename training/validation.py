"""Validation video during training: a fixed clip, a fixed seed, the inference pipeline (``model.pipeline``).

The clip is the first sample of the first shard (always the same), the reference image its first frame, the
V-Kps its first ``train.validation_frames`` frames' keypoints, the audio its precomputed features; the video
(muxed with the clip's wav when present) is written to ``<output_dir>/validation/step-000010.mp4``.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.data import list_shards

log = logging.getLogger(__name__)


def first_clip(shards: str) -> dict[str, bytes]:
    """Members of the first sample in the first shard (local shards only)."""
    url = list_shards(shards)[0]
    members: dict[str, bytes] = {}
    key = None
    with tarfile.open(url) as tar:
        for info in tar:
            if not info.isfile():
                continue
            stem, _, ext = Path(info.name).name.partition(".")
            if key is None:
                key = stem
            if stem != key:
                break
            members[ext] = tar.extractfile(info).read()
    return members


def render_validation_video(cfg: Any, modules: nn.Module, vae: nn.Module, step: int, out: Path) -> Path | None:
    try:
        from model.build import build_noise_scheduler
        from model.pipeline import VExpressPipeline
    except ImportError as exc:  # the inference pipeline is optional for training
        log.info("validation video skipped: inference pipeline unavailable (%s)", exc)
        return None
    from preprocessing.media import read_frames, write_video

    clip = first_clip(cfg.data.shards)
    meta = json.loads(clip["json"])
    frames = read_frames(clip["mp4"])
    n = min(cfg.train.validation_frames, len(frames))
    res = cfg.model.resolution
    kps = np.load(io.BytesIO(clip["kps.npy"]))[:n] * (res / float(meta.get("crop_size", 512)))
    audio = np.load(io.BytesIO(clip["audio.npy"])).astype(np.float32)[:2 * n] if "audio.npy" in clip else None
    if audio is None:
        audio = np.zeros((2 * n, cfg.model.audio_embed_dim), np.float32)
    flags = {name: p.requires_grad for name, p in modules.named_parameters()}
    was_training = modules.training
    vae_dtype = next(vae.parameters()).dtype
    dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(next(modules.parameters()).dtype, "fp32")
    try:
        pipe = VExpressPipeline(modules, vae, build_noise_scheduler("ddim"), device=next(modules.parameters()).device,
                                dtype=dtype, vae_scaling_factor=cfg.model.vae_scaling_factor,
                                audio_context=cfg.model.audio_frames_context)
        result = pipe(frames[0], kps, audio_features=torch.from_numpy(audio), num_frames=n, size=res,
                      num_inference_steps=cfg.inference.num_inference_steps,
                      guidance_scale=cfg.inference.guidance_scale, context_frames=min(n, cfg.inference.context_frames),
                      context_overlap=min(cfg.inference.context_overlap, max(n - 1, 0)),
                      seed=cfg.train.validation_seed, progress=False)
    finally:  # the pipeline freezes and re-casts the modules it is given: give training its state back
        for name, p in modules.named_parameters():
            p.requires_grad_(flags[name])
        modules.train(was_training)
        vae.to(vae_dtype).eval()
    path = out / "validation" / f"step-{step:06d}.mp4"
    wav = None
    if "wav" in clip:
        wav = path.with_suffix(".clip.wav")
        wav.parent.mkdir(parents=True, exist_ok=True)
        wav.write_bytes(clip["wav"])
    write_video(path, result.frames, fps=float(meta.get("fps", 25)), audio=wav)
    if wav is not None:
        wav.unlink(missing_ok=True)
    log.info("validation video %s", path)
    return path
