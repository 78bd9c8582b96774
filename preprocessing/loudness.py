"""Speech loudness per video frame, and the mouth opening the sample data derives from it.

The sample videos open the mouth by :func:`mouth_opening` of their own audio, and the demo summary correlates
the mouth opening it measures in generated frames with the same envelope, so both use this one definition.

Frame ``i`` of a ``fps`` video covers the audio ``[i / fps, (i + 1) / fps)``. Its loudness is the RMS level of
those samples in dBFS. The opening maps the top ``range_db`` decibels below the clip's 95th-percentile level
linearly onto [0, 1] (quieter frames are closed) and smooths over three frames, so it follows syllables rather
than single samples and does not depend on the recording's overall gain.
"""

from __future__ import annotations

import numpy as np

SILENCE_DB = -120.0


def frame_loudness_db(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """RMS level (dBFS) of the audio under each of ``num_frames`` video frames; silence past the end."""
    audio = np.asarray(audio, np.float64).reshape(-1)
    out = np.full(num_frames, SILENCE_DB)
    for i in range(num_frames):
        a, b = int(round(i * sample_rate / fps)), int(round((i + 1) * sample_rate / fps))
        window = audio[a:b]
        if window.size:
            rms = np.sqrt(np.mean(np.square(window)))
            out[i] = max(20.0 * np.log10(rms), SILENCE_DB) if rms > 0 else SILENCE_DB
    return out


def mouth_opening(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int,
                  range_db: float = 24.0) -> np.ndarray:
    """Mouth opening in [0, 1] per video frame from the loudness envelope (see the module docstring)."""
    db = frame_loudness_db(audio, sample_rate, fps, num_frames)
    voiced = db[db > SILENCE_DB]
    if voiced.size == 0:
        return np.zeros(num_frames)
    top = float(np.percentile(voiced, 95))
    opening = np.clip((db - (top - range_db)) / range_db, 0.0, 1.0)
    padded = np.pad(opening, 1, mode="edge")
    return 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
