"""V-Kps images: 3 face keypoints (left eye, right eye, nose) drawn as the official condition image.

See docs/official-architecture.md §10.

Drawing is OpenCV's (``ellipse2Poly`` + ``fillConvexPoly`` + ``circle``) so the pixels equal the
official code's; ``render_vkps`` draws a whole clip into one uint8 buffer and converts it to a
float tensor once. A horizontal flip of a V-Kps image swaps its R and G channels (left/right eye
colours); ``flip_keypoints`` is the matching operation on keypoints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch

KPS_COLORS: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 255, 0), (0, 0, 255))  # RGB: left eye, right eye, nose
LIMBS: tuple[tuple[int, int], ...] = ((0, 2), (1, 2))  # eye -> nose; coloured like the eye at 60 %
LIMB_COLOR_SCALE = 0.6
STICK_WIDTH = 4  # limb half-width and circle radius, in pixels
# Keypoint index pairs that trade places under a horizontal flip (5-point insightface/YuNet order).
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((0, 1), (3, 4))


def _as_keypoints(kps: np.ndarray | torch.Tensor | Sequence, min_points: int = 3) -> np.ndarray:
    arr = kps.detach().cpu().numpy() if isinstance(kps, torch.Tensor) else np.asarray(kps)
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim < 2 or arr.shape[-1] != 2 or arr.shape[-2] < min_points:
        raise ValueError(f"keypoints must have shape (..., >= {min_points}, 2), got {arr.shape}")
    if not np.isfinite(arr[..., :min_points, :]).all():
        raise ValueError("keypoints contain NaN/inf (a frame without a detected face?)")
    return arr


def _shapes(kps: np.ndarray, radius: int) -> list[tuple[str, object, tuple[int, int, int]]]:
    """The official drawing as a list of opaque shapes, in drawing order: limb polygons, then circles."""
    shapes: list[tuple[str, object, tuple[int, int, int]]] = []
    for a, b in LIMBS:
        xs, ys = kps[[a, b], 0], kps[[a, b], 1]
        length = math.hypot(xs[0] - xs[1], ys[0] - ys[1])
        angle = int(math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1])))
        polygon = cv2.ellipse2Poly(
            (int(np.mean(xs)), int(np.mean(ys))), (int(length / 2), radius), angle, 0, 360, 1
        )
        color = tuple(int(float(c) * LIMB_COLOR_SCALE) for c in KPS_COLORS[a])
        shapes.append(("polygon", polygon, color))
    for (x, y), color in zip(kps[: len(KPS_COLORS)], KPS_COLORS):
        shapes.append(("circle", (int(x), int(y)), color))
    return shapes


def _draw_shapes(canvas: np.ndarray, shapes: list, radius: int, channel: int | None = None, scale: float = 1.0) -> None:
    """Draw ``shapes`` onto an (H, W, 3) canvas, or onto one (H, W) colour plane when ``channel`` is given.

    Every shape is opaque (it overwrites, zeros included), so drawing each plane separately gives the
    same pixels as drawing the 3-channel image: rasterisation does not depend on the channel count.
    """
    for kind, geometry, color in shapes:
        value = color if channel is None else color[channel] * scale
        if kind == "polygon":
            cv2.fillConvexPoly(canvas, geometry, value)
        else:
            cv2.circle(canvas, geometry, radius, value, -1)


def draw_vkps(
    kps: np.ndarray | torch.Tensor | Sequence, height: int, width: int, radius: int = STICK_WIDTH
) -> np.ndarray:
    """One V-Kps image: (≥3, 2) keypoints in pixels (x, y) -> uint8 (height, width, 3), RGB."""
    points = _as_keypoints(kps)
    if points.ndim != 2:
        raise ValueError(f"draw_vkps takes one frame's keypoints (N, 2), got {points.shape}")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    _draw_shapes(canvas, _shapes(points, radius), radius)
    return canvas


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def render_vkps(
    kps: np.ndarray | torch.Tensor | Sequence,
    size: int | Sequence[int],
    scale: float = 1.0,
    radius: int = STICK_WIDTH,
) -> torch.Tensor:
    """A clip's V-Kps images: (F, ≥3, 2) keypoints (pixels × ``scale``) -> float32 (F, 3, H, W) in [0, 1].

    ``size`` is H = W or (H, W). ``scale`` maps keypoint coordinates to the canvas, e.g. 0.125 to draw
    keypoints detected at 512² on a 64² canvas.
    """
    points = _as_keypoints(kps)
    if points.ndim != 3:
        raise ValueError(f"render_vkps takes (F, N, 2) keypoints, got {points.shape}")
    height, width = _size_hw(size)
    # np.zeros maps zero pages lazily and cv2 draws straight into each float32 colour plane, so the
    # cost is the few drawn pixels, not a 3*H*W conversion per frame.
    frames = np.zeros((points.shape[0], 3, height, width), dtype=np.float32)
    for planes, frame_kps in zip(frames, points * scale):
        shapes = _shapes(frame_kps, radius)
        for channel, plane in enumerate(planes):
            _draw_shapes(plane, shapes, radius, channel, scale=1.0 / 255.0)
    return torch.from_numpy(frames)


def flip_vkps_image(image: np.ndarray | torch.Tensor, channel_dim: int | None = None) -> np.ndarray | torch.Tensor:
    """Mirror a V-Kps image left-right and swap R and G (the eye colours), as the official training flip does.

    Tensors default to channels at dim -3 (…, 3, H, W); numpy arrays to channels last (…, H, W, 3).
    """
    if channel_dim is None:
        channel_dim = -3 if isinstance(image, torch.Tensor) else -1
    channel_dim %= image.ndim
    if image.shape[channel_dim] != 3:
        raise ValueError(f"expected 3 channels at dim {channel_dim}, got shape {tuple(image.shape)}")
    width_dim = image.ndim - 1 if channel_dim != image.ndim - 1 else image.ndim - 2
    order = [1, 0, 2]
    if isinstance(image, torch.Tensor):
        return image.flip(width_dim).index_select(channel_dim, torch.tensor(order, device=image.device))
    return np.take(np.flip(image, axis=width_dim), order, axis=channel_dim)


def flip_keypoints(kps: np.ndarray | torch.Tensor, width: int) -> np.ndarray | torch.Tensor:
    """Mirror keypoints (…, N, 2) in a ``width``-pixel image (x -> width-1-x) and swap left/right points.

    Eyes (0, 1) and, for 5-point keypoints, mouth corners (3, 4) trade places so that the left eye stays
    at index 0. ``render(flip_keypoints(k)) == flip_vkps_image(render(k))`` for integer keypoints whose
    limbs are at whole-degree angles (OpenCV truncates centres and angles, which is not mirror-symmetric
    in general; elsewhere the two differ by at most a pixel along limb edges).
    """
    if kps.shape[-1] != 2:
        raise ValueError(f"keypoints must have shape (..., N, 2), got {tuple(kps.shape)}")
    num_points = kps.shape[-2]
    order = list(range(num_points))
    for a, b in FLIP_PAIRS:
        if b < num_points:
            order[a], order[b] = order[b], order[a]
    if isinstance(kps, torch.Tensor):
        flipped = kps[..., order, :].clone()
    else:
        flipped = np.array(np.asarray(kps)[..., order, :], copy=True)
    flipped[..., 0] = (width - 1) - flipped[..., 0]
    return flipped
