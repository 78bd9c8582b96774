"""Pure functions that turn a decoded video into clips: cutting, face-track checks, the stable crop,
keypoints in crop coordinates and mouth boxes. No I/O, no models, no Ray: everything here is tested on
synthetic arrays (tests/preprocessing/test_clips.py).

Keypoint order everywhere: left eye, right eye, nose, left mouth corner, right mouth corner.
Boxes are ``x0, y0, x1, y1`` floats in pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from perception.faces import FaceLike, interpolate_missing


@dataclass(frozen=True)
class ClipSpan:
    index: int
    start_frame: int
    num_frames: int

    def start_s(self, fps: float) -> float:
        return self.start_frame / fps

    def end_s(self, fps: float) -> float:
        return (self.start_frame + self.num_frames) / fps


def cut_clips(num_frames: int, fps: float, clip_seconds: float, min_clip_seconds: float) -> list[ClipSpan]:
    """Consecutive non-overlapping clips of ``clip_seconds``; a tail shorter than ``min_clip_seconds`` is dropped.

    Lengths are whole frames (``round(seconds * fps)``) so every clip has an exact frame count.
    """
    clip_len = max(1, int(round(clip_seconds * fps)))
    min_len = max(1, int(round(min_clip_seconds * fps)))
    spans: list[ClipSpan] = []
    start = 0
    while start < num_frames:
        n = min(clip_len, num_frames - start)
        if n < min_len:
            break
        spans.append(ClipSpan(len(spans), start, n))
        start += n
    return spans


@dataclass(frozen=True)
class TrackResult:
    """Outcome of checking one clip's detections. ``ok`` False -> ``reason`` says why."""

    ok: bool
    reason: str = ""
    detail: str = ""
    boxes: np.ndarray | None = None  # (F, 4) per-frame box of the tracked face (gaps filled)
    kps: np.ndarray | None = None  # (F, 5, 2)
    scores: np.ndarray | None = None  # (F,) 0 where the frame had no valid face
    valid_fraction: float = 0.0
    lip_boxes: np.ndarray | None = None  # (F, 4) lip landmark boxes when every valid face had them (gaps filled)


def _face_size(box: np.ndarray) -> float:
    return float(min(box[2] - box[0], box[3] - box[1]))


def classify_frame(faces: Sequence[FaceLike], min_size: float, min_score: float) -> tuple[str, FaceLike | None]:
    """One frame's verdict: ``ok`` (exactly one confident face of sufficient size), ``no_face``,
    ``multiple_faces`` (two or more confident faces of sufficient size) or ``face_too_small``."""
    confident = [f for f in faces if f.score >= min_score]
    if not confident:
        return "no_face", None
    big = [f for f in confident if _face_size(np.asarray(f.box)) >= min_size]
    if len(big) > 1:
        return "multiple_faces", None
    if not big:
        return "face_too_small", None
    return "ok", big[0]


def validate_track(
    faces_per_frame: Sequence[Sequence[FaceLike]],
    min_size: float,
    min_score: float,
    min_valid_fraction: float = 1.0,
) -> TrackResult:
    """Keep a clip when at least ``min_valid_fraction`` of its frames show exactly one valid face.

    Frames that fail are filled by interpolating the tracked face from their neighbours. The reason of a
    rejected clip is the most common failing verdict (``no_face`` / ``multiple_faces`` / ``face_too_small``).
    """
    n = len(faces_per_frame)
    if n == 0:
        return TrackResult(False, "empty_clip", "no frames")
    verdicts: list[str] = []
    boxes = np.zeros((n, 4), np.float32)
    kps = np.zeros((n, 5, 2), np.float32)
    scores = np.zeros(n, np.float32)
    lips = np.full((n, 4), np.nan, np.float32)
    for i, faces in enumerate(faces_per_frame):
        verdict, face = classify_frame(faces, min_size, min_score)
        verdicts.append(verdict)
        if face is not None:
            boxes[i], kps[i], scores[i] = face.box, face.kps, face.score
            if getattr(face, "lip_box", None) is not None:
                lips[i] = face.lip_box
    valid = np.array([v == "ok" for v in verdicts])
    fraction = float(valid.mean())
    # Any frame with two confident faces makes the identity ambiguous: the clip goes.
    n_multi = verdicts.count("multiple_faces")
    if fraction < min_valid_fraction or (n_multi and min_valid_fraction >= 1.0):
        failing = [v for v in verdicts if v != "ok"]
        # Name the most specific problem that is common enough to matter, else the most frequent one.
        frequent = [v for v in ("multiple_faces", "face_too_small", "no_face") if failing.count(v) >= 0.2 * n]
        reason = frequent[0] if frequent else max(sorted(set(failing)), key=failing.count)
        detail = f"{valid.sum()}/{n} frames with exactly one face (need {min_valid_fraction:.0%}); " + ", ".join(
            f"{v}={failing.count(v)}" for v in sorted(set(failing)))
        return TrackResult(False, reason, detail, valid_fraction=fraction)
    has_lips = bool(np.isfinite(lips[valid]).all())
    if not valid.all():
        # frames without a valid face: interpolated from their neighbours (edges hold the nearest valid value)
        boxes = interpolate_missing(boxes, valid).astype(np.float32)
        kps = interpolate_missing(kps, valid).astype(np.float32)
        lips = interpolate_missing(lips, valid).astype(np.float32) if has_lips else lips
    return TrackResult(True, boxes=boxes, kps=kps, scores=scores, valid_fraction=fraction,
                       lip_boxes=lips if has_lips else None)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over frames (edge-padded) to remove detector jitter."""
    if window <= 1 or len(values) < 2:
        return values.astype(np.float32)
    pad = window // 2
    flat = values.reshape(len(values), -1).astype(np.float64)
    padded = np.pad(flat, ((pad, window - 1 - pad), (0, 0)), mode="edge")
    kernel = np.ones(window) / window
    out = np.stack([np.convolve(padded[:, c], kernel, mode="valid") for c in range(flat.shape[1])], axis=1)
    return out.reshape(values.shape).astype(np.float32)


def stable_crop_box(boxes: np.ndarray, margin: float, smooth_window: int = 5) -> np.ndarray:
    """One square box for the whole clip: union of the smoothed per-frame boxes, grown by ``margin``
    (relative to the union's larger side) and squared around its centre. May extend past the frame;
    :func:`crop_resize` pads."""
    sm = smooth(np.asarray(boxes, np.float32), smooth_window)
    x0, y0 = sm[:, 0].min(), sm[:, 1].min()
    x1, y1 = sm[:, 2].max(), sm[:, 3].max()
    side = max(x1 - x0, y1 - y0) * (1.0 + margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = float(np.ceil(max(side, 2.0)))
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)


def crop_resize(frames: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Crop ``box`` from every frame (areas outside the frame are black) and resize to ``size``².

    One affine warp per frame, so the same box gives the same pixels whether or not it touches a border.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    scale = size / (x1 - x0)
    m = np.array([[scale, 0, -x0 * scale], [0, size / (y1 - y0), -y0 * size / (y1 - y0)]], np.float32)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = cv2.warpAffine(frame, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


def to_crop_coords(points: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Map source-pixel points ``(..., 2)`` into the ``size``² crop of ``box``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    pts = np.asarray(points, np.float32).copy()
    pts[..., 0] = (pts[..., 0] - x0) * size / (x1 - x0)
    pts[..., 1] = (pts[..., 1] - y0) * size / (y1 - y0)
    return pts


def mouth_boxes(kps: np.ndarray, size: int, width_pad: float = 0.3, height_scale: float = 1.0) -> np.ndarray:
    """Per-frame mouth box ``(F, 4)`` from the mouth corners, clamped to the crop.

    Width: corner-to-corner distance plus ``width_pad`` of it on each side. Height: the nose-to-mouth
    distance (nose to the corners' midpoint) times ``height_scale`` above and below the corner line,
    which covers an open mouth without a lip landmark.
    """
    kps = np.asarray(kps, np.float32)
    left, right, nose = kps[:, 3], kps[:, 4], kps[:, 2]
    centre = (left + right) / 2
    width = np.linalg.norm(right - left, axis=1)
    half_w = width * (0.5 + width_pad)
    half_h = np.maximum(np.linalg.norm(centre - nose, axis=1) * height_scale, 0.25 * width)
    out = np.stack([centre[:, 0] - half_w, centre[:, 1] - half_h, centre[:, 0] + half_w, centre[:, 1] + half_h], 1)
    return np.clip(out, 0, size).astype(np.float32)
