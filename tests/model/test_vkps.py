"""V-Kps drawing: pixel-equal to the official OpenCV recipe, batched rendering, flips."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.vkps import draw_vkps, flip_keypoints, flip_vkps_image, render_vkps


def _official_style(kps: np.ndarray, height: int, width: int) -> np.ndarray:
    """The facts-file recipe written the straightforward way (one cv2 call per shape, uint8 RGB canvas)."""
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for a, b in ([0, 2], [1, 2]):
        x, y = kps[[a, b], 0], kps[[a, b], 1]
        length = ((x[0] - x[1]) ** 2 + (y[0] - y[1]) ** 2) ** 0.5
        angle = int(math.degrees(math.atan2(y[0] - y[1], x[0] - x[1])))
        polygon = cv2.ellipse2Poly((int(np.mean(x)), int(np.mean(y))), (int(length / 2), 4), angle, 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, [int(float(c) * 0.6) for c in colors[a]])
    for i, (x, y) in enumerate(kps[:3]):
        cv2.circle(canvas, (int(x), int(y)), 4, colors[i], -1)
    return canvas


def _faces(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Plausible float face keypoints (5 points: eyes, nose, mouth corners) in a size x size frame."""
    rng = np.random.default_rng(seed)
    s = size / 512
    left = rng.uniform(150, 250, (n, 2)) * s
    right = left + rng.uniform([80, -20], [160, 20], (n, 2)) * s
    nose = (left + right) / 2 + rng.uniform([-20, 40], [20, 90], (n, 2)) * s
    mouth_l, mouth_r = left + [0, 130 * s], right + [0, 130 * s]
    return np.stack([left, right, nose, mouth_l, mouth_r], axis=1)


def test_draw_matches_official_recipe_pixel_for_pixel():
    for kps in _faces(20, 512, seed=1):
        np.testing.assert_array_equal(draw_vkps(kps, 512, 512), _official_style(kps, 512, 512))
    # non-square canvas, points near/over the border, 3-point input
    kps = np.array([[-3.7, 10.2], [70.9, 2.5], [40.5, 47.9]])
    np.testing.assert_array_equal(draw_vkps(kps, 48, 72), _official_style(kps, 48, 72))


def test_draw_colours_and_radius():
    kps = np.array([[100.0, 100.0], [180.0, 100.0], [140.0, 160.0]])
    img = draw_vkps(kps, 256, 256)
    assert tuple(img[100, 100]) == (255, 0, 0) and tuple(img[100, 180]) == (0, 255, 0)
    assert tuple(img[160, 140]) == (0, 0, 255)
    assert tuple(img[100, 96]) == (255, 0, 0) and tuple(img[100, 95]) == (0, 0, 0)  # radius 4
    mid_left = img[130, 120]  # on the eye-0 -> nose limb
    assert tuple(mid_left) == (153, 0, 0) and tuple(img[130, 160]) == (0, 153, 0)
    assert set(map(tuple, img.reshape(-1, 3))) <= {(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255),
                                                     (153, 0, 0), (0, 153, 0)}


def test_render_batched_equals_draw_and_scale():
    kps = _faces(12, 512)
    video = render_vkps(kps, 512)
    assert video.shape == (12, 3, 512, 512) and video.dtype == torch.float32
    assert 0.0 <= video.min() and video.max() <= 1.0
    for f in (0, 5, 11):
        expected = torch.from_numpy(draw_vkps(kps[f], 512, 512)).permute(2, 0, 1).float() / 255
        assert torch.equal(video[f], expected)
    small = render_vkps(torch.from_numpy(kps), (64, 96), scale=0.125)  # tensor input, (H, W) size
    assert small.shape == (12, 3, 64, 96)
    expected = torch.from_numpy(draw_vkps(kps[3] * 0.125, 64, 96)).permute(2, 0, 1).float() / 255
    assert torch.equal(small[3], expected)


def test_bad_keypoints_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        render_vkps(np.zeros((4, 2, 2)), 64)
    with pytest.raises(ValueError, match="NaN"):
        render_vkps(np.full((1, 3, 2), np.nan), 64)


def test_flip_image_swaps_red_and_green():
    image = torch.rand(2, 3, 8, 10)
    flipped = flip_vkps_image(image)
    torch.testing.assert_close(flipped[:, 0], image[:, 1].flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(flipped[:, 1], image[:, 0].flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(flipped[:, 2], image[:, 2].flip(-1), rtol=0, atol=0)
    video = torch.rand(1, 3, 4, 8, 10)  # (b, c, f, h, w): channel dim given explicitly
    torch.testing.assert_close(flip_vkps_image(video, channel_dim=1)[:, 1], video[:, 0].flip(-1), rtol=0, atol=0)
    hwc = draw_vkps(np.array([[10.0, 10], [30, 10], [20, 20]]), 32, 40)
    np.testing.assert_array_equal(flip_vkps_image(hwc), hwc[:, ::-1, [1, 0, 2]])


def test_flip_keypoints_mirrors_and_swaps_pairs():
    kps = np.array([[10.0, 1], [20, 2], [15, 3], [11, 4], [19, 5]])
    out = flip_keypoints(kps, 100)
    np.testing.assert_array_equal(out, [[79, 2], [89, 1], [84, 3], [80, 5], [88, 4]])
    np.testing.assert_array_equal(flip_keypoints(out, 100), kps)  # an involution
    t = torch.from_numpy(kps).float()[None].repeat(3, 1, 1)
    assert torch.equal(flip_keypoints(t, 100), torch.from_numpy(out).float()[None].repeat(3, 1, 1))
    assert np.array_equal(kps[0], [10.0, 1])  # input untouched


def test_render_of_flipped_keypoints_equals_flipped_render_exactly():
    # Integer points, limbs at whole-degree angles and integer limb centres: OpenCV's truncations are symmetric.
    kps = np.array([[[200.0, 200], [320, 200], [260, 260]], [[100.0, 300], [180, 300], [140, 340]]])
    direct = render_vkps(flip_keypoints(kps, 512), 512)
    assert torch.equal(direct, flip_vkps_image(render_vkps(kps, 512)))


def _same_colour_within(a: torch.Tensor, b: torch.Tensor, distance: int) -> bool:
    """Every coloured pixel of ``a`` has a pixel of the same colour in ``b`` within ``distance`` (Chebyshev)."""
    palette = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [153, 0, 0], [0, 153, 0]]) / 255.0
    for colour in palette:
        in_a = (a == colour[None, :, None, None]).all(1, keepdim=True).float()
        in_b = (b == colour[None, :, None, None]).all(1, keepdim=True).float()
        assert in_a.any() and in_b.any(), f"colour {colour} not drawn"
        near_b = F.max_pool2d(in_b, 2 * distance + 1, stride=1, padding=distance)
        if ((in_a > 0) & (near_b == 0)).any():
            return False
    return True


def test_render_of_flipped_keypoints_matches_flipped_render_within_3px():
    # Float keypoints: OpenCV truncates limb centres and angles toward zero, which a mirror does not preserve, so
    # limb edges may move by a few pixels; the images still agree up to that (documented in flip_keypoints).
    kps = _faces(8, 256, seed=3)
    direct = render_vkps(flip_keypoints(kps, 256), 256)
    flipped = flip_vkps_image(render_vkps(kps, 256))
    assert _same_colour_within(direct, flipped, 3) and _same_colour_within(flipped, direct, 3)
    mismatch = (direct != flipped).any(1).sum() / (flipped > 0).any(1).sum()
    assert mismatch < 0.35
