"""Each retarget strategy on hand-made keypoints; expected numbers worked out by hand in the comments."""

import numpy as np
import pytest

from model.retarget import (
    closest_pose_index,
    face_scale,
    fix_face,
    interpolate_kps,
    naive_retarget,
    no_retarget,
    offset_retarget,
    retarget,
)

# Reference: eyes 20 px apart, nose 10 px below the eye line, frontal (eye-nose ratio 1).
REF = np.array([[40.0, 50.0], [60.0, 50.0], [50.0, 60.0]])
# Driving: frame 0 frontal, eyes 40 apart, nose 20 below (twice the reference size);
# frame 1 = frame 0 moved by (+4, +2); frame 2 a turned face (ratio ~0.62) four times the reference size.
DRIVING = np.array([
    [[10.0, 10.0], [50.0, 10.0], [30.0, 30.0]],
    [[14.0, 12.0], [54.0, 12.0], [34.0, 32.0]],
    [[0.0, 0.0], [80.0, 0.0], [20.0, 40.0]],
])


def test_closest_pose_uses_absolute_ratio_difference():
    # |ratio - 1| is 0, 0, 0.38: frame 0 (first on ties). The official loop stores the last *ratio* (1.0) as
    # the bar, so it would accept frames 1 and 2 too and end on frame 2 (scale 0.25): we must not.
    assert closest_pose_index(REF, DRIVING) == 0
    np.testing.assert_allclose(face_scale(REF, DRIVING), [20 / 40, 10 / 20])


def test_no_retarget_returns_driving_unchanged():
    np.testing.assert_array_equal(no_retarget(REF, DRIVING), DRIVING)


def test_fix_face_repeats_reference():
    out = fix_face(REF, 4)
    assert out.shape == (4, 3, 2)
    np.testing.assert_array_equal(out, np.stack([REF] * 4))


def test_offset_retarget_moves_reference_along_scaled_nose_trace():
    # Nose trace from frame 0: (0,0), (4,2), (-10,10); times scale (0.5, 0.5): (0,0), (2,1), (-5,5).
    expected = np.stack([REF, REF + [2.0, 1.0], REF + [-5.0, 5.0]])
    np.testing.assert_allclose(offset_retarget(REF, DRIVING), expected)


def test_naive_retarget_rescales_and_follows_nose():
    # Scaled by 0.5: frame 0 -> (5,5),(25,5),(15,15); nose (15,15) -> reference nose (50,60): shift (+35,+45).
    expected = np.array([
        [[40.0, 50.0], [60.0, 50.0], [50.0, 60.0]],  # frame 0 = the reference
        [[42.0, 51.0], [62.0, 51.0], [52.0, 61.0]],  # (7,6),(27,6),(17,16) + (35,45)
        [[35.0, 45.0], [75.0, 45.0], [45.0, 65.0]],  # (0,0),(40,0),(10,20) + (35,45)
    ])
    np.testing.assert_allclose(naive_retarget(REF, DRIVING), expected)


def test_interpolate_kps_linear_half_pixel():
    seq = np.array([[[0.0, 0.0]] * 3, [[8.0, 4.0]] * 3])  # 2 frames -> 4 frames
    out = interpolate_kps(seq, 4)
    # Output frame i samples source position (i + 0.5) * 2/4 - 0.5 = -0.25, 0.25, 0.75, 1.25 (ends clamped).
    np.testing.assert_allclose(out[:, 0], [[0, 0], [2, 1], [6, 3], [8, 4]])
    np.testing.assert_array_equal(interpolate_kps(DRIVING, 3), DRIVING)


def test_retarget_dispatch_and_errors():
    assert retarget("naive_retarget", REF, None, 5).shape == (5, 3, 2)  # no driving: hold the face
    np.testing.assert_allclose(retarget("no_retarget", REF, DRIVING[:1], 3), np.repeat(DRIVING[:1], 3, 0))
    with pytest.raises(ValueError, match="unknown retarget strategy"):
        retarget("warp", REF, DRIVING, 3)
    with pytest.raises(ValueError, match="driving keypoints"):
        retarget("no_retarget", REF, np.zeros((3, 2, 2)), 3)
