"""Test videos for ``evaluation.run``: WebDataset shards (docs/shard-format.md) or a folder of videos.

Each :class:`TestVideo` is what one generation needs and what it is scored against: the ground-truth
frames, the video's own 16 kHz audio (and the shard's precomputed audio features when present) and its own
keypoint sequence in pixels of a ``kps_size``² frame (the shards' 512² crop; for a raw folder the keypoints
are detected per frame and rescaled to that square).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm"}


@dataclass
class TestVideo:
    name: str
    dataset: str
    frames: np.ndarray  # (F, H, W, 3) uint8 RGB ground truth
    audio: np.ndarray | None  # (N,) float32 16 kHz mono
    kps: np.ndarray  # (F, 5, 2) in pixels of a kps_size² frame
    kps_size: int
    fps: float
    audio_features: np.ndarray | None = None  # (2F, D) from the shard, if any
    mouth: np.ndarray | None = None  # (F, 4) mouth boxes in kps_size pixels, if known
    face_backend: str | None = None  # the detector the keypoints came from ("yunet" | "insightface:<pack>")
    source_id: str | None = None  # the source video the clip was cut from (clips of one source share it)


def parse_test_sets(spec: str | list[str]) -> list[tuple[str, str]]:
    """``"a=/x,/y"`` -> ``[("a", "/x"), ("y", "/y")]``."""
    items = spec if isinstance(spec, list) else [s for s in str(spec).split(",") if s.strip()]
    out = []
    for item in items:
        name, sep, path = item.strip().partition("=")
        if not sep:
            name, path = Path(item.strip().rstrip("/")).name, item.strip()
        out.append((name, path))
    if not out:
        raise ValueError("eval.test_set: no test set given (a shard folder or a folder of videos)")
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"eval.test_set: dataset names must be unique, got {names}")
    return out


def _truncate(video: TestVideo, max_frames: int) -> TestVideo:
    if not max_frames or len(video.frames) <= max_frames:
        return video
    n = max_frames
    video.frames, video.kps = video.frames[:n], video.kps[:n]
    if video.audio is not None:
        video.audio = video.audio[: int(round(n / video.fps * 16000))]
    if video.audio_features is not None:
        video.audio_features = video.audio_features[: 2 * n]
    if video.mouth is not None:
        video.mouth = video.mouth[:n]
    return video


def iter_shard_videos(folder: Path, dataset: str) -> Iterator[TestVideo]:
    from preprocessing import shards

    for tar in shards.shard_paths(folder):
        for raw in shards.iter_tar_samples(tar):
            s = shards.decode_sample(raw)
            meta = s["meta"]
            if len(s["frames"]) != len(s["kps"]):
                raise ValueError(f"{tar}:{s['key']}: {len(s['frames'])} frames but {len(s['kps'])} kps rows")
            yield TestVideo(
                name=s["key"], dataset=dataset, frames=s["frames"], audio=s.get("audio"), kps=s["kps"],
                kps_size=int(meta.get("crop_size", s["frames"].shape[1])), fps=float(meta.get("fps", 25.0)),
                audio_features=s.get("audio_features"), mouth=s.get("mouth"),
                face_backend=meta.get("face_backend"), source_id=meta.get("video_id"),
            )


def recorded_face_backend(path: str | Path) -> tuple[str | None, str | None]:
    """The face backend a shard test set was preprocessed with (``"yunet"`` | ``"insightface:<pack>"``) and
    the insightface root it used, from ``index.json`` (else the first sample's metadata); ``(None, None)``
    for a folder of raw videos."""
    from preprocessing import shards

    folder = Path(path)
    if not (folder / "index.json").is_file():
        return None, None
    config = shards.read_index(folder).get("config") or {}
    name = config.get("face_backend")
    if name:
        pack = config.get("insightface_pack") or "buffalo_l"
        return (name if name == "yunet" else f"insightface:{pack}"), (config.get("insightface_root") or None)
    for tar in shards.shard_paths(folder):
        for raw in shards.iter_tar_samples(tar):
            return shards.sample_meta(raw).get("face_backend"), None
    return None, None


def video_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no videos ({sorted(VIDEO_SUFFIXES)}) and no index.json")
    return files


def iter_folder_videos(folder: Path, dataset: str, backend: Any, kps_size: int = 512, fps: float = 25.0):
    from perception import media
    from perception.faces import detect_per_frame

    for path in video_files(folder):
        frames = media.read_frames(path, fps=fps)
        try:
            audio = media.read_audio(path, 16000)
        except media.MediaError:
            audio = None
        faces = detect_per_frame(backend, frames)
        if all(f is None for f in faces):
            log.warning("%s: no face in any frame; skipped", path)
            continue
        kps = _interpolated_kps(faces)
        h, w = frames.shape[1:3]
        yield TestVideo(name=path.stem, dataset=dataset, frames=frames, audio=audio,
                        kps=kps * np.array([kps_size / w, kps_size / h]), kps_size=kps_size, fps=fps,
                        face_backend=getattr(backend, "name", None), source_id=path.stem)


def _interpolated_kps(faces: list) -> np.ndarray:
    """Keypoints of every frame; frames without a face take the linear interpolation of their neighbours."""
    from perception.faces import interpolate_missing

    kps = np.stack([np.asarray(f.kps, np.float64) if f is not None else np.full((5, 2), np.nan) for f in faces])
    return interpolate_missing(kps, [f is not None for f in faces])


def iter_test_videos(path: str, dataset: str, backend_factory=None, max_videos: int = 0,
                     max_frames: int = 0) -> Iterator[TestVideo]:
    """Videos of one test set (shards when ``path/index.json`` exists, else a folder of videos)."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: test set folder not found")
    if (folder / "index.json").is_file():
        source = iter_shard_videos(folder, dataset)
    else:
        video_files(folder)  # fail early on an empty folder
        if backend_factory is None:
            raise ValueError(f"{folder}: a folder of videos needs a face backend for its keypoints")
        source = iter_folder_videos(folder, dataset, backend_factory())
    for i, video in enumerate(source):
        if max_videos and i >= max_videos:
            break
        yield _truncate(video, max_frames)
