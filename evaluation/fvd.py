"""FVD: I3D (Kinetics-400, TorchScript) features of 16-frame clips + Fréchet distance.

Which clips, crops, value range and covariance are used is the protocol's choice
(``evaluation.protocols``: ``stylegan-v``, ``latentsync``, ``all-clips``); this module provides the pieces.

Input convention
----------------
- A video is RGB ``uint8`` ``(T, H, W, 3)`` at its native frame rate (25 fps here; no subsampling).
- A clip becomes float ``(1, 3, t, H, W)``: ``value_range="minus1_1"`` maps to [-1, 1] (``x / 127.5 - 1``,
  what StyleGAN-V's ``rescale=True`` does inside the TorchScript graph on uint8 input);
  ``value_range="zero_one"`` is ``x / 255`` (LatentSync passes that to the I3D with ``rescale=False``).
- It goes through ``detector(clip, rescale=False, resize=..., return_features=True)``: with ``resize=True``
  the detector resizes every frame to 224×224 itself; face crops are already 224². The output is the
  400-d logits before the softmax.
- :func:`split_clips` / :func:`i3d_features` cut a video into every non-overlapping ``clip_frames`` clip
  (the ``all-clips`` protocol); trailing frames are dropped and counted, and a video shorter than one clip
  is counted in :attr:`ClipFeatures.too_short` (never padded).

The real detector: ``i3d_torchscript.pt`` from StyleGAN-V (``torch.jit.load``), given as ``eval.i3d_path``.
Without it a random-weight :class:`evaluation.i3d.InceptionI3d` with the same signature is used and
:attr:`I3DDetector.random_weights` is True.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from evaluation.frechet import frechet_distance_from_features
from evaluation.i3d import InceptionI3d

I3D_FILE = "i3d_torchscript.pt"
DETECTOR_KWARGS = dict(rescale=False, resize=True, return_features=True)
VALUE_RANGES = ("minus1_1", "zero_one")


@dataclass
class I3DDetector:
    model: nn.Module
    random_weights: bool

    def __call__(self, clips: torch.Tensor, resize: bool = True) -> torch.Tensor:
        return self.model(clips, **{**DETECTOR_KWARGS, "resize": resize})

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.parameters()), torch.zeros(())).device


def load_i3d(path: str | Path | None = None, device: str = "cpu", random_width: float = 1.0, seed: int = 0):
    """The TorchScript I3D from ``path``; without a path a random-weight I3D (``random_width`` for tests)."""
    if not path:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = InceptionI3d(width=random_width)
        return I3DDetector(model.eval().requires_grad_(False).to(device), random_weights=True)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: I3D TorchScript file not found (expected StyleGAN-V's {I3D_FILE})")
    try:
        model = torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise ValueError(f"{path}: not a TorchScript module ({exc})") from exc
    return I3DDetector(model.eval(), random_weights=False)


@dataclass
class ClipFeatures:
    features: np.ndarray  # (num_clips, 400) float64
    num_clips: int = 0
    dropped_frames: int = 0  # trailing frames that did not fill a clip
    too_short: list[str] = field(default_factory=list)  # names of videos shorter than one clip


def split_clips(video: np.ndarray, clip_frames: int = 16, name: str = "video") -> tuple[np.ndarray, int]:
    """``(T, H, W, 3)`` uint8 -> ``(T // clip_frames, clip_frames, H, W, 3)`` and the dropped frame count."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 RGB video (T, H, W, 3), got {video.dtype} {video.shape}")
    n = len(video) // clip_frames
    return video[: n * clip_frames].reshape(n, clip_frames, *video.shape[1:]), len(video) - n * clip_frames


def clips_to_detector_input(clips: np.ndarray, value_range: str = "minus1_1") -> torch.Tensor:
    """``(b, t, H, W, 3)`` uint8 -> float ``(b, 3, t, H, W)`` in [-1, 1] or [0, 1]."""
    if value_range not in VALUE_RANGES:
        raise ValueError(f"value_range must be one of {VALUE_RANGES}, got {value_range!r}")
    x = torch.from_numpy(np.ascontiguousarray(clips)).permute(0, 4, 1, 2, 3).float()
    return x / 127.5 - 1.0 if value_range == "minus1_1" else x / 255.0


@torch.no_grad()
def clip_features(detector: I3DDetector, clips: np.ndarray, value_range: str = "minus1_1", resize: bool = True,
                  batch_clips: int = 2) -> np.ndarray:
    """I3D features (float64 ``(n, 400)``) of uint8 clips ``(n, t, H, W, 3)``."""
    feats = []
    for i in range(0, len(clips), batch_clips):
        out = detector(clips_to_detector_input(clips[i : i + batch_clips], value_range).to(detector.device), resize)
        feats.append(out.double().cpu().numpy().reshape(out.shape[0], -1))
    return np.concatenate(feats) if feats else np.zeros((0, 0))


def face_crop_clip(frames: np.ndarray, boxes: list, size: int = 224) -> np.ndarray:
    """Each frame's face box (x0, y0, x1, y1; truncated to integers and clamped to the frame, as LatentSync's
    ``detect_face``) resized to ``size``² with area interpolation; ``ValueError`` if a frame has no face."""
    import cv2

    h, w = frames.shape[1:3]
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, (frame, box) in enumerate(zip(frames, boxes)):
        if box is None:
            raise ValueError(f"no face in clip frame {i}")
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"clip frame {i}: empty face box {list(box)}")
        out[i] = cv2.resize(np.ascontiguousarray(frame[y0:y1, x0:x1]), (size, size), interpolation=cv2.INTER_AREA)
    return out


@torch.no_grad()
def i3d_features(
    detector: I3DDetector,
    videos: list[np.ndarray],
    names: list[str] | None = None,
    clip_frames: int = 16,
    batch_clips: int = 2,
) -> ClipFeatures:
    """I3D features of every full clip of every video."""
    names = names or [f"video {i}" for i in range(len(videos))]
    if len(names) != len(videos):
        raise ValueError(f"{len(videos)} videos but {len(names)} names")
    result = ClipFeatures(features=np.zeros((0, 0)))
    feats = []
    for video, name in zip(videos, names):
        clips, dropped = split_clips(video, clip_frames, name)
        result.dropped_frames += dropped
        if len(clips) == 0:
            result.too_short.append(name)
            continue
        feats.append(clip_features(detector, clips, batch_clips=batch_clips))
    result.features = np.concatenate(feats) if feats else np.zeros((0, 0))
    result.num_clips = len(result.features)
    return result


def fvd_from_features(gen: np.ndarray, gt: np.ndarray, allow_rank_deficient: bool = True, ddof: int = 0) -> float:
    """FVD of two clip-feature sets (StyleGAN-V: biased covariance, ``ddof=0``; LatentSync: ``ddof=1``)."""
    for feats, what in ((gen, "generated"), (gt, "ground-truth")):
        if len(feats) == 0:
            raise ValueError(f"FVD: no {what} clips (every video shorter than one clip?)")
    return frechet_distance_from_features(
        gen, gt, ddof=ddof, allow_rank_deficient=allow_rank_deficient,
        names=("FVD generated clips", "FVD ground-truth clips"),
    )
