"""One training example from one clip: frame choice, reference frame, V-Kps, audio windows, lip mask, latents;
and the batch collation. ``training.data`` runs :class:`ExampleBuilder` as the loader's last step."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from model.config import ModelConfig
from preprocessing.latents import resize_frames
from training.config import DataConfig

log = logging.getLogger("training.data")
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


@dataclass
class ClipSample:
    """A decoded clip: arrays are numpy; ``mp4`` stays encoded until frames are needed."""

    key: str
    meta: dict[str, Any]
    kps: np.ndarray  # (N, 5, 2) crop pixels
    mouth: np.ndarray  # (N, 4) crop pixels
    audio: np.ndarray | None  # (2N, D)
    latents: np.ndarray | None  # (N, 4, h, w)
    mp4: bytes | None
    index: int
    unit: int
    lips: np.ndarray | None = None  # (N, 4) lip boxes in crop pixels (format v2); None: approximated from kps
    latents_std: np.ndarray | None = None  # (N, 4, h, w) posterior std x scaling (format v2, precomputed latents)


def choose_frames(num_frames: int, target: int, min_distance: int, rng: np.random.Generator) -> tuple[int, int]:
    """Start of ``target`` contiguous frames and a reference index >= ``min_distance`` frames from them.

    When the clip is too short for the distance, the reference is the frame farthest from the target span."""
    if num_frames < target:
        raise ValueError(f"clip has {num_frames} frames, fewer than data.num_frames={target}")
    start = int(rng.integers(0, num_frames - target + 1))
    end = start + target - 1
    candidates = [i for i in range(num_frames) if i <= start - min_distance or i >= end + min_distance]
    if candidates:
        return start, int(rng.choice(candidates))
    _warn_once("refdist", f"clip of {num_frames} frames too short for reference distance {min_distance}; "
                          "using the farthest frame")
    far = 0 if start >= num_frames - 1 - end else num_frames - 1
    return start, far


def clip_lip_boxes(clip: ClipSample) -> np.ndarray:
    """The clip's lip boxes (format v2), or the 5-point approximation with a closed mouth (format v1, or a sample
    written without them)."""
    if clip.lips is not None:
        return clip.lips.astype(np.float32)
    from perception.lips import lip_boxes_from_corners

    _warn_once("nolips", f"{clip.key}: no lip boxes in the shard (format v1?); approximating them from the mouth "
                         "corners with a closed mouth (re-run preprocessing for the opening-aware boxes)")
    return lip_boxes_from_corners(clip.kps)


class ExampleBuilder:
    """ClipSample -> training example (a dict of tensors), with a per-sample seeded RNG."""

    def __init__(self, data: DataConfig, model: ModelConfig, seed: int) -> None:
        self.data, self.model, self.seed = data, model, seed

    def __call__(self, clip: ClipSample) -> dict[str, Any]:
        from model.audio_windows import audio_windows
        from model.vkps import flip_keypoints, render_vkps
        from perception.lips import lip_mask

        rng = np.random.default_rng([self.seed, clip.unit, clip.index, 1])
        n, f = int(clip.meta["num_frames"]), self.data.num_frames
        res, lat = self.model.resolution, self.model.latent_size
        crop = float(clip.meta.get("crop_size", 512))
        start, ref = choose_frames(n, f, self.data.reference_min_distance, rng)
        flip = bool(rng.random() < self.data.horizontal_flip)
        target_idx = list(range(start, start + f))

        use_latents = self.data.use_latents and clip.latents is not None and clip.latents.shape[-1] == lat
        if self.data.use_latents and clip.latents is not None and not use_latents:
            _warn_once("latsize", f"{clip.key}: latents {clip.latents.shape[-2:]} do not match latent size {lat}; "
                                  "encoding frames instead")
        latent_std: dict[str, Any] = {}
        if use_latents:
            target = torch.from_numpy(clip.latents[target_idx].astype(np.float32)).permute(1, 0, 2, 3)
            reference = torch.from_numpy(clip.latents[ref].astype(np.float32))
            latent_std = _latent_std(clip, target_idx, ref, target, reference)
        else:
            from perception.media import read_frames

            if clip.mp4 is None:
                raise ValueError(f"{clip.key}: no mp4 and no usable latents")
            needed = max(start + f, ref + 1)  # decode no further than the last frame used
            frames = read_frames(clip.mp4, max_frames=needed)
            if len(frames) < needed:
                raise ValueError(f"{clip.key}: mp4 decoded {len(frames)} frames, metadata says {n}")
            target = resize_frames(frames[target_idx], res)
            reference = resize_frames(frames[[ref]], res)[:, 0]

        kps = torch.from_numpy(clip.kps[target_idx] * (res / crop))
        mask = torch.from_numpy(lip_mask(clip_lip_boxes(clip)[target_idx], int(crop), lat))
        if flip:
            # Latent flips approximate flipping the image (the VAE is close to flip-equivariant).
            target, reference = target.flip(-1), reference.flip(-1)
            latent_std = {k: v.flip(-1) if torch.is_tensor(v) and v.ndim > 1 else v for k, v in latent_std.items()}
            kps = flip_keypoints(kps, res)
            mask = mask.flip(-1)  # drawn, then flipped, as the official
        radius = max(1, round(4 * res / 512))  # the official radius 4 at 512 px, as the inference pipeline
        vkps = render_vkps(kps, res, radius=radius).permute(1, 0, 2, 3).float()  # (3, F, H, W)

        if clip.audio is not None:
            feats = torch.from_numpy(clip.audio.astype(np.float32))[None]
            windows = audio_windows(feats, n, context=self.model.audio_frames_context)[0, start:start + f]
        else:
            windows = torch.zeros(f, self.model.audio_tokens_in, self.model.audio_embed_dim)
        return {
            "target": target, "reference": reference, "is_latent": use_latents,
            "vkps": vkps, "mouth_mask": mask, **latent_std,
            "audio": windows.float(), "has_audio": float(clip.audio is not None),
            "__key__": clip.key, "__index__": clip.index, "__unit__": clip.unit,
        }


def _latent_std(clip: ClipSample, target_idx: list[int], ref: int, target: torch.Tensor,
                reference: torch.Tensor) -> dict[str, Any]:
    """Posterior std of the target and reference latents (zeros, flagged unknown, when the shard has none)."""
    if clip.latents_std is None or clip.latents_std.shape != clip.latents.shape:
        return {"target_std": torch.zeros_like(target), "reference_std": torch.zeros_like(reference),
                "latent_std_known": 0.0}
    std = clip.latents_std
    return {"target_std": torch.from_numpy(std[target_idx].astype(np.float32)).permute(1, 0, 2, 3),
            "reference_std": torch.from_numpy(std[ref].astype(np.float32)), "latent_std_known": 1.0}


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = {e["is_latent"] for e in examples}
    if len(kinds) > 1:  # a batch must be all latents or all frames; frames are encoded in the train step
        raise ValueError("batch mixes precomputed latents and frames; set data.use_latents=false or rebuild shards")
    batch: dict[str, Any] = {k: torch.stack([e[k] for e in examples]) for k in
                             ("target", "reference", "vkps", "mouth_mask", "audio")}
    batch["has_audio"] = torch.tensor([e["has_audio"] for e in examples])
    batch["is_latent"] = kinds.pop()
    if batch["is_latent"]:
        batch.update({k: torch.stack([e[k] for e in examples]) for k in ("target_std", "reference_std")})
        batch["latent_std_known"] = torch.tensor([e["latent_std_known"] for e in examples])
    batch["__keys__"] = [e["__key__"] for e in examples]
    batch["__unit__"] = examples[-1]["__unit__"]
    batch["__position__"] = max(e["__index__"] for e in examples) + 1
    return batch
