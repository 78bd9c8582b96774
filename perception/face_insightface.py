"""insightface face detection from a local model pack (SCRFD, plus the pack's 106-point landmarks), as the
official pipeline; and the pack-file lookup the identity embedders share."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from perception.faces import BatchDetectMixin, Face, FaceModelError, FaceSettings, check_rgb_frame


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


class InsightFaceBackend(BatchDetectMixin):
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

    @staticmethod
    def options_from(settings: FaceSettings) -> dict:
        opts = {"pack": settings.pack, "ctx_id": 0 if settings.gpu else -1}
        if settings.root:
            opts["root"] = settings.root
        if settings.score_threshold is not None:
            opts["score_threshold"] = settings.score_threshold
        return opts

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
