"""Sync-C / Sync-D (LSE-C / LSE-D, ``evaluation/syncnet.py``) on the protocol's face tracks
(``evaluation/sync_tracks.py``), for the generated videos and, for the Ground-Truth row, the real ones."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from evaluation.metrics.base import Column, Metric, Network, count_nan, failed, keyed_cell, nanmean

FPS_TOLERANCE = 1e-3


class SyncNetMetric(Metric):
    name = "syncnet"
    needs_faces = True
    columns = (Column("Sync-C", 8, keyed_cell({"ground_truth": "sync_c_gt", "method": "sync_c"}, 3)),
               Column("Sync-D", 8, keyed_cell({"ground_truth": "sync_d_gt", "method": "sync_d"}, 3)))
    plot_keys = ("sync_c", "sync_d", "av_offset")

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        from evaluation.syncnet import SyncNet

        self.net = SyncNet(self.cfg.syncnet_path or None).to(self.cfg.device)
        self.rows: dict[str, list[dict]] = defaultdict(list)

    def networks(self) -> list[Network]:
        return [Network("SyncNet", "syncnet_v2.model", self.net.random_weights)]

    def score_video(self, v) -> dict:
        row = {**self._score(v, v.generated, v.generated_faces, "", v.ground_truth_faces),
               **self._score(v, v.video.frames, v.ground_truth_faces, "_gt", None)}
        self.rows[v.dataset].append(row)
        return row

    def _tracks(self, frames, faces, fallback_faces, video) -> tuple[list, dict]:
        from evaluation import sync_tracks

        p = self.protocol
        if p.sync_tracking == "whole_clip":
            boxes = [f.box if f is not None else None for f in faces]
            if all(b is None for b in boxes) and fallback_faces is not None and p.sync_gt_box_fallback:
                scale = frames.shape[1] / video.frames.shape[1]
                boxes = [f.box * scale if f is not None else None for f in fallback_faces]
                track, missing = sync_tracks.whole_clip_track(boxes)
                return [track], {"syncnet_gt_box_fallback": 1, "syncnet_missing_boxes": missing}
            track, missing = sync_tracks.whole_clip_track(boxes)
            return [track], {"syncnet_missing_boxes": missing}
        per_frame = [[f.box] if f is not None else [] for f in faces]
        return sync_tracks.face_tracks(per_frame, min_track=p.sync_min_track, num_failed_det=p.sync_num_failed_det,
                                       min_face_size=p.sync_min_face_size, iou_threshold=p.sync_iou_threshold), {}

    def _score(self, v, frames, faces, key: str, fallback_faces) -> dict:
        from evaluation import sync_tracks

        video = v.video
        nan = {f"sync_c{key}": np.nan, f"sync_d{key}": np.nan, f"av_offset{key}": np.nan, f"sync_tracks{key}": 0}
        try:
            if video.audio is None:
                raise ValueError("video has no audio")
            if abs(video.fps - 25.0) > FPS_TOLERANCE:
                raise ValueError(f"SyncNet needs 25 fps video (syncnet_python resamples to 25), got {video.fps:g}; "
                                 "preprocess the test set with preprocess.fps=25")
            tracks, extra = self._tracks(frames, faces, fallback_faces, video)
            s = sync_tracks.score_tracks(self.net, frames, video.audio, tracks, self.protocol.sync_crop_scale)
        except ValueError as exc:
            return {**nan, **failed(f"syncnet{key}", exc, video)}
        return {f"sync_c{key}": s.sync_c, f"sync_d{key}": s.sync_d, f"av_offset{key}": s.av_offset,
                f"sync_tracks{key}": s.num_tracks, f"sync_tracked_frames{key}": s.tracked_frames, **extra}

    def dataset_metrics(self, dataset: str) -> dict:
        rows, p = self.rows[dataset], self.protocol
        out = {k: nanmean(rows, k) for k in ("sync_c", "sync_d", "av_offset", "sync_c_gt", "sync_d_gt", "av_offset_gt")}
        out.update(syncnet_failed_videos=count_nan(rows, "sync_c"),
                   syncnet_gt_failed_videos=count_nan(rows, "sync_c_gt"),
                   syncnet_gt_box_fallback=sum(r.get("syncnet_gt_box_fallback", 0) for r in rows),
                   sync_min_track=p.sync_min_track, sync_min_face_size=p.sync_min_face_size,
                   sync_tracking=p.sync_tracking)
        return out

    @classmethod
    def notes(cls, r: dict) -> list[str]:
        notes = []
        for key, what in (("syncnet_failed_videos", "generated"), ("syncnet_gt_failed_videos", "ground-truth")):
            if r.get(key):
                rule = ""
                if r.get("sync_tracking") == "syncnet_python":
                    rule = (f"; a track needs more than {int(r.get('sync_min_track', 0))} detected frames and a mean "
                            f"face size above {int(r.get('sync_min_face_size', 0))} px")
                error = "syncnet_gt_error" if "gt" in key else "syncnet_error"
                notes.append(f"Sync-C/D: {int(r[key])} {what} videos not scored (see {error}{rule})")
        if r.get("syncnet_gt_box_fallback"):
            notes.append(f"Sync-C/D: {int(r['syncnet_gt_box_fallback'])} videos cropped with the ground-truth face "
                         "boxes (no face detected in the generated frames)")
        return notes
