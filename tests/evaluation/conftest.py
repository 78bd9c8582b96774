"""Evaluation fixtures built from the embedded sample data (tests/conftest.py::sample_data_dir)."""

from __future__ import annotations

import numpy as np
import pytest

SHARD_VIDEO = "good_carphone_a0009.mp4"  # 80 frames, 512², real speech
FOLDER_VIDEO = "good_astronaut_espeak2.mp4"  # 125 frames, 512², espeak speech


@pytest.fixture(scope="session")
def yunet():
    from preprocessing.faces import make_face_backend

    return make_face_backend("yunet")


@pytest.fixture(scope="session")
def talking_clip(sample_data_dir):
    """Frames (F, 512, 512, 3) and 16 kHz audio of one real talking-face sample video."""
    from preprocessing import media

    path = sample_data_dir / SHARD_VIDEO
    return media.read_frames(path, fps=25), media.read_audio(path, 16000)


@pytest.fixture(scope="session")
def eval_test_sets(tmp_path_factory, sample_data_dir, talking_clip, yunet):
    """Two tiny test sets: ``shards`` (one clip written with preprocessing.shards, keypoints from YuNet)
    and ``folder`` (one raw video)."""
    from evaluation.faces import detect_per_frame
    from preprocessing import media, shards
    from preprocessing.clips import mouth_boxes

    root = tmp_path_factory.mktemp("eval_sets")
    folder = root / "folder"
    folder.mkdir()
    (folder / FOLDER_VIDEO).symlink_to(sample_data_dir / FOLDER_VIDEO)

    frames, audio = talking_clip
    n = 24
    frames, audio = frames[:n], audio[: n * 640]
    faces = detect_per_frame(yunet, frames)
    assert all(f is not None for f in faces)
    kps = np.stack([f.kps for f in faces]).astype(np.float32)
    meta = {"source": SHARD_VIDEO, "video_id": "carphone", "clip_index": 0, "start_s": 0.0, "end_s": n / 25,
            "fps": 25.0, "num_frames": n, "crop_box": [0, 0, 512, 512], "crop_size": 512, "has_audio": True,
            "face_backend": "yunet", "audio_encoder": "none", "audio_dim": 8, "has_latents": False}
    sample = shards.encode_sample(
        "carphone_c0000", meta, media.encode_mp4_bytes(frames, 25.0), kps, mouth_boxes(kps, 512),
        wav=media.wav_bytes(audio, 16000), audio_features=np.zeros((2 * n, 8), np.float16))
    shard_dir = root / "shards"
    shards.write_tar(shard_dir / "shards" / "shard-000000.tar", [sample])
    index = shards.build_index({}, [{"name": "shard-000000.tar", "num_samples": 1}],
                               [{"key": "carphone_c0000", "shard": "shard-000000.tar"}], {})
    shards.write_json_atomic(shard_dir / "index.json", index)
    return {"shards": shard_dir, "folder": folder}
