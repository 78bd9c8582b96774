"""FVD: I3D (Kinetics-400, TorchScript) features of 16-frame clips + Fréchet distance (StyleGAN-V convention).

Input convention
----------------
- A video is RGB ``uint8`` ``(T, H, W, 3)`` at its native frame rate (25 fps here; no subsampling).
- It is cut into non-overlapping ``clip_frames``-frame clips (default 16, "FVD-16"); the trailing
  ``T mod clip_frames`` frames are dropped and counted; a video shorter than one clip gives no clip and is
  counted in :attr:`ClipFeatures.too_short` (never padded, which would change the statistics).
- A clip becomes float ``(1, 3, t, H, W)`` in [-1, 1] (``x / 127.5 - 1``) and goes through
  ``detector(clip, rescale=False, resize=True, return_features=True)``: the detector resizes every frame to
  224×224 and returns the 400-d logits before the softmax. (StyleGAN-V's ``compute_fvd`` passes the uint8
  tensor with ``rescale=True`` instead, which does the same ``/127.5 − 1`` inside the TorchScript graph.)
- Statistics use ``ddof=0`` (StyleGAN-V's ``FeatureStats``); a full-rank 400-d covariance needs ≥ 401 clips.

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


@dataclass
class I3DDetector:
    model: nn.Module
    random_weights: bool

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model(clips, **DETECTOR_KWARGS)


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


def clips_to_detector_input(clips: np.ndarray) -> torch.Tensor:
    """``(b, t, H, W, 3)`` uint8 -> float ``(b, 3, t, H, W)`` in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(clips)).permute(0, 4, 1, 2, 3).float()
    return x / 127.5 - 1.0


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
    device = next(iter(detector.model.parameters()), torch.zeros(())).device
    for video, name in zip(videos, names):
        clips, dropped = split_clips(video, clip_frames, name)
        result.dropped_frames += dropped
        if len(clips) == 0:
            result.too_short.append(name)
            continue
        for i in range(0, len(clips), batch_clips):
            out = detector(clips_to_detector_input(clips[i : i + batch_clips]).to(device))
            feats.append(out.double().cpu().numpy().reshape(out.shape[0], -1))
    result.features = np.concatenate(feats) if feats else np.zeros((0, 0))
    result.num_clips = len(result.features)
    return result


def fvd_from_features(gen: np.ndarray, gt: np.ndarray, allow_rank_deficient: bool = False) -> float:
    """FVD of two clip-feature sets (StyleGAN-V: biased covariance)."""
    for feats, what in ((gen, "generated"), (gt, "ground-truth")):
        if len(feats) == 0:
            raise ValueError(f"FVD: no {what} clips (every video shorter than one clip?)")
    return frechet_distance_from_features(
        gen, gt, ddof=0, allow_rank_deficient=allow_rank_deficient,
        names=("FVD generated clips", "FVD ground-truth clips"),
    )
