"""Evaluation fixtures built from the embedded sample data (tests/conftest.py::sample_data_dir)."""

from __future__ import annotations

import numpy as np
import pytest

SHARD_VIDEO = "good_carphone_a0009.mp4"  # 80 frames, 512², real speech
FOLDER_VIDEO = "good_astronaut_espeak2.mp4"  # 125 frames, 512², espeak speech


@pytest.fixture(scope="session")
def yunet():
    from perception.faces import make_face_backend

    return make_face_backend("yunet")


@pytest.fixture(scope="session")
def talking_clip(sample_data_dir):
    """Frames (F, 512, 512, 3) and 16 kHz audio of one real talking-face sample video."""
    from perception import media

    path = sample_data_dir / SHARD_VIDEO
    return media.read_frames(path, fps=25), media.read_audio(path, 16000)


@pytest.fixture(scope="session")
def eval_test_sets(tmp_path_factory, sample_data_dir, talking_clip, yunet):
    """Two tiny test sets: ``shards`` (one clip written with preprocessing.shards, keypoints from YuNet)
    and ``folder`` (one raw video)."""
    root = tmp_path_factory.mktemp("eval_sets")
    folder = root / "folder"
    folder.mkdir()
    (folder / FOLDER_VIDEO).symlink_to(sample_data_dir / FOLDER_VIDEO)

    frames, audio = talking_clip
    write_shard_set(root / "shards", [("carphone", SHARD_VIDEO, frames, audio)], yunet)
    return {"shards": root / "shards", "folder": folder}


def write_shard_set(out, clips, backend, n: int = 24):
    """A shard test set of ``(video_id, source name, frames, audio)`` clips (first ``n`` frames each), keypoints
    from ``backend``, written with preprocessing.shards exactly as the pipeline lays it out."""
    from perception import media
    from perception.faces import detect_per_frame
    from preprocessing import shards
    from preprocessing.clips import mouth_boxes

    samples, rows = [], []
    for video_id, source, frames, audio in clips:
        frames, audio = frames[:n], audio[: n * 640]
        faces = detect_per_frame(backend, frames)
        assert all(f is not None for f in faces)
        kps = np.stack([f.kps for f in faces]).astype(np.float32)
        meta = {"source": source, "video_id": video_id, "clip_index": 0, "start_s": 0.0, "end_s": n / 25,
                "fps": 25.0, "num_frames": n, "crop_box": [0, 0, 512, 512], "crop_size": 512, "has_audio": True,
                "face_backend": backend.name, "audio_encoder": "none", "audio_dim": 8, "has_latents": False}
        key = f"{video_id}_c0000"
        samples.append(shards.encode_sample(
            key, meta, media.encode_mp4_bytes(frames, 25.0), kps, mouth_boxes(kps, 512),
            wav=media.wav_bytes(audio, 16000), audio_features=np.zeros((2 * n, 8), np.float16)))
        rows.append({"key": key, "shard": "shard-000000.tar"})
    shards.write_tar(out / "shards" / "shard-000000.tar", samples)
    index = shards.build_index({}, [{"name": "shard-000000.tar", "num_samples": len(samples)}], rows, {})
    shards.write_json_atomic(out / "index.json", index)
    return out


@pytest.fixture(scope="session")
def two_source_shards(tmp_path_factory, sample_data_dir, talking_clip, yunet):
    """A shard test set with clips of two source videos (so the real-vs-real floor has two halves)."""
    from perception import media

    other = sample_data_dir / FOLDER_VIDEO
    clips = [("carphone", SHARD_VIDEO, *talking_clip),
             ("astronaut", FOLDER_VIDEO, media.read_frames(other, fps=25, max_frames=24),
              media.read_audio(other, 16000))]
    return write_shard_set(tmp_path_factory.mktemp("two_sources"), clips, yunet)
