"""Face tracks for SyncNet as syncnet_python's ``run_pipeline.py`` builds them, then scored per track.

The reference pipeline (also used, with ``min_track=50``, by LatentSync's ``eval_sync_conf.py``):

1. video at 25 fps, faces detected on every frame (S3FD there; the evaluation's one detector here);
2. a shot shorter than ``min_track`` frames is skipped (our clips are one shot each: no scene detection);
3. ``track_shot``: starting from the earliest unused detection, a track takes the next detection whose
   frame is at most ``num_failed_det`` frames after its last one and whose box overlaps the last box by
   IoU > ``iou_threshold``; detections it skips stay for later tracks. A track is kept only with **more
   than** ``min_track`` detections (``len(track) > min_track``); its boxes are linearly interpolated
   between its first and last detection, and it is dropped unless the larger of its mean box width and
   mean box height exceeds ``min_face_size`` pixels;
4. each kept track is cropped (``crop_video``: 13-frame median of box centre and size, ``crop_scale``
   margin, 224² BGR) with the audio of exactly its frames, and scored by ``SyncNetInstance.evaluate``.

A video's scores are the means over its tracks (LatentSync averages a video's tracks the same way); a
video with no kept track has no score and is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evaluation import syncnet


@dataclass(frozen=True)
class Track:
    frames: np.ndarray  # (n,) consecutive frame indices, first to last detection
    boxes: np.ndarray  # (n, 4) x0, y0, x1, y1, interpolated between detections
    num_detections: int


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes (run_pipeline's ``bb_intersection_over_union``)."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def face_tracks(boxes_per_frame: Sequence[Sequence[Sequence[float]]], *, min_track: int = 100,
                num_failed_det: int = 25, min_face_size: float = 100, iou_threshold: float = 0.5) -> list[Track]:
    """Tracks of one shot from per-frame detections (a list of boxes per frame; empty where none)."""
    if len(boxes_per_frame) < min_track:  # run_pipeline: shot length >= min_track
        return []
    remaining = [[np.asarray(b, np.float64) for b in frame] for frame in boxes_per_frame]
    tracks = []
    while True:
        track: list[tuple[int, np.ndarray]] = []
        for i, frame in enumerate(remaining):
            for j, box in enumerate(frame):
                if not track or (i - track[-1][0] <= num_failed_det and box_iou(box, track[-1][1]) > iou_threshold):
                    track.append((i, box))
                    del frame[j]
                    break
        if not track:
            return tracks
        if len(track) <= min_track:
            continue
        det_frames = np.array([f for f, _ in track])
        det_boxes = np.stack([b for _, b in track])
        frames = np.arange(det_frames[0], det_frames[-1] + 1)
        boxes = np.stack([np.interp(frames, det_frames, det_boxes[:, k]) for k in range(4)], axis=1)
        if max((boxes[:, 2] - boxes[:, 0]).mean(), (boxes[:, 3] - boxes[:, 1]).mean()) > min_face_size:
            tracks.append(Track(frames, boxes, len(track)))


@dataclass(frozen=True)
class VideoSync:
    sync_c: float  # LSE-C, mean over tracks
    sync_d: float  # LSE-D, mean over tracks
    av_offset: int  # int(mean offset), as LatentSync
    num_tracks: int
    tracked_frames: int


def score_tracks(model: syncnet.SyncNet, frames: np.ndarray, audio: np.ndarray, tracks: Sequence[Track],
                 crop_scale: float = syncnet.CROP_SCALE) -> VideoSync:
    """Crop every track with its own stretch of audio and average the per-track scores."""
    if not tracks:
        raise ValueError("no face track kept (see the protocol's sync_min_track / sync_min_face_size)")
    scores = []
    for t in tracks:
        crops = syncnet.syncnet_face_crops(frames[t.frames], t.boxes, crop_scale)
        seg = audio[t.frames[0] * syncnet.SAMPLES_PER_FRAME : (t.frames[-1] + 1) * syncnet.SAMPLES_PER_FRAME]
        scores.append(syncnet.sync_scores(model, crops, seg))
    return VideoSync(sync_c=float(np.mean([s.lse_c for s in scores])), sync_d=float(np.mean([s.lse_d for s in scores])),
                     av_offset=int(np.mean([s.offset for s in scores])), num_tracks=len(scores),
                     tracked_frames=int(sum(len(t.frames) for t in tracks)))


def whole_clip_track(boxes: Sequence[np.ndarray | None]) -> tuple[Track, int]:
    """The ``all-clips`` protocol's single track: every frame, missing boxes interpolated (counted)."""
    filled, missing = syncnet.interpolate_missing_boxes(list(boxes))
    return Track(np.arange(len(boxes)), filled, len(boxes) - missing), missing
