"""KpsDis: how well generated frames follow the target V-Kps.

Input convention
----------------
- ``detected``: per generated frame the detected 5-point keypoints ``(5, 2)`` (from
  :func:`perception.faces.detect_per_frame`) or ``None`` where no face was found, in pixels of a frame of
  size ``frame_size = (height, width)``.
- ``target_kps``: ``(F, 3 or 5, 2)`` in pixels of a ``target_size``² frame (512: the crop the shards store,
  order left eye, right eye, nose, mouth corners). Only the 3 V-Kps points (eyes, nose) are compared.
- Detected points are rescaled to the ``target_size``² frame (``x·target/W``, ``y·target/H``) so KpsDis is
  always "pixels at 512²" whatever resolution the generator produced.

Per frame: the mean over the 3 points of the L2 distance. The video's KpsDis: the mean over frames with a
face. Frames without a face are excluded and counted (``num_no_face``); a video with none gives NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

V_KPS = 3  # left eye, right eye, nose


@dataclass(frozen=True)
class KpsDisResult:
    value: float  # mean pixels at target_size²; NaN when no frame had a face
    per_frame: np.ndarray  # (F,) NaN where no face
    num_frames: int
    num_no_face: int


def kps_distance(
    detected: list[np.ndarray | None],
    target_kps: np.ndarray,
    frame_size: tuple[int, int],
    target_size: int = 512,
) -> KpsDisResult:
    target = np.asarray(target_kps, np.float64)
    if target.ndim != 3 or target.shape[1] < V_KPS or target.shape[2] != 2:
        raise ValueError(f"target V-Kps must be (F, 3 or 5, 2), got {target.shape}")
    if len(detected) != len(target):
        raise ValueError(f"KpsDis: {len(detected)} generated frames but {len(target)} target V-Kps frames")
    h, w = frame_size
    scale = np.array([target_size / w, target_size / h])
    per_frame = np.full(len(target), np.nan)
    for i, kps in enumerate(detected):
        if kps is None:
            continue
        pts = np.asarray(kps, np.float64)[:V_KPS] * scale
        per_frame[i] = np.linalg.norm(pts - target[i, :V_KPS], axis=1).mean()
    found = ~np.isnan(per_frame)
    value = float(per_frame[found].mean()) if found.any() else float("nan")
    return KpsDisResult(value, per_frame, len(target), int((~found).sum()))
