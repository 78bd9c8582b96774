"""Clip cutting, face-track checks, stable crop, keypoint mapping and mouth boxes on synthetic inputs."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing import clips
from preprocessing.stages import DetectedFace


def face(x0, y0, side, score=0.9):
    box = np.array([x0, y0, x0 + side, y0 + side], np.float32)
    s = side
    kps = np.array([[x0 + .3 * s, y0 + .4 * s], [x0 + .7 * s, y0 + .4 * s], [x0 + .5 * s, y0 + .6 * s],
                    [x0 + .35 * s, y0 + .8 * s], [x0 + .65 * s, y0 + .8 * s]], np.float32)
    return DetectedFace(box, score, kps)


def test_cut_clips_whole_frames_and_drops_short_tail():
    spans = clips.cut_clips(num_frames=230, fps=25, clip_seconds=4, min_clip_seconds=2)
    assert [(s.start_frame, s.num_frames) for s in spans] == [(0, 100), (100, 100)]  # tail of 30 < 50 frames
    spans = clips.cut_clips(260, 25, 4, 2)
    assert [s.num_frames for s in spans] == [100, 100, 60] and spans[2].index == 2
    assert spans[1].start_s(25) == 4.0 and spans[1].end_s(25) == 8.0
    assert clips.cut_clips(40, 25, 4, 2) == []


@pytest.mark.parametrize("faces, verdict", [
    ([], "no_face"),
    ([face(0, 0, 100, score=0.3)], "no_face"),
    ([face(0, 0, 30)], "face_too_small"),
    ([face(0, 0, 100), face(200, 0, 100)], "multiple_faces"),
    ([face(0, 0, 100), face(200, 0, 20)], "ok"),  # a tiny background face does not count
    ([face(0, 0, 100), face(200, 0, 100, score=0.2)], "ok"),
])
def test_classify_frame(faces, verdict):
    assert clips.classify_frame(faces, min_size=64, min_score=0.6)[0] == verdict


def test_validate_track_requires_fraction_and_fills_gaps():
    frames = [[face(10 + i, 20, 100)] for i in range(10)]
    frames[4] = []
    strict = clips.validate_track(frames, 64, 0.6, min_valid_fraction=1.0)
    assert not strict.ok and strict.reason == "no_face" and "9/10" in strict.detail
    loose = clips.validate_track(frames, 64, 0.6, min_valid_fraction=0.8)
    assert loose.ok and loose.boxes.shape == (10, 4) and loose.kps.shape == (10, 5, 2)
    np.testing.assert_allclose(loose.boxes[4, 0], 14.0)  # interpolated between frames 3 and 5


def test_validate_track_carries_lip_boxes_only_when_every_face_has_them():
    f = face(10, 20, 100)
    with_lips = [[DetectedFace(f.box, f.score, f.kps, np.array([i, 50, i + 20, 60], np.float32))] for i in range(5)]
    assert clips.validate_track(with_lips, 64, 0.6).lip_boxes.shape == (5, 4)
    with_lips[2] = []
    loose = clips.validate_track(with_lips, 64, 0.6, min_valid_fraction=0.8)
    np.testing.assert_allclose(loose.lip_boxes[2], [2, 50, 22, 60])  # interpolated like the keypoints
    mixed = [[face(10, 20, 100)]] + with_lips[:2]
    assert clips.validate_track(mixed, 64, 0.6).lip_boxes is None


def test_validate_track_two_faces_rejects_even_when_fraction_allows():
    frames = [[face(0, 0, 100)] for _ in range(10)]
    frames[0] = [face(0, 0, 100), face(300, 0, 100)]
    assert clips.validate_track(frames, 64, 0.6, 1.0).reason == "multiple_faces"
    tiny = clips.validate_track([[face(0, 0, 20)]] * 5, 64, 0.6, 1.0)
    assert not tiny.ok and tiny.reason == "face_too_small"


def test_stable_crop_box_is_square_union_with_margin():
    boxes = np.array([[100, 100, 200, 220], [110, 100, 210, 220]], np.float32)
    box = clips.stable_crop_box(boxes, margin=0.5, smooth_window=1)
    w, h = box[2] - box[0], box[3] - box[1]
    assert w == h and w >= 120 * 1.5
    assert box[0] <= 100 and box[2] >= 210 and box[1] <= 100 and box[3] >= 220
    np.testing.assert_allclose([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], [155, 160])


def test_smoothing_removes_single_frame_jitter():
    boxes = np.tile(np.array([[100, 100, 200, 200]], np.float32), (9, 1))
    boxes[4] += 50  # one outlier frame
    wide = clips.stable_crop_box(boxes, 0.0, smooth_window=1)
    smooth = clips.stable_crop_box(boxes, 0.0, smooth_window=5)
    assert smooth[2] - smooth[0] < wide[2] - wide[0]


def test_crop_resize_pads_outside_frame_and_maps_keypoints():
    frames = np.zeros((2, 100, 100, 3), np.uint8)
    frames[:, 40:60, 40:60] = 255  # a white square in the centre
    box = np.array([-50, -50, 150, 150], np.float32)  # twice the frame, centred
    crops = clips.crop_resize(frames, box, 64)
    assert crops.shape == (2, 64, 64, 3)
    assert crops[0, 2, 2].max() == 0  # padding is black
    assert crops[0, 32, 32].min() == 255  # centre square lands in the centre
    pts = clips.to_crop_coords(np.array([[[50, 50], [-50, -50], [150, 150]]], np.float32), box, 64)
    np.testing.assert_allclose(pts[0], [[32, 32], [0, 0], [64, 64]])


def test_mouth_boxes_cover_mouth_corners_and_stay_in_crop():
    f = face(100, 100, 200)
    kps = np.stack([f.kps, f.kps + 1000])  # second frame far outside -> clamped
    boxes = clips.mouth_boxes(kps, 512)
    x0, y0, x1, y1 = boxes[0]
    (lx, ly), (rx, _) = f.kps[3], f.kps[4]
    assert x0 < lx < rx < x1 and y0 < ly < y1
    nose_to_mouth = ly - f.kps[2, 1]
    np.testing.assert_allclose(y1 - y0, 2 * nose_to_mouth, rtol=1e-5)
    assert np.all((boxes >= 0) & (boxes <= 512))
