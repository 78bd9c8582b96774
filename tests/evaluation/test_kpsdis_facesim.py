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


def test_delta_facesim_sign_and_pairing_hand_computed():
    """Δ = FaceSim(generated) − FaceSim(ground truth) over the frames with a face on BOTH sides."""
    face = Face(np.array([2, 2, 6, 6]), 0.9, np.zeros((5, 2)))
    ref = _frame((100, 0, 0))
    red, yellow, green = (100, 0, 0), (100, 100, 0), (0, 100, 0)  # cos to red: 1, cos 45°, 0
    gt = np.stack([_frame(c) for c in (red, yellow, green, yellow, red)])
    gen = np.stack([_frame(c) for c in (red, red, red, yellow, yellow)])
    gen_faces = [face, face, face, face, None]  # frame 4: the generator lost the face
    gt_faces = [face, face, face, None, face]  # frame 3: no face in the ground truth
    c45 = np.cos(np.pi / 4)
    res = face_similarity(ColourEmbedder(), ref, face, gen, gen_faces, gt, gt_faces, exclude=[0])
    # paired frames: 1 and 2 (0 is the reference, 3 and 4 miss a face on one side)
    assert res.num_paired_frames == 2
    assert res.facesim_generated == pytest.approx(1.0)  # gen frames 1, 2: red
    assert res.facesim_ground_truth == pytest.approx((c45 + 0.0) / 2)  # gt frames 1, 2: yellow, green
    assert res.delta == pytest.approx(1.0 - c45 / 2) and res.delta > 0  # generated looks MORE like the reference
    assert res.num_no_face_generated == 1 and res.num_no_face_ground_truth == 1
    assert res.facesim_ground_truth_all == pytest.approx((c45 + 0.0 + 1.0) / 3)  # gt frames 1, 2, 4: the test set's own
    assert np.isnan(res.per_frame_generated[[0, 3, 4]]).all() and np.isnan(res.per_frame_ground_truth[[3, 4]]).all()
    # an unpaired average would have used gt frame 4 (red, cos 1) and gen frame 3 (yellow): a different number
    swapped = face_similarity(ColourEmbedder(), ref, face, gt, gt_faces, gen, gen_faces, exclude=[0])
    assert swapped.delta == pytest.approx(-res.delta)  # the sign follows generated − ground truth


def test_dataset_delta_facesim_counts_videos_without_generated_faces():
    from evaluation.metrics.base import MetricContext
    from evaluation.metrics.facesim import FaceSimMetric

    face = Face(np.array([2, 2, 6, 6]), 0.9, np.zeros((5, 2)))

    class Video:
        dataset, kps_size = "d", 8

        def __init__(self, name, frames):
            self.name, self.frames = name, frames

    class Ctx:
        def __init__(self, name, gen, gen_faces, gt):
            self.video, self.generated, self.generated_faces = Video(name, gt), gen, gen_faces
            self.ground_truth_faces, self.reference_index, self.dataset = [face] * len(gt), 0, "d"
            self.faces = type("F", (), {"embedder": ColourEmbedder(), "embedder_name": "colour"})()

    red, yellow = _frame((100, 0, 0)), _frame((100, 100, 0))
    metric = FaceSimMetric(MetricContext(cfg=None, protocol=None))
    metric.score_video(Ctx("a", np.stack([red, red]), [face, face], np.stack([red, yellow])))
    metric.score_video(Ctx("b", np.stack([red, red]), [None, None], np.stack([red, red])))  # no generated face
    r = metric.dataset_metrics("d")
    c45 = np.cos(np.pi / 4)
    assert r["facesim_videos"] == 1 and r["facesim_failed_videos"] == 1
    assert r["facesim_generated"] == pytest.approx(100.0) and r["facesim_ground_truth"] == pytest.approx(100 * c45)
    assert r["delta_facesim"] == pytest.approx(100 * (1 - c45))  # video b is on neither side
    assert r["facesim_ground_truth_all"] == pytest.approx(100 * (c45 + 1) / 2)  # ...but its ground truth is kept here
    assert any("FaceSim of all ground-truth frames with a face is" in n for n in FaceSimMetric.notes(r))


def test_facesim_bad_input():
    face = Face(np.array([2, 2, 6, 6]), 0.9, np.zeros((5, 2)))
    frames = np.stack([_frame((1, 2, 3))] * 2)
    with pytest.raises(ValueError, match="no face found in the reference"):
        face_similarity(ColourEmbedder(), frames[0], None, frames, [face] * 2, frames, [face] * 2)
    with pytest.raises(ValueError, match="2 generated frames but 1 ground-truth"):
        face_similarity(ColourEmbedder(), frames[0], face, frames, [face] * 2, frames[:1], [face])
    res = face_similarity(ColourEmbedder(), frames[0], face, frames, [None] * 2, frames, [face] * 2)
    assert np.isnan(res.facesim_generated) and np.isnan(res.facesim_ground_truth) and np.isnan(res.delta)
    assert res.num_no_face_generated == 2 and res.num_paired_frames == 0 and res.facesim_ground_truth_all == 1.0
