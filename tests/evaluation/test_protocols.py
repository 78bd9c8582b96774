"""Protocols: FVD clip sampling (counts and start frames) per protocol on synthetic videos, crops, value ranges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation import testset
from evaluation.config import EvalConfig
from evaluation.protocols import PROTOCOLS, fvd_clip_starts, get_protocol
from evaluation.scoring import Evaluator
from perception.faces import Face


def test_stylegan_v_one_clip_random_real_start_generated_start_zero():
    p = PROTOCOLS["stylegan-v"]
    assert fvd_clip_starts(p, 100, real=False, name="a") == [0]
    starts = [fvd_clip_starts(p, 100, real=True, name=f"video{i}") for i in range(300)]
    assert all(len(s) == 1 and 0 <= s[0] <= 84 for s in starts)  # randint(0, T - 16) inclusive
    flat = [s[0] for s in starts]
    assert min(flat) <= 3 and max(flat) >= 81 and len(set(flat)) > 50  # uniform over the whole range
    assert fvd_clip_starts(p, 100, real=True, name="video7") == starts[7]  # seeded: same name, same clip
    assert fvd_clip_starts(p, 16, real=True, name="x") == [0]  # exactly one clip fits
    assert fvd_clip_starts(p, 15, real=True, name="x") == [] and fvd_clip_starts(p, 15, real=False, name="x") == []
    reseeded = get_protocol("stylegan-v", fvd_seed=1)
    assert [fvd_clip_starts(reseeded, 100, real=True, name=f"video{i}")[0] for i in range(20)] != flat[:20]


def test_latentsync_frames_20_to_35_on_both_sides():
    p = PROTOCOLS["latentsync"]
    assert fvd_clip_starts(p, 100, real=True, name="a") == [20] == fvd_clip_starts(p, 100, real=False, name="a")
    assert fvd_clip_starts(p, 36, real=True, name="a") == [20]
    assert fvd_clip_starts(p, 35, real=True, name="a") == []  # vr[20:36] needs 36 frames
    assert p.fvd_face_crop == 224 and p.fvd_value_range == "zero_one" and p.fvd_ddof == 1 and p.sync_min_track == 50


def test_all_clips_every_non_overlapping_clip():
    p = PROTOCOLS["all-clips"]
    assert fvd_clip_starts(p, 100, real=True, name="a") == [0, 16, 32, 48, 64, 80] == fvd_clip_starts(
        p, 100, real=False, name="a")
    assert fvd_clip_starts(p, 15, real=True, name="a") == []
    assert get_protocol("all-clips", fvd_clip_frames=8).modified == ("fvd_clip_frames=8",)
    assert get_protocol("all-clips", fvd_clip_frames=16) is PROTOCOLS["all-clips"]  # no change, no "modified"
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("fvd-2048")


class ProbeDetector(torch.nn.Module):
    """I3D's call signature; features = the mean of every (channel, frame) of its input, so a clip's start
    frame and value range can be read back from its features."""

    def forward(self, videos: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if rescale or not return_features:
            raise RuntimeError("wrong detector kwargs")
        return videos.mean(dim=(3, 4)).flatten(1)


class FixedFace:
    """A detector that finds one face at a fixed box (for the LatentSync face-crop path)."""

    name = "fixed"

    def detect_batch(self, frames):
        return [[Face(np.float32([8, 4, 40, 36]), 0.9, np.zeros((5, 2), np.float32))] for _ in frames]


def counting_video(name: str, num_frames: int, size: int = 48) -> testset.TestVideo:
    """Frame t is filled with the value t: a clip's features reveal its first frame."""
    frames = np.broadcast_to(np.arange(num_frames, dtype=np.uint8)[:, None, None, None],
                             (num_frames, size, size, 3)).copy()
    return testset.TestVideo(name=name, dataset="synthetic", frames=frames, audio=None,
                             kps=np.zeros((num_frames, 5, 2)), kps_size=size, fps=25.0, source_id=name)


@pytest.fixture
def probe_path(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(ProbeDetector()).save(str(path))
    return str(path)


@pytest.mark.parametrize("protocol,expect_clips", [("stylegan-v", [1, 1, 1, 0]), ("latentsync", [1, 1, 0, 0]),
                                                   ("all-clips", [4, 2, 1, 0])])
def test_fvd_metric_sample_counts_and_starts(probe_path, protocol, expect_clips):
    lengths = [70, 40, 30, 12]
    cfg = EvalConfig(metrics=["fvd"], i3d_path=probe_path, protocol=protocol)
    ev = Evaluator(cfg, face_backend=FixedFace())
    rows = [ev.score_video(v, v.frames.copy()) for v in (counting_video(f"v{i}", n) for i, n in enumerate(lengths))]
    assert [r["fvd_clips"] for r in rows] == expect_clips
    r = ev.dataset_metrics("synthetic")
    n = sum(expect_clips)
    assert r["fvd_samples_generated"] == r["fvd_samples_real"] == n and r["fvd_rank_deficient"] is True
    assert r["fvd_skipped_videos"] == expect_clips.count(0) and np.isfinite(r["fvd"])
    assert r["fvd_dim"] == 48  # 3 channels x 16 frames of the probe
    for row, length in zip(rows, lengths):
        if not row["fvd_clips"]:
            assert "too short" in row["fvd_error"]
            continue
        expected = fvd_clip_starts(ev.protocol, length, real=True, name=row["video"])[0]
        assert row["fvd_real_start"] == expected
        assert row["fvd_generated_start"] == (20 if protocol == "latentsync" else 0)
    assert r["fvd_floor_samples_half1"] + r["fvd_floor_samples_half2"] == n  # the floor halves split the real clips


def test_fvd_floor_does_not_depend_on_the_generated_side(probe_path):
    """LatentSync crops faces: a generated video without faces leaves FVD without clips, not the floor."""

    class NoFaceInGenerated(FixedFace):
        def detect_batch(self, frames):
            return [[] if frame.mean() == 7 else faces for frame, faces in zip(frames, super().detect_batch(frames))]

    ev = Evaluator(EvalConfig(metrics=["fvd"], i3d_path=probe_path, protocol="latentsync"),
                   face_backend=NoFaceInGenerated())
    for i in range(4):
        video = counting_video(f"v{i}", 40)
        row = ev.score_video(video, np.full_like(video.frames, 7))  # "generated": no face anywhere
        assert row["fvd_clips"] == 0 and row["fvd_real_start"] == 20 and "no face" in row["fvd_error"]
    r = ev.dataset_metrics("synthetic")
    assert r["fvd_samples_generated"] == r["fvd_samples_real"] == 0 and r["fvd_skipped_videos"] == 4
    assert np.isnan(r["fvd"]) and r["fvd_floor_samples_half1"] == r["fvd_floor_samples_half2"] == 2
    assert np.isfinite(r["fvd_floor"])


def test_fvd_value_range_and_face_crop_reach_the_detector(probe_path):
    from evaluation.fvd import clip_features, load_i3d
    from evaluation.metrics.fvd import protocol_clips

    det = load_i3d(probe_path)
    video = counting_video("v", 60)
    faces = FixedFace().detect_batch(video.frames)
    faces = [f[0] for f in faces]
    sv = PROTOCOLS["stylegan-v"]
    starts, clips = protocol_clips(sv, video.frames, None, real=True, name="v")
    feats = clip_features(det, clips, sv.fvd_value_range, resize=True)
    np.testing.assert_allclose(feats[0, :16], (starts[0] + np.arange(16)) / 127.5 - 1, atol=1e-6)  # [-1, 1]
    ls = PROTOCOLS["latentsync"]
    starts, clips = protocol_clips(ls, video.frames, faces, real=True, name="v")
    assert starts == [20] and clips.shape == (1, 16, 224, 224, 3)
    feats = clip_features(det, clips, ls.fvd_value_range, resize=False)
    np.testing.assert_allclose(feats[0, :16], (20 + np.arange(16)) / 255, atol=1e-6)  # [0, 1], as LatentSync
    faces[25] = None
    with pytest.raises(ValueError, match="no face in clip frame 5"):
        protocol_clips(ls, video.frames, faces, real=True, name="v")


def test_config_picks_protocol_and_records_overrides():
    cfg = EvalConfig(protocol="latentsync", sync_min_track=10)
    p = cfg.resolved_protocol()
    assert p.name == "latentsync" and p.sync_min_track == 10 and p.modified == ("sync_min_track=10",)
    assert "modified: sync_min_track=10" in p.describe()
    assert EvalConfig().resolved_protocol() is PROTOCOLS["stylegan-v"]
    with pytest.raises(ValueError, match="eval.protocol"):
        EvalConfig(protocol="fvd2048")
