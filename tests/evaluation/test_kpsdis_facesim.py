"""KpsDis and ΔFaceSim arithmetic on hand-computed cases; no-face frames counted, never silently averaged."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from evaluation.facesim import face_similarity
from evaluation.kpsdis import kps_distance


def test_kpsdis_hand_computed_and_rescaled():
    target = np.zeros((3, 5, 2))
    target[:, 0], target[:, 1], target[:, 2] = (100, 100), (200, 100), (150, 200)
    target[:, 3:] = 999  # mouth corners are not V-Kps: ignored
    det0 = target[0] / 2  # generated at 256²: exact after rescaling to 512²
    det1 = (target[1] + [6, 8]) / 2  # every point off by 10 px at 512²
    res = kps_distance([det0, det1, None], target, frame_size=(256, 256))
    assert res.per_frame[0] == pytest.approx(0.0) and res.per_frame[1] == pytest.approx(10.0)
    assert np.isnan(res.per_frame[2]) and res.num_no_face == 1 and res.num_frames == 3
    assert res.value == pytest.approx(5.0)


def test_kpsdis_non_square_and_errors():
    target = np.array([[[10.0, 10.0], [20.0, 10.0], [15.0, 20.0]]])
    det = target[0] * [0.5, 0.25]  # frame 256 wide, 128 high
    assert kps_distance([det], target, frame_size=(128, 256)).value == pytest.approx(0.0)
    res = kps_distance([None], target, frame_size=(512, 512))
    assert np.isnan(res.value) and res.num_no_face == 1
    with pytest.raises(ValueError, match="2 generated frames but 1 target"):
        kps_distance([None, None], target, frame_size=(512, 512))
    with pytest.raises(ValueError, match="target V-Kps"):
        kps_distance([None], np.zeros((1, 2, 2)), frame_size=(512, 512))


@dataclass
class Face:
    box: np.ndarray
    score: float
    kps: np.ndarray


class ColourEmbedder:
    """A transparent identity embedding for arithmetic checks: the mean colour inside the face box."""

    def embed(self, image, face):
        x0, y0, x1, y1 = np.asarray(face.box, int)
        return image[y0:y1, x0:x1].reshape(-1, 3).mean(0)


def _frame(rgb):
    f = np.zeros((8, 8, 3), np.uint8)
    f[2:6, 2:6] = rgb
    return f


def test_delta_facesim_hand_computed():
    face = Face(np.array([2, 2, 6, 6]), 0.9, np.zeros((5, 2)))
    ref = _frame((100, 0, 0))
    gt = np.stack([_frame((100, 0, 0)), _frame((100, 100, 0)), _frame((0, 100, 0))])
    gen = np.stack([_frame((100, 0, 0)), _frame((100, 0, 0)), _frame((100, 100, 0))])
    c45 = np.cos(np.pi / 4)
    res = face_similarity(ColourEmbedder(), ref, face, gen, [face] * 3, gt, [face, face, None], exclude=[0])
    # gen frames 1, 2: cos = 1, cos45; gt frame 1: cos45, frame 2 has no face
    assert res.facesim_generated == pytest.approx((1 + c45) / 2)
    assert res.facesim_ground_truth == pytest.approx(c45)
    assert res.delta == pytest.approx(abs((1 + c45) / 2 - c45))
    assert res.num_no_face_ground_truth == 1 and res.num_no_face_generated == 0
    assert np.isnan(res.per_frame_generated[0])  # the reference frame index is excluded


def test_facesim_bad_input():
    face = Face(np.array([2, 2, 6, 6]), 0.9, np.zeros((5, 2)))
    frames = np.stack([_frame((1, 2, 3))] * 2)
    with pytest.raises(ValueError, match="no face found in the reference"):
        face_similarity(ColourEmbedder(), frames[0], None, frames, [face] * 2, frames, [face] * 2)
    with pytest.raises(ValueError, match="2 generated frames but 1 ground-truth"):
        face_similarity(ColourEmbedder(), frames[0], face, frames, [face] * 2, frames[:1], [face])
    res = face_similarity(ColourEmbedder(), frames[0], face, frames, [None] * 2, frames, [face] * 2)
    assert np.isnan(res.facesim_generated) and np.isnan(res.delta) and res.num_no_face_generated == 2
