"""The sample data's audio -> mouth relation: loudness envelope, the mouth warp, and the measure that reads it."""

import numpy as np
import pytest

from evaluation.summary import mouth_opening_measure, pearson
from preprocessing.loudness import frame_loudness_db, mouth_opening
from preprocessing.mouth_warp import open_mouth

SR, FPS = 16000, 25.0


def test_loudness_is_per_video_frame_and_silence_is_closed():
    t = np.arange(SR * 2) / SR
    audio = np.where(t < 1.0, 0.5 * np.sin(2 * np.pi * 220 * t), 0.0).astype(np.float32)
    db = frame_loudness_db(audio, SR, FPS, 50)
    assert db.shape == (50,)
    assert np.allclose(db[2:23], 20 * np.log10(0.5 / np.sqrt(2)), atol=0.1)  # RMS of a 0.5 sine
    opening = mouth_opening(audio, SR, FPS, 50)
    assert np.all(opening[2:23] > 0.99) and np.all(opening[27:] == 0.0)
    assert np.all(mouth_opening(np.zeros(SR), SR, FPS, 25) == 0.0)


def test_opening_ignores_the_recording_gain():
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(SR * 2) * np.repeat(rng.uniform(0.01, 1, 20), SR // 10)).astype(np.float32)
    assert np.allclose(mouth_opening(audio, SR, FPS, 50), mouth_opening(0.05 * audio, SR, FPS, 50), atol=1e-6)


@pytest.fixture(scope="module")
def face():
    from skimage import data

    from perception.faces import make_face_backend

    image = np.ascontiguousarray(data.astronaut()[40:296, 96:352])
    return image, make_face_backend("yunet").detect(image)[0].kps


def test_closed_mouth_is_unchanged_and_the_measure_grows_with_the_opening(face):
    image, kps = face
    assert np.array_equal(open_mouth(image, kps[3], kps[4], 0.0), image)
    amounts = [0.0, 0.25, 0.5, 0.75, 1.0]
    measured = [mouth_opening_measure(open_mouth(image, kps[3], kps[4], a), kps) for a in amounts]
    assert all(b > a for a, b in zip(measured, measured[1:])), measured
    assert pearson(np.array(amounts), np.array(measured)) > 0.95
    # The warp is local: the eyes do not move.
    opened = open_mouth(image, kps[3], kps[4], 1.0)
    eye_rows = slice(int(kps[0, 1]) - 8, int(kps[0, 1]) + 8)
    assert np.array_equal(opened[eye_rows], image[eye_rows])
