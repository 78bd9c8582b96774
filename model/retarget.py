"""V-Kps retargeting: turn driving keypoints into keypoints that fit the reference face.

Keypoints are pixel coordinates ``(x, y)``; only the first three of the 5-point layout are used
(0 left eye, 1 right eye, 2 nose), as in the official V-Kps drawing. Sequences are ``(F, 3, 2)`` float64.

Strategies (``InferenceConfig.retarget_strategy``):
- ``no_retarget``: the driving keypoints as they are.
- ``fix_face``: the reference keypoints held for every frame (also used when no driving input is given).
- ``offset_retarget``: the reference keypoints moved along the driving nose trace (relative to driving
  frame 0), the trace rescaled by face size.
- ``naive_retarget``: the whole driving sequence rescaled by face size and shifted so its first nose lands
  on the reference nose; the face then follows the driving nose trace.

Face size: x scale = reference eye distance / driving eye distance, y scale = reference nose-to-eye-line
distance / driving nose-to-eye-line distance, both measured on the driving frame whose pose is closest to
the reference, i.e. the frame minimising the ABSOLUTE difference of the left/right eye-nose distance ratios.
(The official ``retarget_kps`` keeps the last ratio instead of the last difference, so it can pick a frame
with a very different pose; ``offset_retarget`` there also moves by minus half the trace. Both differ here.)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

STRATEGIES = ("no_retarget", "fix_face", "offset_retarget", "naive_retarget")
LEFT_EYE, RIGHT_EYE, NOSE = 0, 1, 2


def _as_kps(kps: np.ndarray | torch.Tensor | list, ndim: int, what: str) -> np.ndarray:
    arr = np.asarray(kps, dtype=np.float64)
    if arr.ndim != ndim or arr.shape[-1] != 2 or arr.shape[-2] < 3:
        want = "(K>=3, 2)" if ndim == 2 else "(F, K>=3, 2)"
        raise ValueError(f"{what}: keypoints must have shape {want}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: keypoints contain NaN/inf")
    return arr[..., :3, :].copy()


def eye_nose_ratio(kps: np.ndarray) -> float:
    """Left-eye-to-nose over right-eye-to-nose distance: 1 for a frontal face, away from 1 when turned."""
    d_left = np.linalg.norm(kps[LEFT_EYE] - kps[NOSE])
    d_right = np.linalg.norm(kps[RIGHT_EYE] - kps[NOSE])
    return float(d_left / (d_right + 1e-6))


def _point_to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def face_size(kps: np.ndarray) -> tuple[float, float]:
    """(eye distance, distance from the nose to the eye segment)."""
    width = float(np.linalg.norm(kps[LEFT_EYE] - kps[RIGHT_EYE]))
    height = _point_to_segment(kps[NOSE], kps[LEFT_EYE], kps[RIGHT_EYE])
    return width, height


def closest_pose_index(reference_kps: np.ndarray, driving_kps: np.ndarray) -> int:
    """Driving frame whose eye-nose ratio is closest (absolute difference) to the reference's."""
    ref = eye_nose_ratio(reference_kps)
    diffs = [abs(eye_nose_ratio(k) - ref) for k in driving_kps]
    return int(np.argmin(diffs))  # first frame on ties


def face_scale(reference_kps: np.ndarray, driving_kps: np.ndarray) -> np.ndarray:
    """(x, y) factors that map the driving face size onto the reference face size."""
    k = closest_pose_index(reference_kps, driving_kps)
    ref_w, ref_h = face_size(reference_kps)
    drv_w, drv_h = face_size(driving_kps[k])
    if drv_w < 1e-6 or drv_h < 1e-6:
        raise ValueError(f"driving keypoints of frame {k} are degenerate (eye distance {drv_w}, nose height {drv_h})")
    return np.array([ref_w / drv_w, ref_h / drv_h])


def no_retarget(reference_kps, driving_kps) -> np.ndarray:
    return _as_kps(driving_kps, 3, "driving keypoints")


def fix_face(reference_kps, num_frames: int) -> np.ndarray:
    ref = _as_kps(reference_kps, 2, "reference keypoints")
    return np.repeat(ref[None], num_frames, axis=0)


def offset_retarget(reference_kps, driving_kps) -> np.ndarray:
    ref = _as_kps(reference_kps, 2, "reference keypoints")
    drv = _as_kps(driving_kps, 3, "driving keypoints")
    trace = (drv[:, NOSE] - drv[0, NOSE]) * face_scale(ref, drv)  # (F, 2)
    return ref[None] + trace[:, None, :]


def naive_retarget(reference_kps, driving_kps) -> np.ndarray:
    ref = _as_kps(reference_kps, 2, "reference keypoints")
    drv = _as_kps(driving_kps, 3, "driving keypoints")
    scaled = drv * face_scale(ref, drv)
    return scaled - (scaled[0, NOSE] - ref[NOSE])


def interpolate_kps(kps, num_frames: int) -> np.ndarray:
    """Linear resampling of a ``(n, K, 2)`` sequence to ``num_frames`` frames.

    Same sampling as the official ``F.interpolate(mode="linear")`` (half-pixel centres, ends clamped), so
    both sequences span the same time; the identity when ``n == num_frames``.
    """
    arr = np.asarray(kps, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[-1] != 2 or len(arr) == 0:
        raise ValueError(f"keypoint sequence must have shape (F>=1, K, 2), got {arr.shape}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if len(arr) == num_frames:
        return arr.copy()
    t = torch.from_numpy(arr).permute(1, 2, 0)  # (K, 2, n)
    out = F.interpolate(t, size=num_frames, mode="linear", align_corners=False)
    return out.permute(2, 0, 1).numpy()


def retarget(strategy: str, reference_kps, driving_kps, num_frames: int) -> np.ndarray:
    """Keypoints ``(num_frames, 3, 2)`` for the video: interpolate the driving sequence, then retarget.

    ``driving_kps=None`` always holds the reference face (``fix_face``), whatever the strategy.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown retarget strategy {strategy!r}; choose one of {STRATEGIES}")
    if driving_kps is None or strategy == "fix_face":
        return fix_face(reference_kps, num_frames)
    driving = interpolate_kps(_as_kps(driving_kps, 3, "driving keypoints"), num_frames)
    if strategy == "no_retarget":
        return no_retarget(reference_kps, driving)
    if strategy == "offset_retarget":
        return offset_retarget(reference_kps, driving)
    return naive_retarget(reference_kps, driving)
