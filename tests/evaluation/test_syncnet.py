"""SyncNet: scoring from distances (hand-computed), the reference's shifted distances, crops, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.syncnet import (
    SyncNet,
    SyncNetS,
    interpolate_missing_boxes,
    mfcc_features,
    pairwise_shift_distances,
    sync_distances,
    sync_scores,
    sync_scores_from_distances,
    syncnet_face_crops,
)


def test_scores_hand_computed_zero_offset():
    dists = np.array([[5, 4, 1, 4, 5], [6, 3, 2, 3, 6], [5, 5, 3, 4, 5]], dtype=float)
    # column means: 16/3, 4, 2, 11/3, 16/3 -> min 2 at index 2 = vshift -> offset 0; median 4 -> LSE-C 2
    s = sync_scores_from_distances(dists, vshift=2)
    assert s.offset == 0 and s.lse_d == pytest.approx(2.0) and s.lse_c == pytest.approx(2.0)
    assert s.num_windows == 3


def test_scores_hand_computed_offset_and_lower_median():
    mdist = np.full(31, 10.0)
    mdist[12] = 7.0  # best shift index 12 -> offset 15 - 12 = 3
    mdist[:8] = 9.0  # sorted: 7, 9 x8, 10 x22 -> median (16th of 31) = 10
    dists = np.stack([mdist - 0.5, mdist + 0.5])  # frame mean = mdist
    s = sync_scores_from_distances(dists)
    assert s.offset == 3 and s.lse_d == pytest.approx(7.0) and s.lse_c == pytest.approx(3.0)
    # vshift=1, 3 columns: lower median of [1, 2, 3] is 2
    s = sync_scores_from_distances(np.array([[3.0, 1.0, 2.0]]), vshift=1)
    assert s.offset == 0 and s.lse_c == pytest.approx(1.0)


def test_scores_reject_bad_shapes():
    with pytest.raises(ValueError, match="31"):
        sync_scores_from_distances(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="too short"):
        sync_scores_from_distances(np.zeros((0, 31)))


def test_shift_distances_match_definition():
    rng = np.random.default_rng(0)
    v, a = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    d = pairwise_shift_distances(torch.tensor(v), torch.tensor(a), vshift=2)
    for i in range(6):
        for k in range(5):
            j = i + k - 2
            aj = a[j] if 0 <= j < 6 else np.zeros(4)  # zero padding outside the clip
            assert d[i, k] == pytest.approx(np.linalg.norm(v[i] - aj + 1e-6), rel=1e-6)


def test_state_dict_keys_are_syncnet_python():
    keys = set(SyncNetS().state_dict())
    for stream in ("netcnnaud", "netcnnlip"):
        for conv in (0, 4, 8, 11, 14, 18):
            assert f"{stream}.{conv}.weight" in keys and f"{stream}.{conv + 1}.running_mean" in keys
    for fc in ("netfcaud", "netfclip"):
        assert {f"{fc}.0.weight", f"{fc}.1.running_var", f"{fc}.3.weight"} <= keys
    assert SyncNetS().state_dict()["netfcaud.3.weight"].shape == (1024, 512)


def test_weights_load_from_local_file(tmp_path):
    src = SyncNet(seed=1)
    path = tmp_path / "syncnet_v2.model"
    torch.save(src.net.state_dict(), path)
    loaded = SyncNet(path)
    assert not loaded.random_weights and SyncNet().random_weights
    torch.testing.assert_close(loaded.net.netfclip[3].weight, src.net.netfclip[3].weight)
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.model")
    with pytest.raises(ValueError, match="bad.model: not SyncNet weights"):
        SyncNet(tmp_path / "bad.model")


def test_mfcc_rate_and_shape():
    mfcc = mfcc_features(np.zeros(16000, np.float32) + 0.01)
    assert mfcc.shape == (13, 99)  # 10 ms hop: 4 MFCC frames per 25 fps video frame
    with pytest.raises(ValueError, match="16000 Hz"):
        mfcc_features(np.zeros(8000), 8000)
    with pytest.raises(ValueError, match="mono"):
        mfcc_features(np.zeros((2, 8000)))


def test_face_crops_follow_run_pipeline():
    frames = np.zeros((3, 100, 100, 3), np.uint8)
    frames[:, 40:60, 40:60] = (255, 0, 0)  # a red square "face" in RGB
    crops = syncnet_face_crops(frames, np.tile([40.0, 40.0, 60.0, 60.0], (3, 1)))
    assert crops.shape == (3, 224, 224, 3)
    # s=10: rows cy-10 .. cy+18, cols cx-14 .. cx+14 -> the face fills rows 0..~20/28, BGR order (blue last)
    assert crops[0, 50, 112, 2] == 255 and crops[0, 50, 112, 0] == 0
    assert crops[0, 220, 112, 2] == 0  # below the face: black frame content, not padding
    with pytest.raises(ValueError, match="3 frames but 2 face boxes"):
        syncnet_face_crops(frames, np.zeros((2, 4)))


def test_missing_boxes_interpolated_and_counted():
    boxes, missing = interpolate_missing_boxes([np.array([0, 0, 10, 10]), None, np.array([2, 2, 12, 12])])
    assert missing == 1 and boxes[1].tolist() == [1, 1, 11, 11]
    with pytest.raises(ValueError, match="no face detected in any of 2 frames"):
        interpolate_missing_boxes([None, None])


@pytest.fixture(scope="module")
def random_syncnet():
    return SyncNet()


def test_full_path_random_weights(random_syncnet):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (9, 224, 224, 3), dtype=np.uint8)
    audio = rng.normal(scale=0.1, size=9 * 640).astype(np.float32)
    d = sync_distances(random_syncnet, crops, audio, batch_size=3)
    assert d.shape == (4, 31) and np.isfinite(d).all()  # windows 0..min_length-6
    s = sync_scores(random_syncnet, crops, audio)
    assert np.isfinite([s.lse_d, s.lse_c]).all() and -15 <= s.offset <= 15 and s.lse_c >= 0


def test_bad_clip_lengths(random_syncnet):
    crops = np.zeros((5, 224, 224, 3), np.uint8)
    with pytest.raises(ValueError, match="too short"):
        sync_distances(random_syncnet, crops, np.zeros(5 * 640, np.float32))
    with pytest.raises(ValueError, match="lengths differ"):
        sync_distances(random_syncnet, np.zeros((20, 224, 224, 3), np.uint8), np.zeros(10 * 640, np.float32))
    with pytest.raises(ValueError, match="face crops"):
        sync_distances(random_syncnet, np.zeros((20, 100, 100, 3), np.uint8), np.zeros(20 * 640, np.float32))
