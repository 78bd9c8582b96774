"""One face per frame for the face-based metrics (KpsDis, ΔFaceSim, SyncNet crops).

Detection runs once per video through a face backend from ``preprocessing.faces`` (``make_face_backend``;
``.detect(rgb_frame) -> list[Face(box, score, kps (5, 2))]``); every metric then reuses the result.
When a frame shows several faces the most confident one is kept (our test clips are single-face crops);
a frame with none is ``None`` and each metric counts it.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class FaceLike(Protocol):
    box: np.ndarray  # (4,) x0, y0, x1, y1 in pixels
    score: float
    kps: np.ndarray  # (5, 2): left eye, right eye, nose, left mouth corner, right mouth corner


def best_face(faces: list[FaceLike]) -> FaceLike | None:
    return max(faces, key=lambda f: float(f.score)) if faces else None


def detect_per_frame(backend: Any, frames: np.ndarray) -> list[FaceLike | None]:
    """The most confident face of every RGB frame (``None`` where none is found)."""
    if hasattr(backend, "detect_batch"):
        per_frame = backend.detect_batch(list(frames))
    else:
        per_frame = [backend.detect(f) for f in frames]
    return [best_face(list(faces)) for faces in per_frame]


def make_backend(name: str = "yunet", **kwargs) -> Any:
    """A face backend by name (``yunet`` offline default, ``insightface``); see ``preprocessing.faces``."""
    from preprocessing.faces import make_face_backend

    return make_face_backend(name, **kwargs)
