"""Audio interpolation + windowing (docs/official-architecture.md §11) against a hand-built per-frame loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.audio_windows import audio_windows, prepare_audio_windows
from perception.audio import interpolate_audio_features


def _loop_windows(features: torch.Tensor, num_frames: int, context: int, vpf: int) -> torch.Tensor:
    pad = torch.zeros(vpf * context, features.shape[-1], dtype=features.dtype)
    padded = torch.cat([pad, features, pad])
    length = vpf * (2 * context + 1)
    return torch.stack([padded[vpf * i : vpf * i + length] for i in range(num_frames)])


@pytest.mark.parametrize("num_frames,context,vpf", [(12, 2, 2), (1, 2, 2), (5, 1, 3), (7, 0, 2)])
def test_windows_match_loop(num_frames: int, context: int, vpf: int) -> None:
    feats = torch.randn(vpf * num_frames, 6)
    got = audio_windows(feats, num_frames, context, vpf)
    assert got.shape == (num_frames, vpf * (2 * context + 1), 6)
    torch.testing.assert_close(got, _loop_windows(feats, num_frames, context, vpf), rtol=0, atol=0)


def test_windows_batched_and_padding_is_zero() -> None:
    feats = torch.randn(3, 24, 8) + 5.0  # no natural zeros
    got = audio_windows(feats, 12)
    assert got.shape == (3, 12, 10, 8)
    for b in range(3):
        torch.testing.assert_close(got[b], _loop_windows(feats[b], 12, 2, 2), rtol=0, atol=0)
    assert torch.all(got[:, 0, :4] == 0) and torch.all(got[:, -1, -4:] == 0)
    # the centre of window i is frame i's own two vectors
    torch.testing.assert_close(got[:, :, 4:6].reshape(3, 24, 8), feats, rtol=0, atol=0)


def test_windows_reject_wrong_length() -> None:
    with pytest.raises(ValueError, match="expected 2 x 12"):
        audio_windows(torch.randn(23, 4), 12)


def test_interpolation_matches_linear_align_corners_false() -> None:
    hidden = torch.randn(2, 50, 7, dtype=torch.float16)
    out = interpolate_audio_features(hidden, 12)
    assert out.shape == (2, 24, 7) and out.dtype == torch.float16
    ref = F.interpolate(hidden.float().transpose(1, 2), size=24, mode="linear", align_corners=False).transpose(1, 2)
    torch.testing.assert_close(out, ref.half())
    # unbatched; hand-computed align_corners=False sample positions
    h = torch.arange(4.0).unsqueeze(1)  # values 0,1,2,3
    out1 = interpolate_audio_features(h, 4, vectors_per_frame=2)[:, 0]
    src = ((torch.arange(8.0) + 0.5) * 4 / 8 - 0.5).clamp(0, 3)
    torch.testing.assert_close(out1, src)


def test_prepare_audio_windows_shapes() -> None:
    out = prepare_audio_windows(torch.randn(1, 93, 16), 37)
    assert out.shape == (1, 37, 10, 16)
