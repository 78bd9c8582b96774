"""Validation during training: a fixed clip, a fixed seed, the inference pipeline (``model.pipeline``).

The clip is the first sample with audio of ``train.validation_shards`` (default ``data.shards``; the demo points
it at its held-out clip), the reference image its first frame, the V-Kps its first ``train.validation_frames``
frames' keypoints, the audio its precomputed features. Written to ``<output_dir>/validation/``:

- ``step-000010.mp4``: the generated frames (muxed with the clip's wav when present);
- ``step-000010.png``: a strip, one row per sampled frame: reference | V-Kps | generated | ground truth.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.data import list_shards

log = logging.getLogger(__name__)
STRIP_ROWS = 4


def first_clip(shards: str) -> dict[str, bytes]:
    """Members of the first sample with audio (else the very first) in the first shard (local shards only)."""
    from preprocessing.shards import iter_tar_samples, sample_meta

    first = None
    for sample in iter_tar_samples(list_shards(shards)[0]):
        if sample_meta(sample).get("has_audio"):
            return sample
        first = first or sample
    if first is None:
        raise ValueError(f"{shards}: the first shard holds no sample to validate on")
    return first


def validation_strip(reference: np.ndarray, vkps: np.ndarray, generated: np.ndarray, truth: np.ndarray,
                     rows: int = STRIP_ROWS) -> np.ndarray:
    """uint8 (rows*S, 4*S, 3): for evenly spaced frames, reference | V-Kps | generated | ground truth."""
    idx = np.linspace(0, len(generated) - 1, min(rows, len(generated))).round().astype(int)
    panels = [np.concatenate([reference, vkps[i], generated[i], truth[i]], axis=1) for i in idx]
    return np.concatenate(panels, axis=0)


def render_validation_video(cfg: Any, modules: nn.Module, vae: nn.Module, step: int, out: Path) -> list[Path]:
    """Write the validation video and strip for ``step``; returns their paths (empty if unavailable)."""
    try:
        from model.pipeline import VExpressPipeline
        from model.schedulers import build_noise_scheduler
    except ImportError as exc:  # the inference pipeline is optional for training
        log.info("validation video skipped: inference pipeline unavailable (%s)", exc)
        return []
    from PIL import Image

    from model.inference_config import sampling_kwargs
    from model.vkps import render_vkps
    from perception.audio import SAMPLE_RATE
    from perception.media import write_video
    from preprocessing.latents import resize_frames
    from preprocessing.shards import decode_sample

    clip = decode_sample(first_clip(cfg.train.validation_shards or cfg.data.shards))
    meta, frames = clip["meta"], clip["frames"]
    n = min(cfg.train.validation_frames, len(frames))
    res = cfg.model.resolution
    truth = ((resize_frames(frames[:n], res).permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()
    kps = clip["kps"][:n] * (res / float(meta.get("crop_size", 512)))
    audio = clip["audio_features"].astype(np.float32)[:2 * n] if "audio_features" in clip else None
    if audio is None:
        audio = np.zeros((2 * n, cfg.model.audio_embed_dim), np.float32)
    flags = {name: p.requires_grad for name, p in modules.named_parameters()}
    was_training = modules.training
    vae_dtype = next(vae.parameters()).dtype
    dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(next(modules.parameters()).dtype, "fp32")
    inf = cfg.inference
    try:
        pipe = VExpressPipeline(modules, vae, build_noise_scheduler(cfg.inference.scheduler), device=next(modules.parameters()).device,
                                dtype=dtype, audio_context=cfg.model.audio_frames_context)
        options = {**sampling_kwargs(inf), "seed": cfg.train.validation_seed, "progress": False,
                   "context_frames": min(n, inf.context_frames),
                   "context_overlap": min(inf.context_overlap, max(min(n, inf.context_frames) - 1, 0))}
        result = pipe(truth[0], kps, audio_features=torch.from_numpy(audio), num_frames=n, size=res, **options)
    finally:  # the pipeline freezes and re-casts the modules it is given: give training its state back
        for name, p in modules.named_parameters():
            p.requires_grad_(flags[name])
        modules.train(was_training)
        vae.to(vae_dtype).eval()
    path = out / "validation" / f"step-{step:06d}.mp4"
    write_video(path, result.frames, fps=float(meta.get("fps", 25)), audio=clip.get("audio"), sample_rate=SAMPLE_RATE)
    vkps = (render_vkps(kps, res, radius=max(1, round(4 * res / 512))).permute(0, 2, 3, 1) * 255).byte().numpy()
    strip = path.with_suffix(".png")
    Image.fromarray(validation_strip(truth[0], vkps, result.frames, truth)).save(strip)
    log.info("validation video %s, strip %s", path, strip)
    return [path, strip]
