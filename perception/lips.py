"""Lip boxes per frame and the lip mask that weights the training loss (docs/training.md, "Lip mask").

The official V-Express training weights the loss inside a *lip mask*: the bounding box of the 106-point
landmarks 52:72 (the lips, insightface's ``2d106det`` in the buffalo_l pack), scaled x2 about its centre, drawn
at image resolution and resized bilinearly to the latent grid, so its edges are soft. The lower lip moves with
the jaw, so the box grows with the mouth opening.

Shards store the *unscaled* lip box per frame (``lips.npy``, crop pixels; docs/shard-format.md), from one of
two sources named by the sample's ``meta["lips"]``:

* ``landmark_2d_106``: the box of the 20 lip landmarks (:func:`lip_box_from_points`), when the face backend
  has a 106-point model. The training mask is then the official one.
* ``kps5``: an approximation for 5-point backends (YuNet), :func:`lip_boxes_from_corners`. The mouth corners
  give the width and the corner line; the lip heights above and below that line are fixed fractions of the
  corner distance (from insightface's 68-point mean face: the upper lip reaches 0.21 of it above the corner line,
  the lower lip 0.15 below); when the mouth is open, the dark oral cavity between the lips, measured on the
  frame's pixels (:func:`mouth_cavities`), pushes the upper lip up and the lower lip down by its extent, so the
  box height follows the opening. Where the cavity cannot be measured (mouth outside the frame, too small, too
  dark) it is interpolated from the neighbouring frames, or taken as closed when no frame of the clip could be
  measured. v1 shards (no ``lips.npy``) get this approximation with a closed mouth.
"""

from __future__ import annotations

import numpy as np

LIP_LANDMARKS = slice(52, 72)  # the lips in insightface's 106-point layout
LIP_SCALE = 2.0  # the official mask: the lip box scaled x2 about its centre
UPPER_LIP = 0.21  # closed mouth: corner line to the top of the upper lip, in corner distances
LOWER_LIP = 0.15  # closed mouth: corner line to the bottom of the lower lip, in corner distances
DARK_RATIO = 0.5  # a cavity sample is darker than this fraction of the surrounding lips and skin
_PROFILE = (-0.5, 1.0, 96)  # profile along the corner line's normal: from, to (corner distances), samples
_CAVITY = (-0.35, 0.9)  # where dark samples count as the cavity: below the nostrils, above the chin
_START = 0.3  # the cavity's dark run starts within this distance of the corner line (corner distances)
_STRIP = 0.15  # half-width of the profile strip across the mouth centre, in corner distances
MIN_MOUTH_PX = 6.0  # corner distances below this are not measured


def lip_box_from_points(points: np.ndarray) -> np.ndarray:
    """(n, 2) lip landmarks -> (4,) float32 x0, y0, x1, y1."""
    pts = np.asarray(points, np.float32).reshape(-1, 2)
    return np.concatenate([pts.min(0), pts.max(0)]).astype(np.float32)


def _corner_frame(kps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: the corners' midpoint, their distance, the unit vector along them and the normal pointing down."""
    left, right = kps[:, 3].astype(np.float64), kps[:, 4].astype(np.float64)
    mid, delta = (left + right) / 2, right - left
    width = np.linalg.norm(delta, axis=1)
    u = delta / np.maximum(width, 1e-6)[:, None]
    n = np.stack([-u[:, 1], u[:, 0]], 1)
    n *= np.where(n[:, 1:] < 0, -1.0, 1.0)  # image y grows downwards: the normal points to the chin
    return mid, width, u, n


def lip_boxes_from_corners(kps: np.ndarray, cavities: np.ndarray | None = None) -> np.ndarray:
    """The 5-point approximation of the lip box: (F, 5, 2) keypoints (+ (F, 2) mouth cavities) -> (F, 4).

    The lip outline is modelled as two half ellipses on the corner line: the upper one ``UPPER_LIP`` x width
    above the cavity's top (or the corner line when closed), the lower one ``LOWER_LIP`` x width below the cavity's
    bottom. ``cavities`` are the cavity's extent along the corner line's downward normal, in pixels from the
    corner line (:func:`mouth_cavities`; (0, 0) = closed). The box is the outline's bounding box, so a tilted head
    gives the box of the tilted lips.
    """
    kps = np.asarray(kps, np.float32)
    mid, width, u, n = _corner_frame(kps)
    cav = np.zeros((len(kps), 2)) if cavities is None else np.nan_to_num(np.asarray(cavities, np.float64))
    theta = np.linspace(0.0, np.pi, 33)
    sin = np.sin(theta)[None, :, None]
    along = np.cos(theta)[None, :, None] * (width / 2)[:, None, None] * u[:, None]
    up = (UPPER_LIP * width - np.minimum(cav[:, 0], 0))[:, None, None] * sin * n[:, None]
    down = (LOWER_LIP * width + np.maximum(cav[:, 1], 0))[:, None, None] * sin * n[:, None]
    outline = np.concatenate([mid[:, None] + along - up, mid[:, None] + along + down], axis=1)
    return np.concatenate([outline.min(1), outline.max(1)], axis=1).astype(np.float32)


def _luminance(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def mouth_cavity(frame: np.ndarray, kps: np.ndarray) -> tuple[float, float]:
    """The oral cavity's extent (top, bottom) in pixels along the corner line's downward normal, measured on one
    RGB frame from its 5 keypoints: (0, 0) for a closed mouth, NaNs where it cannot be measured.

    A strip across the mouth centre, along that normal, is sampled into a luminance profile; the cavity spans the
    samples darker than ``DARK_RATIO`` x the profile's upper quartile (lips and skin) near the corner line. Teeth
    between dark parts count as open; a mouth showing only teeth reads as less open than it is.
    """
    import cv2

    nan = (float("nan"), float("nan"))
    mid, width, u, n = (a[0] for a in _corner_frame(np.asarray(kps, np.float32)[None]))
    if width < MIN_MOUTH_PX:
        return nan
    s = np.linspace(_PROFILE[0], _PROFILE[1], _PROFILE[2]) * width
    t = np.linspace(-_STRIP, _STRIP, 9) * width
    points = mid + s[:, None, None] * n + t[None, :, None] * u  # (S, T, 2)
    h, w = frame.shape[:2]
    lo, hi = points.reshape(-1, 2).min(0), points.reshape(-1, 2).max(0)
    if lo.min() < 0 or hi[0] > w - 1 or hi[1] > h - 1:
        return nan
    x0, y0 = (int(v) for v in np.floor(lo))
    x1, y1 = (int(v) + 2 for v in np.floor(hi))
    region = _luminance(frame[y0:y1, x0:x1])  # only the pixels the strip touches
    lum = cv2.remap(region, (points[..., 0] - x0).astype(np.float32), (points[..., 1] - y0).astype(np.float32),
                    cv2.INTER_LINEAR)
    profile = lum.mean(1)
    reference = float(np.percentile(profile, 75))
    if reference < 30.0:  # too dark to tell the cavity from the face
        return nan
    near = (s >= _CAVITY[0] * width) & (s <= _CAVITY[1] * width)
    dark = near & (profile < DARK_RATIO * reference)
    # The cavity is the dark run that touches the lips: the one starting closest to the corner line. Dark hair,
    # a beard or clothing further below is another run and must not stretch the box down to the neck.
    runs = np.split(np.flatnonzero(dark), np.flatnonzero(np.diff(np.flatnonzero(dark)) > 1) + 1)
    runs = [r for r in runs if len(r) >= 2 and (abs(s[r[0]]) <= _START * width or s[r[0]] < 0 < s[r[-1]])]
    if not runs:
        return 0.0, 0.0
    run = min(runs, key=lambda r: abs(s[r[0]]))
    half_step = (s[1] - s[0]) / 2
    return float(s[run[0]] - half_step), float(s[run[-1]] + half_step)


def mouth_cavities(frames: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) uint8 frames + (F, 5, 2) keypoints -> (F, 2) cavity extents (:func:`mouth_cavity`); frames that
    cannot be measured are interpolated from measured neighbours ((0, 0), closed, when none is measured)."""
    raw = np.array([mouth_cavity(f, k) for f, k in zip(frames, kps)], np.float64).reshape(-1, 2)
    measured = ~np.isnan(raw[:, 0])
    if not measured.any():
        return np.zeros((len(raw), 2), np.float32)
    from perception.faces import interpolate_missing

    return interpolate_missing(raw, measured).astype(np.float32)


def lip_mask(boxes: np.ndarray, image_size: int, latent_size: int, scale: float = LIP_SCALE) -> np.ndarray:
    """(F, 4) unscaled lip boxes in pixels of a ``image_size``² image -> (1, F, h, w) float32 mask in [0, 1].

    As the official: integer box corners, scaled by ``scale`` about their centre, filled inclusively at image
    resolution, then resized to ``latent_size``² with antialiased bilinear interpolation (what PIL's bilinear
    resize does), which gives soft edges. Boxes are clamped to the image (a box reaching past the top-left
    corner would wrap around in the official slicing).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    mask = np.zeros((1, len(boxes), latent_size, latent_size), np.float32)
    for f, (bx0, by0, bx1, by1) in enumerate(np.trunc(boxes)):
        if not np.all(np.isfinite([bx0, by0, bx1, by1])) or bx1 < bx0 or by1 < by0:
            continue
        cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
        hw, hh = (bx1 - bx0) / 2 * scale, (by1 - by0) / 2 * scale
        cols = _resized_span(int(cx - hw), int(cx + hw) + 1, image_size, latent_size)
        rows = _resized_span(int(cy - hh), int(cy + hh) + 1, image_size, latent_size)
        mask[0, f] = np.outer(rows, cols)  # a box is separable, and so is the resize
    return mask


def _resized_span(start: int, stop: int, size: int, new_size: int) -> np.ndarray:
    """The 1-D indicator of pixels [start, stop) (clamped to [0, size)) resized to ``new_size`` like the mask."""
    import torch
    import torch.nn.functional as F

    line = torch.zeros(1, 1, 1, size)
    line[..., max(start, 0):min(stop, size)] = 1.0
    if new_size != size:
        line = F.interpolate(line, size=(1, new_size), mode="bilinear", antialias=True, align_corners=False)
    return line[0, 0, 0].clamp(0.0, 1.0).numpy()
