"""A smooth local warp that opens the mouth of a real face image (used by the sample data).

The sample videos are real faces moved along synthetic head-motion paths; this warp gives them a real
audio-to-mouth relation. Given the two mouth corners and an opening amount in [0, 1]:

1. the lips part on a line just below the corners: pixels below it move down by up to ``MAX_DROP`` mouth widths,
   pixels above it up by up to ``MAX_LIFT``; both shifts fade out sideways beyond the corners and within about a
   third of a mouth width vertically, so the chin, nose and eyes stay where they are (a face detector's
   keypoints then barely move with the mouth, and the V-Kps do not give the opening away);
2. the gap between the lips is shaded as a soft dark ellipse (the mouth cavity).

Everything is a deterministic function of the inputs (OpenCV remap, numpy), so rebuilt videos are identical.
"""

from __future__ import annotations

import cv2
import numpy as np

CAVITY_RGB = np.array([70.0, 25.0, 30.0])
MAX_DROP = 0.3  # lower lip, at amount 1, in mouth widths
MAX_LIFT = 0.1  # upper lip, at amount 1, in mouth widths
FADE_DOWN = 0.3  # vertical reach of the shifts below and above the lips, in mouth widths
FADE_UP = 0.2
SPLIT_BELOW_CORNERS = 0.15  # where the lips part, below the corner line, in mouth widths


def open_mouth(image: np.ndarray, left: np.ndarray, right: np.ndarray, amount: float) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with the mouth between corners ``left``/``right`` (x, y) opened by ``amount``."""
    amount = float(np.clip(amount, 0.0, 1.0))
    if amount <= 0.0:
        return image
    left, right = np.asarray(left, np.float32), np.asarray(right, np.float32)
    centre = (left + right) / 2
    width = float(np.linalg.norm(right - left))
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    split = centre[1] + SPLIT_BELOW_CORNERS * width
    drop, lift = amount * MAX_DROP * width, amount * MAX_LIFT * width
    sideways = np.exp(-0.5 * (np.maximum(np.abs(xs - centre[0]) - 0.3 * width, 0) / (0.3 * width)) ** 2)
    below = 1 / (1 + np.exp(-(ys - split) / (0.04 * width + 0.15 * drop + 0.5)))
    fade_down = np.exp(-0.5 * (np.maximum(ys - split - drop, 0) / (FADE_DOWN * width)) ** 2)
    fade_up = np.exp(-0.5 * (np.maximum(split - lift - ys, 0) / (FADE_UP * width)) ** 2)
    shift = sideways * (drop * below * fade_down - lift * (1 - below) * fade_up)
    shift[np.abs(shift) < 0.05] = 0.0  # far from the mouth nothing moves at all (the tails of the fades)
    out = cv2.remap(image, xs, (ys - shift).astype(np.float32), cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    gap = drop + lift
    radius = np.sqrt(((xs - centre[0]) / (0.36 * width)) ** 2
                     + ((ys - split - (drop - lift) / 2) / max(gap / 2, 1e-3)) ** 2)
    alpha = (np.clip(1.25 - radius, 0, 1) * 0.8 * min(1.0, 3 * amount))[..., None]
    return (out * (1 - alpha) + CAVITY_RGB * alpha).round().clip(0, 255).astype(np.uint8)
