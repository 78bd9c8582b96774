"""Lip boxes and the lip mask: the official mask on hand-made 106-point landmarks, the 5-point approximation on
drawn mouths with a known opening, and where the opening cannot be measured."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from perception import lips
from perception.faces import Face


def hand_made_106(centre=(256.4, 360.7), half=(60.3, 18.2)) -> np.ndarray:
    """106 points: the lips (52:72) on an ellipse, every other point far away (must not count)."""
    points = np.full((106, 2), 10.0, np.float32)
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)  # includes 0, pi/2, pi, 3pi/2: the extremes
    points[52:72, 0] = centre[0] + half[0] * np.cos(angles)
    points[52:72, 1] = centre[1] + half[1] * np.sin(angles)
    return points


def test_official_lip_mask_on_hand_made_landmarks():
    points = hand_made_106()
    face = Face(np.array([150, 200, 360, 420], np.float32), 0.9, np.zeros((5, 2), np.float32),
                lips=points[lips.LIP_LANDMARKS])
    box = face.lip_box
    np.testing.assert_allclose(box, [196.1, 342.5, 316.7, 378.9], atol=1e-4)
    # By hand, as the official: int corners 196, 342, 316, 378 -> w 120, h 36, centre (256, 360) -> x2 box
    # 136..376 x 324..396, filled inclusively at 512², then PIL's bilinear resize to 64².
    image = np.zeros((512, 512), np.uint8)
    image[324:397, 136:377] = 255
    expected = np.asarray(Image.fromarray(image).resize((64, 64), Image.BILINEAR), np.float32) / 255
    mask = lips.lip_mask(box[None], 512, 64)
    assert mask.shape == (1, 1, 64, 64) and mask.dtype == np.float32
    assert np.abs(mask[0, 0] - expected).max() <= 1 / 255 + 1e-6  # PIL rounds to 8 bits
    assert mask[0, 0, 41:49, 18:46].min() == 1.0  # cells whose filter support (16 px) lies inside
    assert mask[0, 0, :40].max() == 0.0 and mask[0, 0, 51:].max() == 0.0  # support outside the box
    soft = mask[0, 0][(mask[0, 0] > 0) & (mask[0, 0] < 1)]
    assert len(soft) > 20 and ((soft > 0.2) & (soft < 0.8)).any()  # soft edges, not a binary box
    assert float(mask.sum()) == pytest.approx(241 * 73 / 64, rel=1e-3)  # the resize keeps the area
    assert lips.lip_mask(box[None], 512, 64, scale=1.0).sum() == pytest.approx(121 * 37 / 64, rel=1e-3)
    full = lips.lip_mask(box[None], 512, 512)  # at image size: the binary box itself
    assert full.sum() == 241 * 73 and full[0, 0, 324, 136] == full[0, 0, 396, 376] == 1.0


def test_lip_mask_clamps_boxes_at_the_image_border():
    mask = lips.lip_mask(np.array([[-4.0, 2.0, 30.0, 20.0], [np.nan] * 4], np.float32), 64, 8)
    # int corners (-4, 2, 30, 20) x2 about (13, 11): columns -21..47, rows -7..29 -> clamped to 0..47 x 0..29
    ref = lips.lip_mask(np.array([[0.0, 0.0, 47.0, 29.0]], np.float32), 64, 8, scale=1.0)
    np.testing.assert_allclose(mask[:, :1], ref, atol=1e-6)
    assert mask[0, 1].max() == 0.0  # an unknown box weights nothing


def test_five_point_box_has_the_mean_face_proportions_and_mirrors():
    kps = np.array([[[210, 200], [290, 200], [250, 250], [200, 300], [280, 300]]], np.float32)
    np.testing.assert_allclose(lips.lip_boxes_from_corners(kps)[0], [200, 300 - 0.21 * 80, 280, 300 + 0.15 * 80],
                               atol=1e-3)
    mirrored = kps.copy()
    mirrored[..., 0] = 512 - kps[..., 0]
    mirrored[:, [3, 4]] = mirrored[:, [4, 3]]
    box, mbox = lips.lip_boxes_from_corners(kps)[0], lips.lip_boxes_from_corners(mirrored)[0]
    np.testing.assert_allclose(mbox, [512 - box[2], box[1], 512 - box[0], box[3]], atol=1e-3)
    tilted = kps.copy()  # a head rolled by 30 degrees about the mouth centre
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    tilted[0] = (kps[0] - [240, 300]) @ np.array([[c, s], [-s, c]], np.float32) + [240, 300]
    tbox = lips.lip_boxes_from_corners(tilted)[0]
    assert tbox[0] < tilted[0, 3, 0] and tbox[2] > tilted[0, 4, 0] and tbox[1] < tilted[0, 3, 1]
    assert (tbox[3] - tbox[1]) > (box[3] - box[1])  # the tilted lips' box is taller


def drawn_mouth(opening: float, below: float = 0.6, width: int = 80, size: int = 256):
    """A face-coloured frame with lips around a dark cavity ``opening`` px tall (``below`` of it under the corner
    line), and its 5 keypoints."""
    img = np.full((size, size, 3), (200, 160, 140), np.uint8)
    cx = cy = size // 2
    top, bottom = cy - opening * (1 - below), cy + opening * below
    cv2.ellipse(img, (cx, int(round(top))), (width // 2, int(0.21 * width)), 0, 180, 360, (170, 80, 80), -1)
    cv2.ellipse(img, (cx, int(round(bottom))), (width // 2, int(0.15 * width)), 0, 0, 180, (170, 80, 80), -1)
    if opening > 0:
        cv2.rectangle(img, (int(cx - 0.4 * width), int(round(top))), (int(cx + 0.4 * width), int(round(bottom))),
                      (40, 20, 20), -1)
    kps = np.array([[cx - 40, cy - 80], [cx + 40, cy - 80], [cx, cy - 40], [cx - width / 2, cy],
                    [cx + width / 2, cy]], np.float32)
    return img, kps, (top - cy, bottom - cy)


@pytest.mark.parametrize("below", [0.5, 0.8])
def test_five_point_box_height_follows_the_measured_opening(below):
    heights = []
    for opening in (0, 6, 12, 20, 30):
        img, kps, (top, bottom) = drawn_mouth(opening, below)
        cavity = lips.mouth_cavity(img, kps)
        if opening == 0:
            assert cavity == (0.0, 0.0)
        else:
            assert cavity[0] == pytest.approx(top, abs=2.5) and cavity[1] == pytest.approx(bottom, abs=2.5)
        box = lips.lip_boxes_from_corners(kps[None], np.array([cavity]))[0]
        heights.append(box[3] - box[1])
        assert box[1] == pytest.approx(kps[3, 1] + min(top, 0) - 0.21 * 80, abs=2.5)  # top of the upper lip
        assert box[3] == pytest.approx(kps[3, 1] + max(bottom, 0) + 0.15 * 80, abs=2.5)  # bottom of the lower lip
    closed = 0.36 * 80
    assert heights[0] == pytest.approx(closed, abs=0.01)
    np.testing.assert_allclose(np.array(heights) - closed, [0, 6, 12, 20, 30], atol=4)
    assert heights == sorted(heights)


def test_unmeasurable_openings_are_interpolated_or_closed():
    img, kps, _ = drawn_mouth(20)
    off = kps.copy()
    off[:, 1] += 120  # the strip below the mouth leaves the frame
    assert np.isnan(lips.mouth_cavity(img, off)).all()
    tiny = kps.copy()
    tiny[4] = tiny[3] + [4, 0]
    assert np.isnan(lips.mouth_cavity(img, tiny)).all()
    assert np.isnan(lips.mouth_cavity(np.zeros_like(img), kps)).all()  # too dark to tell
    closed, _, _ = drawn_mouth(0)
    cav = lips.mouth_cavities(np.stack([closed, img, img]), np.stack([kps, off, kps]))
    np.testing.assert_allclose(cav[1], (cav[0] + cav[2]) / 2)  # the middle frame from its neighbours
    assert cav[0].tolist() == [0.0, 0.0] and cav[2, 1] > 10
    assert lips.mouth_cavities(np.stack([img]), np.stack([off])).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("opening", [0, 12])
def test_dark_clothing_below_the_chin_is_not_the_cavity(opening):
    img, kps, (top, bottom) = drawn_mouth(opening)
    width = kps[4, 0] - kps[3, 0]
    collar = int(kps[3, 1] + 0.75 * width)  # a dark collar inside the measured strip, below the lower lip
    img[collar:collar + 12] = (20, 20, 20)
    cavity = lips.mouth_cavity(img, kps)
    if opening == 0:
        assert cavity == (0.0, 0.0)
    else:
        assert cavity[0] == pytest.approx(top, abs=2.5) and cavity[1] == pytest.approx(bottom, abs=2.5)
