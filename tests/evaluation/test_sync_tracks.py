"""SyncNet face tracks as syncnet_python's run_pipeline builds them: minimum track length, gaps, IoU, face size."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.sync_tracks import box_iou, face_tracks, score_tracks, whole_clip_track

BOX = [100.0, 100.0, 260.0, 260.0]  # 160 px face


def detections(n: int, box=BOX, missing=()) -> list[list[list[float]]]:
    return [[] if i in missing else [list(box)] for i in range(n)]


def test_minimum_track_length_is_strictly_more_than_min_track():
    """run_pipeline keeps a track only when len(track) > min_track: 100 detections fail min_track=100."""
    assert face_tracks(detections(100), min_track=100) == []
    (t,) = face_tracks(detections(101), min_track=100)
    assert t.num_detections == 101 and t.frames.tolist() == list(range(101))
    assert len(face_tracks(detections(51), min_track=50)) == 1 and face_tracks(detections(50), min_track=50) == []


def test_track_length_counts_detections_not_frames():
    # 110 frames of which 20 miss the face: 90 detections, interpolated over the gaps but still too few
    dets = detections(110, missing=set(range(10, 110, 5)))
    assert face_tracks(dets, min_track=100) == []
    (t,) = face_tracks(dets, min_track=80)
    assert t.num_detections == 90 and len(t.frames) == 110  # first to last detection, gaps interpolated


def test_shot_shorter_than_min_track_gives_nothing():
    assert face_tracks(detections(9), min_track=10) == []
    assert len(face_tracks(detections(11), min_track=10)) == 1


def test_gap_longer_than_num_failed_det_ends_the_track():
    dets = detections(160, missing=set(range(60, 90)))  # 30 missed frames > 25
    tracks = face_tracks(dets, min_track=50)
    assert [(t.frames[0], t.frames[-1]) for t in tracks] == [(0, 59), (90, 159)]
    (t,) = face_tracks(detections(160, missing=set(range(60, 80))), min_track=50)  # 20 missed: bridged
    assert (t.frames[0], t.frames[-1]) == (0, 159)
    middle = t.boxes[70]
    np.testing.assert_allclose(middle, BOX)


def test_jump_of_the_face_box_starts_a_new_track():
    moved = [400.0, 100.0, 560.0, 260.0]  # no overlap with BOX
    dets = detections(60) + detections(60, box=moved)
    tracks = face_tracks(dets, min_track=50)
    assert len(tracks) == 2 and tracks[0].frames[-1] == 59 and tracks[1].frames[0] == 60
    assert box_iou(BOX, moved) == 0.0 and box_iou(BOX, BOX) == pytest.approx(1.0)


def test_interpolation_between_detections_and_min_face_size():
    dets = detections(30)
    dets[10] = []
    dets[9], dets[11] = [[100.0, 100.0, 260.0, 260.0]], [[104.0, 100.0, 264.0, 260.0]]
    (t,) = face_tracks(dets, min_track=20, min_face_size=100)
    np.testing.assert_allclose(t.boxes[10], [102.0, 100.0, 262.0, 260.0])
    assert face_tracks(dets, min_track=20, min_face_size=160) == []  # mean side 160 is not > 160
    small = detections(30, box=[10.0, 10.0, 60.0, 70.0])
    assert face_tracks(small, min_track=20, min_face_size=100) == []
    assert len(face_tracks(small, min_track=20, min_face_size=0)) == 1


def test_score_tracks_uses_each_tracks_own_audio():
    from evaluation.syncnet import SyncNet

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (24, 64, 64, 3), dtype=np.uint8)
    audio = rng.normal(scale=0.1, size=24 * 640).astype(np.float32)
    tracks = face_tracks(detections(24, box=[16.0, 16.0, 48.0, 48.0], missing=set(range(10, 12))),
                         min_track=4, min_face_size=0, num_failed_det=1)
    assert [(t.frames[0], t.frames[-1]) for t in tracks] == [(0, 9), (12, 23)]
    net = SyncNet()
    s = score_tracks(net, frames, audio, tracks)
    assert s.num_tracks == 2 and s.tracked_frames == 22 and np.isfinite([s.sync_c, s.sync_d]).all()
    with pytest.raises(ValueError, match="no face track kept"):
        score_tracks(net, frames, audio, [])
    track, missing = whole_clip_track([np.array(BOX), None, np.array(BOX)])
    assert missing == 1 and track.frames.tolist() == [0, 1, 2]
