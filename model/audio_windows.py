"""Audio feature windowing for the Audio Projection (docs/official-architecture.md §11).

The audio encoder's ``last_hidden_state`` is linearly interpolated to
``vectors_per_frame`` vectors per video frame; frame ``i`` then sees the vectors
of frames ``i-context .. i+context`` (zero vectors beyond both ends).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from perception.audio import interpolate_audio_features


def audio_windows(
    features: torch.Tensor, num_frames: int, context: int = 2, vectors_per_frame: int = 2
) -> torch.Tensor:
    """(vpf*F, D) or (b, vpf*F, D) -> (F, L, D) or (b, F, L, D) with L = vpf*(2*context+1) (10 officially).

    Window ``i`` = rows ``[vpf*i, vpf*i + L)`` of the features zero-padded by ``vpf*context`` rows at both ends.
    """
    if features.ndim not in (2, 3):
        raise ValueError(f"audio features must be (T,D) or (b,T,D), got shape {tuple(features.shape)}")
    expected = vectors_per_frame * num_frames
    if features.shape[-2] != expected:
        raise ValueError(
            f"audio features have {features.shape[-2]} vectors, expected {vectors_per_frame} x {num_frames} frames = "
            f"{expected} (run interpolate_audio_features first)"
        )
    pad = vectors_per_frame * context
    window = vectors_per_frame * (2 * context + 1)
    padded = F.pad(features, (0, 0, pad, pad))  # zero rows before and after along time
    # unfold(time) -> (..., F, D, window); put the window axis before the feature axis.
    return padded.unfold(-2, window, vectors_per_frame).transpose(-1, -2)


def prepare_audio_windows(
    hidden: torch.Tensor, num_frames: int, context: int = 2, vectors_per_frame: int = 2
) -> torch.Tensor:
    """Encoder ``last_hidden_state`` (T, D) / (b, T, D) -> audio windows (…, F, L, D) in one call."""
    features = interpolate_audio_features(hidden, num_frames, vectors_per_frame)
    return audio_windows(features, num_frames, context, vectors_per_frame)
