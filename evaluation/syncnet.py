"""SyncNet lip-sync scores (LSE-D, LSE-C, AV offset) as syncnet_python's ``SyncNetInstance.evaluate``.

Conventions (those of joonson/syncnet_python, the reference for LSE-D/LSE-C since Wav2Lip):
- Video at 25 fps, audio 16 kHz mono. One video frame = 640 samples = 4 MFCC frames (10 ms hop).
- Audio features: ``python_speech_features.mfcc`` defaults (13 coefficients, 25 ms window, 26 filters,
  energy as c0) on the int16-scaled waveform, as ``scipy.io.wavfile.read`` of a PCM16 file gives it.
- Face track: per-frame face boxes, median-filtered over 13 frames; crop ``[cy − s, cy + s(1 + 2·cs)] ×
  [cx − s(1 + cs), cx + s(1 + cs)]`` (s = half the larger box side, crop scale cs = 0.4) from the frame padded
  with value 110, resized to 224×224, BGR, values 0…255 (``run_pipeline.crop_video``). Boxes come from the
  evaluation's face backend instead of S3FD; which tracks are scored is ``evaluation.sync_tracks``.
- Windows: for frame i, video frames ``i … i+4`` and MFCC frames ``4i … 4i+19``; ``min_length =
  min(frames, floor(samples / 640))``, windows ``0 … min_length − 6`` (the reference's ``lastframe``).
- Distances: audio features padded with ``vshift`` zero vectors at both ends; ``dists[i, k] =
  ‖v_i − a_{i+k−vshift}‖`` (``torch.nn.functional.pairwise_distance``), k = 0 … 2·vshift (vshift = 15).
- Scores from ``mdist = mean_i dists[i, :]``: ``offset = vshift − argmin mdist``; **LSE-D** = ``min mdist``
  (the reference's "Min dist": the frame-averaged distance at the best offset); **LSE-C** =
  ``median(mdist) − min(mdist)`` (the reference's "Confidence"; ``torch.median``, i.e. the lower median).

Weights: ``syncnet_v2.model`` (a state dict of the reference's ``S`` module; same keys here), loaded from a
local path; without one the network has random weights and :attr:`SyncNet.random_weights` is True.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import python_speech_features
import torch
from scipy.signal import medfilt
from torch import nn

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
WINDOW = 5  # video frames per SyncNet input
VSHIFT = 15
CROP_SCALE = 0.4
CROP_SIZE = 224


def _conv_bn(conv: nn.Module, bn: nn.Module, relu_inplace: bool = True) -> list[nn.Module]:
    return [conv, bn, nn.ReLU(inplace=relu_inplace)]


class SyncNetS(nn.Module):
    """The ``S`` network of syncnet_python (same module names, so its state dict loads as is)."""

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        c2, b2 = nn.Conv2d, nn.BatchNorm2d
        self.netcnnaud = nn.Sequential(
            *_conv_bn(c2(1, 64, 3, 1, 1), b2(64)), nn.MaxPool2d(1, 1),
            *_conv_bn(c2(64, 192, 3, 1, 1), b2(192)), nn.MaxPool2d(3, (1, 2)),
            *_conv_bn(c2(192, 384, 3, padding=1), b2(384)),
            *_conv_bn(c2(384, 256, 3, padding=1), b2(256)),
            *_conv_bn(c2(256, 256, 3, padding=1), b2(256)), nn.MaxPool2d(3, 2),
            *_conv_bn(c2(256, 512, (5, 4)), b2(512), relu_inplace=False),
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
        c3, b3 = nn.Conv3d, nn.BatchNorm3d
        self.netcnnlip = nn.Sequential(
            *_conv_bn(c3(3, 96, (5, 7, 7), (1, 2, 2)), b3(96)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn(c3(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), b3(256)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_conv_bn(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256)),
            *_conv_bn(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256)),
            *_conv_bn(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn(c3(256, 512, (1, 6, 6)), b3(512)),
        )

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 13, 20)`` MFCC windows -> ``(N, embed_dim)``."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 5, 224, 224)`` BGR 0…255 windows -> ``(N, embed_dim)``."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))


class SyncNet(nn.Module):
    def __init__(self, weights_path: str | Path | None = None, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = SyncNetS()
        self.random_weights = not weights_path
        if weights_path:
            self._load(Path(weights_path))
        self.eval().requires_grad_(False)

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: SyncNet weights not found (expected syncnet_v2.model)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{path}: not a torch state dict ({exc})") from exc
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
        state = {k.removeprefix("__S__."): v for k, v in state.items()}
        try:
            result = self.net.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise ValueError(f"{path}: not SyncNet weights ({exc})") from exc
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{path}: not SyncNet weights: missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
            )


# ---------------------------------------------------------------- scoring from a distance matrix


@dataclass(frozen=True)
class SyncScores:
    offset: int  # frames; positive = audio leads video (the reference's sign)
    lse_d: float  # lower is better
    lse_c: float  # higher is better
    num_windows: int


def _lower_median(x: np.ndarray) -> float:
    return float(np.sort(x)[(len(x) - 1) // 2])  # torch.median semantics


def sync_scores_from_distances(dists: np.ndarray, vshift: int = VSHIFT) -> SyncScores:
    """``dists`` ``(num_windows, 2·vshift + 1)`` -> offset, LSE-D, LSE-C (see the module docstring)."""
    dists = np.asarray(dists, dtype=np.float64)
    if dists.ndim != 2 or dists.shape[1] != 2 * vshift + 1:
        raise ValueError(f"expected distances (num_windows, {2 * vshift + 1}), got {dists.shape}")
    if len(dists) == 0:
        raise ValueError("no SyncNet windows: the clip is too short")
    mdist = dists.mean(axis=0)
    best = int(np.argmin(mdist))
    lse_d = float(mdist[best])
    return SyncScores(offset=vshift - best, lse_d=lse_d, lse_c=_lower_median(mdist) - lse_d, num_windows=len(dists))


def pairwise_shift_distances(video_feats: torch.Tensor, audio_feats: torch.Tensor, vshift: int = VSHIFT) -> np.ndarray:
    """The reference's ``calc_pdist``: ``(N, D)`` x ``(N, D)`` -> ``(N, 2·vshift + 1)``."""
    padded = torch.nn.functional.pad(audio_feats, (0, 0, vshift, vshift))
    win = 2 * vshift + 1
    rows = [
        torch.nn.functional.pairwise_distance(video_feats[[i]].repeat(win, 1), padded[i : i + win])
        for i in range(len(video_feats))
    ]
    return torch.stack(rows).double().numpy() if rows else np.zeros((0, win))


# ---------------------------------------------------------------- inputs


def mfcc_features(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Float mono audio in [-1, 1] -> MFCC ``(13, num_frames)`` computed on the int16 scale."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"SyncNet needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz (resample first)")
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"SyncNet needs mono audio (samples,), got shape {audio.shape}")
    pcm = np.clip(np.round(audio.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    return python_speech_features.mfcc(pcm, SAMPLE_RATE).T


def syncnet_face_crops(frames: np.ndarray, boxes: np.ndarray, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """RGB ``(T, H, W, 3)`` + face boxes ``(T, 4)`` x0,y0,x1,y1 -> BGR uint8 crops ``(T, 224, 224, 3)``."""
    if len(frames) != len(boxes):
        raise ValueError(f"{len(frames)} frames but {len(boxes)} face boxes")
    boxes = np.asarray(boxes, dtype=np.float64)
    kernel = 13 if len(boxes) >= 13 else (len(boxes) - 1) | 1  # medfilt needs an odd kernel
    size = medfilt(np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2, kernel)
    cy = medfilt((boxes[:, 1] + boxes[:, 3]) / 2, kernel)
    cx = medfilt((boxes[:, 0] + boxes[:, 2]) / 2, kernel)
    out = np.empty((len(frames), CROP_SIZE, CROP_SIZE, 3), np.uint8)
    cs = crop_scale
    for i, frame in enumerate(frames):
        bs = size[i]
        pad = int(bs * (1 + 2 * cs))
        bgr = np.pad(frame[..., ::-1], ((pad, pad), (pad, pad), (0, 0)), constant_values=110)
        my, mx = cy[i] + pad, cx[i] + pad
        face = bgr[int(my - bs) : int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)) : int(mx + bs * (1 + cs))]
        if face.size == 0:
            raise ValueError(f"frame {i}: empty face crop from box {boxes[i].tolist()}")
        out[i] = cv2.resize(np.ascontiguousarray(face), (CROP_SIZE, CROP_SIZE))
    return out


def interpolate_missing_boxes(boxes: list[np.ndarray | None]) -> tuple[np.ndarray, int]:
    """Fill frames without a detection by linear interpolation (the reference's ``track_shot`` does the same
    across missed detections); returns the boxes and the number of frames that had none."""
    from perception.faces import interpolate_missing

    valid = [b is not None for b in boxes]
    if not any(valid):
        raise ValueError(f"no face detected in any of {len(boxes)} frames")
    known = np.stack([np.asarray(b, np.float64) if b is not None else np.full(4, np.nan) for b in boxes])
    return interpolate_missing(known, valid), len(boxes) - sum(valid)


# ---------------------------------------------------------------- the full path


@torch.no_grad()
def sync_distances(
    model: SyncNet, crops_bgr: np.ndarray, audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
    vshift: int = VSHIFT, batch_size: int = 20, max_mismatch_frames: int = 2,
) -> np.ndarray:
    """Distance matrix ``(num_windows, 2·vshift + 1)`` of 224² BGR face crops against their audio.

    Audio and video lengths may differ by up to ``max_mismatch_frames`` frames (the reference only warns and
    uses the shorter); a larger difference means the wrong audio and raises."""
    crops_bgr = np.asarray(crops_bgr)
    if crops_bgr.ndim != 4 or crops_bgr.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
        raise ValueError(f"expected face crops (T, {CROP_SIZE}, {CROP_SIZE}, 3), got {crops_bgr.shape}")
    mfcc = mfcc_features(audio, sample_rate)
    audio_frames = len(audio) / SAMPLES_PER_FRAME
    if abs(audio_frames - len(crops_bgr)) > max_mismatch_frames:
        raise ValueError(
            f"audio ({len(audio) / sample_rate:.3f} s = {audio_frames:.1f} frames) and video "
            f"({len(crops_bgr)} frames at {FPS} fps) lengths differ by more than {max_mismatch_frames} frames"
        )
    min_length = min(len(crops_bgr), math.floor(len(audio) / SAMPLES_PER_FRAME))
    last = min_length - WINDOW
    if last <= 0:
        raise ValueError(f"clip too short for SyncNet: {min_length} frames, need at least {WINDOW + 1}")
    device = next(model.parameters()).device
    video = torch.from_numpy(crops_bgr).permute(3, 0, 1, 2).float()  # (3, T, 224, 224)
    cct = torch.from_numpy(mfcc).float()  # (13, M)
    lip, aud = [], []
    for i in range(0, last, batch_size):
        idx = range(i, min(last, i + batch_size))
        lip.append(model.net.forward_lip(torch.stack([video[:, v : v + WINDOW] for v in idx]).to(device)).cpu())
        aud.append(model.net.forward_aud(torch.stack([cct[None, :, 4 * v : 4 * v + 20] for v in idx]).to(device)).cpu())
    return pairwise_shift_distances(torch.cat(lip), torch.cat(aud), vshift)


def sync_scores(
    model: SyncNet, crops_bgr: np.ndarray, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, vshift: int = VSHIFT
) -> SyncScores:
    """LSE-D, LSE-C and AV offset of one clip (face crops from :func:`syncnet_face_crops`)."""
    return sync_scores_from_distances(sync_distances(model, crops_bgr, audio, sample_rate, vshift), vshift)
