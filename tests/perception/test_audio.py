"""Audio encoders load from local folders (tiny random weights) and align to 2 vectors per video frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perception import audio


@pytest.fixture(scope="module")
def tiny_w2v(tmp_path_factory):
    return audio.save_tiny_wav2vec2(tmp_path_factory.mktemp("w2v") / "tiny", hidden_size=32)


def test_tiny_wav2vec2_folder_loads_through_from_pretrained(tiny_w2v):
    assert (tiny_w2v / "config.json").is_file() and (tiny_w2v / "preprocessor_config.json").is_file()
    enc = audio.AudioEncoder(tiny_w2v)
    assert enc.dim == 32
    feats = enc.encode(np.random.default_rng(0).standard_normal(64000).astype(np.float32) * 0.1)
    assert feats.shape == (199, 32)  # 4 s -> ~50 Hz (320-sample hop)


def test_features_are_scale_invariant_like_the_processor(tiny_w2v):
    enc = audio.AudioEncoder(tiny_w2v)
    x = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    np.testing.assert_allclose(enc.encode(x), enc.encode(x * 5 + 0.01), atol=1e-3)


def test_features_for_clip_two_vectors_per_frame_fp16(tiny_w2v):
    enc = audio.AudioEncoder(tiny_w2v)
    feats = enc.features_for_clip(np.zeros(16000 * 3, np.float32) + 0.01, num_frames=75)
    assert feats.shape == (150, 32) and feats.dtype == np.float16


def test_interpolation_matches_linear_resampling():
    x = np.arange(4, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    y = audio.interpolate_audio_features(torch.from_numpy(x), num_frames=4, vectors_per_frame=2).numpy()
    assert y.shape == (8, 3)
    np.testing.assert_allclose(y[:, 0], [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3], atol=1e-6)


def test_whisper_encoder_option(tmp_path):
    enc = audio.AudioEncoder(audio.save_tiny_whisper(tmp_path / "whisper"), kind="whisper")
    feats = enc.features_for_clip(np.random.default_rng(0).standard_normal(32000).astype(np.float32), 50)
    assert feats.shape == (100, 32)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        audio.AudioEncoder(tmp_path / "nope")


def test_rms_db():
    assert audio.rms_db(np.zeros(100, np.float32)) == float("-inf")
    assert abs(audio.rms_db(np.ones(100, np.float32) * 0.1) + 20) < 1e-6


def _speech_like(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    voiced = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    fricative = 0.2 * np.sin(2 * np.pi * 700 * t + 3 * np.sin(2 * np.pi * 0.7 * t)) * (np.sin(2 * np.pi * 1.3 * t) > 0)
    return (voiced + fricative + 0.02 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)


def _forward_lengths(encoder) -> list[int]:
    lengths: list[int] = []
    encoder.model.register_forward_pre_hook(lambda _m, args: lengths.append(int(args[0].shape[-1])))
    return lengths


def test_long_audio_is_encoded_in_bounded_chunks_that_match_the_whole_track(tiny_w2v):
    x = _speech_like(16.0)
    chunked = audio.AudioEncoder(tiny_w2v, chunk_seconds=4.0, context_seconds=2.0)
    lengths = _forward_lengths(chunked)
    feats = chunked.encode(x)
    assert max(lengths) <= (4.0 + 2 * 2.0) * 16000 and len(lengths) == 4  # memory of one 8 s window, not 16 s
    whole = audio.AudioEncoder(tiny_w2v, chunk_seconds=1000.0).encode(x)
    assert feats.shape == whole.shape == (799, 32)
    # Tolerance (docs/preprocessing.md): relative L2 error per vector. The random encoder attends almost uniformly
    # over its whole input, the worst case for chunking; the convolutions are covered by the context exactly.
    err = np.linalg.norm(feats - whole, axis=1) / np.linalg.norm(whole, axis=1)
    assert err.max() < 0.05 and err.mean() < 0.01, (err.max(), err.mean())
    short = _speech_like(6.0)  # one window: exactly the single forward
    np.testing.assert_array_equal(chunked.encode(short), whole_encoder_features(tiny_w2v, short))


def whole_encoder_features(folder, x: np.ndarray) -> np.ndarray:
    """The processor + model call of a single forward, as before chunking existed."""
    import torch

    enc = audio.AudioEncoder(folder)
    with torch.inference_mode():
        inputs = enc.extractor(x, sampling_rate=16000, return_tensors="pt")
        return enc.model(inputs.input_values).last_hidden_state[0].numpy()
