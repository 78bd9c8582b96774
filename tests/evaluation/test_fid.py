"""FID Inception: pytorch-fid key layout, TF-style pooling patches, input convention, local weight loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models import inception as tv_inception

from evaluation.fid import (
    FIDInception,
    FIDInceptionA,
    FIDInceptionE,
    fid_from_features,
    fid_inception_v3,
    inception_features,
)
from evaluation.frechet import RankDeficientError


def test_state_dict_layout_is_pytorch_fid():
    sd = fid_inception_v3().state_dict()
    assert sd["fc.weight"].shape == (1008, 2048)  # the TF graph's 1008 classes
    assert not any(k.startswith("AuxLogits") for k in sd)
    assert sd["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert "Mixed_6e.branch7x7dbl_5.bn.running_var" in sd


def test_tf_average_pool_excludes_padding():
    """Same weights: the FID block equals torchvision's inside the image and differs only at the border."""
    torch.manual_seed(0)
    ours, theirs = FIDInceptionA(8, pool_features=4).eval(), tv_inception.InceptionA(8, pool_features=4).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.rand(1, 8, 9, 9) + 1.0
    a, b = ours(x), theirs(x)
    pool = slice(a.shape[1] - 4, None)  # the pool branch is last
    assert torch.allclose(a[:, :, 1:-1, 1:-1], b[:, :, 1:-1, 1:-1])
    assert not torch.allclose(a[:, pool, 0, 0], b[:, pool, 0, 0])
    # explicit check of the corner: mean over the 4 real pixels, not 9 with zeros
    manual = ours.branch_pool(x[:, :, :2, :2].mean(dim=(2, 3), keepdim=True))
    assert torch.allclose(a[:, pool, :1, :1], manual, atol=1e-5)


def test_mixed_7c_uses_max_pool():
    torch.manual_seed(0)
    e = FIDInceptionE(16, max_pool=True).eval()
    x = torch.randn(1, 16, 5, 5)
    pooled = torch.nn.functional.max_pool2d(x, 3, 1, 1)
    assert torch.allclose(e(x)[:, -192:], e.branch_pool(pooled))


def test_input_convention_uint8_to_minus1_1_at_299():
    model = FIDInception(dims=64)
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 48, 3), dtype=np.uint8)
    feats = inception_features(model, frames, batch_size=2)
    assert feats.shape == (3, 64) and feats.dtype == np.float64
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    with torch.no_grad():
        manual = model.blocks(x).mean(dim=(2, 3)).double().numpy()
    np.testing.assert_allclose(feats, manual, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inception_features(model, frames, batch_size=1), feats, rtol=1e-5, atol=1e-6)


def test_loads_local_weights_and_tags_random(tmp_path):
    torch.manual_seed(1)
    net = fid_inception_v3()
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    loaded, rand = FIDInception(path), FIDInception()
    assert not loaded.random_weights and rand.random_weights
    frames = np.random.default_rng(1).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    feats = inception_features(loaded, frames)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    x = torch.nn.functional.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255, size=(299, 299),
                                        mode="bilinear", align_corners=False) * 2 - 1
    net.eval()
    with torch.no_grad():
        for name in ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                     "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"]:
            x = getattr(net, name)(x)
    np.testing.assert_allclose(feats, x.flatten(1).double().numpy(), rtol=1e-4, atol=1e-5)


def test_bad_weights_and_frames(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        FIDInception(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="bad.pth: not the FID Inception weights"):
        FIDInception(bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="junk.pth"):
        FIDInception(junk)
    model = FIDInception(dims=64)
    with pytest.raises(ValueError, match="uint8"):
        inception_features(model, np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        inception_features(model, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="dims"):
        FIDInception(dims=100)


def test_fid_below_full_rank_is_computed_unless_strict():
    feats = np.random.default_rng(0).normal(size=(10, 64))
    with pytest.raises(RankDeficientError, match="FID generated frames"):
        fid_from_features(feats, feats, allow_rank_deficient=False)
    assert fid_from_features(feats, feats) < 1e-6


@pytest.mark.parametrize("dims,block", [(2048, 3), (64, 0)])
def test_matches_pytorch_fid_reference(tmp_path, monkeypatch, dims, block):
    """The same random weights through pytorch-fid's own InceptionV3 give the same features."""
    pfi = pytest.importorskip("pytorch_fid.inception")
    torch.manual_seed(3)
    state = fid_inception_v3().state_dict()
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: state)  # offline: no download
    ref = pfi.InceptionV3([block]).eval()
    torch.save(state, tmp_path / "w.pth")
    ours = FIDInception(tmp_path / "w.pth", dims=dims)
    x = torch.rand(2, 3, 80, 64)
    with torch.no_grad():
        expected = torch.nn.functional.adaptive_avg_pool2d(ref(x)[0], 1).flatten(1)
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-6)
