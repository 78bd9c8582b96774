"""FVD plumbing: TorchScript loading, StyleGAN-V input convention, clip splitting, short videos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.frechet import RankDeficientError
from evaluation.fvd import fvd_from_features, i3d_features, load_i3d, split_clips
from evaluation.i3d import InceptionI3d


class ProbeDetector(torch.nn.Module):
    """A transparent detector with I3D's call signature: features = per-(channel, frame) means of its input.

    It fails loudly unless called as FVD must call it (resize on, rescale off, features requested)."""

    def forward(self, videos: torch.Tensor, rescale: bool = True, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if rescale or not resize or not return_features:
            raise RuntimeError("wrong detector kwargs")
        return videos.mean(dim=(3, 4)).flatten(1)  # (b, 3 * t), layout (b, c, t, h, w)


@pytest.fixture
def probe_path(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(ProbeDetector()).save(str(path))
    return path


def test_clips_layout_and_scaling(probe_path):
    det = load_i3d(probe_path)
    assert not det.random_weights
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (40, 8, 6, 3), dtype=np.uint8)
    out = i3d_features(det, [video], clip_frames=16, batch_clips=1)
    assert out.num_clips == 2 and out.dropped_frames == 8 and out.too_short == []
    for k in range(2):
        clip = video[16 * k : 16 * (k + 1)].astype(np.float64) / 127.5 - 1.0  # (t, h, w, c) in [-1, 1]
        expected = clip.mean(axis=(1, 2)).T.reshape(-1)  # channel-major, then time
        np.testing.assert_allclose(out.features[k], expected, atol=1e-5)


def test_short_videos_are_counted_not_padded(probe_path):
    det = load_i3d(probe_path)
    long = np.zeros((16, 4, 4, 3), np.uint8)
    short = np.zeros((15, 4, 4, 3), np.uint8)
    out = i3d_features(det, [long, short], names=["a.mp4", "b.mp4"])
    assert out.num_clips == 1 and out.too_short == ["b.mp4"]
    out = i3d_features(det, [short], names=["b.mp4"])
    assert out.num_clips == 0
    with pytest.raises(ValueError, match="no generated clips"):
        fvd_from_features(out.features, np.zeros((3, 400)))


def test_split_clips_rejects_bad_video():
    with pytest.raises(ValueError, match="x.mp4: expected uint8"):
        split_clips(np.zeros((16, 4, 4, 3), np.float32), name="x.mp4")
    clips, dropped = split_clips(np.zeros((33, 2, 2, 3), np.uint8), 16)
    assert clips.shape == (2, 16, 2, 2, 3) and dropped == 1


def test_random_i3d_signature_and_scriptable(tmp_path):
    torch.manual_seed(0)
    model = InceptionI3d(width=0.125).eval()
    path = tmp_path / "tiny_i3d.pt"
    torch.jit.script(model).save(str(path))
    det = load_i3d(path)
    video = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    feats = i3d_features(det, [video]).features
    assert feats.shape == (1, 400) and np.isfinite(feats).all()
    # rescale=True on uint8-range input is the same as rescale=False on [-1, 1] (StyleGAN-V's two spellings)
    x255 = torch.from_numpy(video).permute(3, 0, 1, 2)[None].float()
    with torch.no_grad():
        a = model(x255, rescale=True, resize=True, return_features=True)
        b = model(x255 / 127.5 - 1, rescale=False, resize=True, return_features=True)
    torch.testing.assert_close(a, b)
    np.testing.assert_allclose(feats, b.double().numpy(), rtol=1e-5, atol=1e-5)
    rand = load_i3d(None, random_width=0.125)
    assert rand.random_weights


def test_fvd_rank_and_missing_file(tmp_path):
    feats = np.random.default_rng(0).normal(size=(5, 400))
    with pytest.raises(RankDeficientError, match="FVD generated clips"):
        fvd_from_features(feats, feats, allow_rank_deficient=False)
    assert fvd_from_features(feats, feats) < 1e-6
    with pytest.raises(FileNotFoundError, match="i3d_torchscript.pt"):
        load_i3d(tmp_path / "missing.pt")
