"""The per-video / per-clip work of preprocessing, Ray-free (pipeline.py wraps these in Ray tasks and actors).

probe_video -> decode_clip -> detect_faces (model) -> audio features (model) -> crop_and_encode -> samples.
Every function is deterministic for a given input and config, which is what makes resumed runs identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from perception import media
from perception.audio import SAMPLE_RATE, rms_db
from preprocessing import clips, shards
from preprocessing.config import PreprocessConfig


@dataclass
class Rejection:
    source: str
    reason: str
    detail: str = ""
    clip: int | None = None

    def as_dict(self) -> dict:
        return {"source": self.source, "clip": self.clip, "reason": self.reason, "detail": self.detail}


@dataclass
class VideoPlan:
    source: str
    video_id: str
    fps: float  # output fps
    duration_s: float
    width: int
    height: int
    source_fps: float
    has_audio: bool
    spans: list[clips.ClipSpan] = field(default_factory=list)
    content_sha256: str = ""  # of the input file (duplicates under other names are kept once)


def probe_video(source: str, cfg: PreprocessConfig) -> tuple[VideoPlan | Rejection, np.ndarray | None]:
    """Probe the container, load 16 kHz mono audio, cut the clip spans. Bad inputs -> a Rejection."""
    try:
        info = media.probe(source)
    except media.MediaError as exc:
        if "no video stream" in str(exc):
            reason = "no_video_stream"
        else:  # a container we recognise but cannot open is damaged; anything else is not a video at all
            reason = "corrupt" if looks_like_media(source) else "not_a_video"
        return Rejection(source, reason, str(exc)), None
    except Exception as exc:  # a damaged container can break the demuxer in unplanned ways
        reason = "corrupt" if looks_like_media(source) else "not_a_video"
        return Rejection(source, reason, f"{source}: cannot probe ({type(exc).__name__}: {exc})"), None
    audio = None
    if info.has_audio:
        try:
            # Sample 0 is shown with the first video frame (stream start times and edit lists honoured).
            audio = media.read_audio(source, sample_rate=SAMPLE_RATE, start_s=info.start_s)
        except media.MediaError as exc:
            if cfg.require_audio:
                return Rejection(source, "unreadable_audio", str(exc)), None
    if audio is None and cfg.require_audio:
        return Rejection(source, "no_audio", f"{source}: no audio stream and preprocess.require_audio=true"), None
    num_frames = int(math.floor(info.duration_s * cfg.fps + 1e-6))
    spans = clips.cut_clips(num_frames, cfg.fps, cfg.clip_seconds, cfg.min_clip_seconds)
    plan = VideoPlan(source, shards.video_id_for(source), cfg.fps, info.duration_s, info.width, info.height,
                     info.fps, audio is not None, spans)
    if not spans:
        return Rejection(source, "too_short", f"{info.duration_s:.2f} s < min_clip_seconds={cfg.min_clip_seconds}"), None
    return plan, audio


_MAGIC = (b"\x1aE\xdf\xa3", b"RIFF", b"FLV", b"\x00\x00\x01\xba", b"OggS", b"\x30\x26\xb2\x75")
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")


def looks_like_media(path: str) -> bool:
    """Container magic bytes (mp4/mov boxes, Matroska/WebM, AVI, FLV, MPEG-PS, Ogg, ASF, MPEG-TS)."""
    try:
        with open(path, "rb") as f:
            head = f.read(200)
    except OSError:
        return False
    return head[4:8] in _MP4_BOXES or head.startswith(_MAGIC) or (len(head) > 188 and head[0] == head[188] == 0x47)


def decode_clip(source: str, start_s: float, num_frames: int, fps: float) -> np.ndarray:
    """Frames ``start_s + i / fps`` (i < num_frames), upright RGB uint8, with :func:`media.read_frames` (seeks to
    the keyframe before ``start_s``). A truncated file returns fewer frames, a span after the video none."""
    return media.read_frames(source, fps=fps, start_s=start_s, num_frames=num_frames)


def detection_scale(height: int, width: int, max_side: int) -> float:
    """Downscale factor for detection (YuNet cost grows with pixels; faces in talking heads are large)."""
    return min(1.0, max_side / max(height, width)) if max_side > 0 else 1.0


def detect_faces(backend: Any, frames: np.ndarray, max_side: int) -> list[np.ndarray]:
    """Per frame an array ``(k, 19)``: box xyxy, score, 5 kps (x, y), lip box xyxy (NaN when the backend has no
    lip landmarks), in source pixels."""
    if len(frames) == 0:  # a span past the end of the video: crop_and_encode rejects it as truncated
        return []
    scale = detection_scale(frames.shape[1], frames.shape[2], max_side)
    if scale < 1.0:
        size = (max(1, round(frames.shape[2] * scale)), max(1, round(frames.shape[1] * scale)))
        small = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    else:
        small = list(frames)
    out = []
    for faces in backend.detect_batch(small):
        rows = [np.concatenate([np.asarray(f.box, np.float32) / scale, [f.score],
                                np.asarray(f.kps, np.float32).reshape(-1) / scale, _lip_box_row(f) / scale])
                for f in faces]
        out.append(np.asarray(rows, np.float32).reshape(-1, 19))
    return out


def _lip_box_row(face: Any) -> np.ndarray:
    box = getattr(face, "lip_box", None)
    return np.full(4, np.nan, np.float32) if box is None else np.asarray(box, np.float32)


@dataclass(frozen=True)
class DetectedFace:
    box: np.ndarray
    score: float
    kps: np.ndarray
    lip_box: np.ndarray | None = None


def faces_from_array(rows: np.ndarray) -> list[DetectedFace]:
    """Rows of :func:`detect_faces` (15-column rows without lip boxes are accepted too)."""
    return [DetectedFace(r[:4], float(r[4]), r[5:15].reshape(5, 2),
                         r[15:19] if len(r) >= 19 and np.isfinite(r[15:19]).all() else None) for r in rows]


def clip_audio(audio: np.ndarray, start_s: float, num_frames: int, fps: float) -> np.ndarray:
    """The clip's audio samples, zero-padded when the audio track ends early."""
    start = int(round(start_s * SAMPLE_RATE))
    n = int(round(num_frames / fps * SAMPLE_RATE))
    seg = audio[start:start + n]
    return np.pad(seg, (0, n - len(seg))) if len(seg) < n else seg


def crop_and_encode(
    plan: VideoPlan,
    span: clips.ClipSpan,
    frames: np.ndarray,
    detections: list[np.ndarray],
    audio_segment: np.ndarray | None,
    audio_features: np.ndarray | None,
    cfg: PreprocessConfig,
    backend_name: str,
    audio_encoder_name: str,
) -> tuple[dict | None, Rejection | None, np.ndarray | None]:
    """Validate the face track, crop, map keypoints, encode members. -> (sample, None, crops) or (None, rejection, None)."""
    reject = lambda reason, detail: (None, Rejection(plan.source, reason, detail, span.index), None)  # noqa: E731
    if len(frames) < span.num_frames:
        return reject("truncated", f"decoded {len(frames)}/{span.num_frames} frames at {span.start_s(plan.fps):.2f}s")
    if audio_segment is not None and cfg.reject_silence and rms_db(audio_segment) < cfg.silence_db:
        return reject("silent_audio", f"audio level {rms_db(audio_segment):.1f} dBFS < {cfg.silence_db} dBFS")
    track = clips.validate_track([faces_from_array(d) for d in detections], cfg.min_face_size,
                                 cfg.min_face_score, cfg.min_valid_fraction)
    if not track.ok:
        return reject(track.reason, track.detail)
    box = clips.stable_crop_box(track.boxes, cfg.crop_margin, cfg.smooth_window)
    crops = clips.crop_resize(frames, box, cfg.crop_size)
    kps = clips.to_crop_coords(clips.smooth(track.kps, cfg.kps_smooth_window), box, cfg.crop_size)
    kps = np.clip(kps, 0, cfg.crop_size)  # a landmark just outside the crop border sits on it
    mouth = clips.mouth_boxes(kps, cfg.crop_size)
    lips_source, lip_boxes = crop_lip_boxes(track, box, crops, kps, cfg.crop_size)
    meta = {
        "source": plan.source, "video_id": plan.video_id, "clip_index": span.index,
        "start_s": round(span.start_s(plan.fps), 6), "end_s": round(span.end_s(plan.fps), 6), "fps": plan.fps,
        "num_frames": span.num_frames, "crop_box": [round(float(v), 3) for v in box], "crop_size": cfg.crop_size,
        "source_size": [plan.width, plan.height], "has_audio": audio_segment is not None,
        "face_backend": backend_name, "face_valid_fraction": round(track.valid_fraction, 4),
        "audio_encoder": audio_encoder_name if audio_segment is not None else "",
        "audio_dim": int(audio_features.shape[1]) if audio_features is not None else 0,
        "has_latents": False, "versions": shards.package_versions(), "lips": lips_source,
    }
    sample = shards.encode_sample(
        shards.sample_key(plan.video_id, span.index), meta,
        mp4=media.encode_mp4_bytes(crops, plan.fps, crf=cfg.crf, preset=cfg.encode_preset),
        kps=kps, mouth=mouth,
        wav=media.wav_bytes(audio_segment, SAMPLE_RATE) if audio_segment is not None else None,
        audio_features=audio_features, lips=lip_boxes,
    )
    return sample, None, crops


def crop_lip_boxes(track: clips.TrackResult, box: np.ndarray, crops: np.ndarray, kps: np.ndarray,
                   size: int) -> tuple[str, np.ndarray]:
    """The clip's lip boxes in crop pixels and their source (``perception.lips``): the 106-point landmarks'
    boxes when the backend gave them, else the 5-point approximation with the mouth cavity measured on the crops."""
    from perception import lips

    if track.lip_boxes is not None:
        corners = clips.to_crop_coords(track.lip_boxes.reshape(-1, 2, 2), box, size).reshape(-1, 4)
        return "landmark_2d_106", np.clip(corners, 0, size)
    approx = lips.lip_boxes_from_corners(kps, lips.mouth_cavities(crops, kps))
    return "kps5", np.clip(approx, 0, size)
