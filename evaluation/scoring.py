"""Score generated videos against their ground truth, per video and per dataset.

:class:`Evaluator` owns the feature networks and the per-dataset accumulators. ``score_video`` returns one
row of the per-video table; ``dataset_metrics`` the dataset-level numbers (FID and FVD exist only at that
level). Every metric that cannot be computed for a video is NaN in its row with the reason in
``<metric>_error``, and counted at the dataset level (``<metric>_failed_videos``); nothing is averaged over
silently.

Resolutions: FID and FVD compare the generated frames with the ground truth resized (area) to the generated
resolution; KpsDis is in pixels of ``eval.kps_target_size``²; ΔFaceSim and SyncNet use each video as it is.
SyncNet face boxes come from the generated frames (gaps interpolated); when no generated frame has a
detectable face, the ground-truth boxes (the target pose the generator was told to follow) are used and the
video is counted in ``syncnet_gt_box_fallback``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from evaluation import fid, fvd, syncnet
from evaluation.config import EvalConfig
from evaluation.faces import detect_per_frame
from evaluation.facesim import face_similarity
from evaluation.frechet import RankDeficientError, RunningMoments, frechet_distance
from evaluation.kpsdis import kps_distance
from evaluation.testset import TestVideo

log = logging.getLogger(__name__)


def make_embedder(cfg: EvalConfig):
    from preprocessing import face_id

    if cfg.face_id_backend == "arcface":
        return face_id.ArcFaceEmbedder(cfg.arcface_path)
    return face_id.SFaceEmbedder()


@dataclass
class _DatasetState:
    fid_gen: RunningMoments = field(default_factory=lambda: RunningMoments("FID generated frames"))
    fid_gt: RunningMoments = field(default_factory=lambda: RunningMoments("FID ground-truth frames"))
    fvd_gen: RunningMoments = field(default_factory=lambda: RunningMoments("FVD generated clips"))
    fvd_gt: RunningMoments = field(default_factory=lambda: RunningMoments("FVD ground-truth clips"))
    fvd_short_videos: int = 0
    rows: list[dict] = field(default_factory=list)


def resize_frames(frames: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if frames.shape[1:3] == tuple(hw):
        return frames
    return np.stack([cv2.resize(f, (hw[1], hw[0]), interpolation=cv2.INTER_AREA) for f in frames])


class Evaluator:
    def __init__(self, cfg: EvalConfig, face_backend: Any = None, embedder: Any = None,
                 i3d_random_width: float = 1.0):
        self.cfg = cfg
        m = set(cfg.metrics)
        self.random_weights: list[str] = []
        self.inception = self.i3d = self.syncnet = None
        if "fid" in m:
            self.inception = fid.FIDInception(cfg.inception_path or None, dims=cfg.fid_dims).to(cfg.device)
            self._note_random("inception", self.inception.random_weights)
        if "fvd" in m:
            self.i3d = fvd.load_i3d(cfg.i3d_path or None, cfg.device, random_width=i3d_random_width)
            self._note_random("i3d", self.i3d.random_weights)
        if "syncnet" in m:
            self.syncnet = syncnet.SyncNet(cfg.syncnet_path or None).to(cfg.device)
            self._note_random("syncnet", self.syncnet.random_weights)
        needs_faces = bool(m & {"facesim", "kpsdis", "syncnet"})
        if needs_faces and face_backend is None:
            from evaluation.faces import make_backend

            face_backend = make_backend(cfg.face_backend)
        self.backend = face_backend
        if "facesim" in m and embedder is None:
            embedder = make_embedder(cfg)
        self.embedder = embedder
        self.datasets: dict[str, _DatasetState] = defaultdict(_DatasetState)

    def _note_random(self, name: str, is_random: bool) -> None:
        if is_random:
            self.random_weights.append(name)
            log.warning("%s: no weights file given, using RANDOM weights (results tagged random_weights)", name)

    # ------------------------------------------------------------------ per video

    def score_video(self, video: TestVideo, generated: np.ndarray) -> dict:
        gen = np.asarray(generated)
        if gen.ndim != 4 or gen.shape[-1] != 3 or gen.dtype != np.uint8:
            raise ValueError(f"{video.name}: generated frames must be uint8 (F, H, W, 3), got {gen.dtype} {gen.shape}")
        if len(gen) != len(video.frames):
            raise ValueError(f"{video.name}: {len(gen)} generated frames but {len(video.frames)} ground-truth frames")
        state = self.datasets[video.dataset]
        row: dict[str, Any] = {"dataset": video.dataset, "video": video.name, "num_frames": len(gen),
                               "generated_size": gen.shape[1]}
        gt_small = resize_frames(video.frames, gen.shape[1:3])
        if self.inception is not None:
            bs = self.cfg.batch_size
            state.fid_gen.append(fid.inception_features(self.inception, gen, bs, f"{video.name} generated"))
            state.fid_gt.append(fid.inception_features(self.inception, gt_small, bs, f"{video.name} ground truth"))
        if self.i3d is not None:
            k = self.cfg.fvd_clip_frames
            g = fvd.i3d_features(self.i3d, [gen], [video.name], k)
            t = fvd.i3d_features(self.i3d, [gt_small], [video.name], k)
            state.fvd_gen.append(g.features)
            state.fvd_gt.append(t.features)
            state.fvd_short_videos += len(g.too_short)
            row["fvd_clips"] = g.num_clips
        if self.backend is not None:
            gen_faces = detect_per_frame(self.backend, gen)
            gt_faces = detect_per_frame(self.backend, video.frames)
            row.update(self._face_metrics(video, gen, gen_faces, gt_faces))
        state.rows.append(row)
        return row

    def _face_metrics(self, video: TestVideo, gen, gen_faces, gt_faces) -> dict:
        m, row = set(self.cfg.metrics), {}
        ref_idx = min(self.cfg.reference_frame, len(video.frames) - 1)
        if "facesim" in m:
            try:
                r = face_similarity(self.embedder, video.frames[ref_idx], gt_faces[ref_idx], gen, gen_faces,
                                    video.frames, gt_faces, exclude=[ref_idx])
                row.update(facesim_generated=r.facesim_generated, facesim_ground_truth=r.facesim_ground_truth,
                           delta_facesim=r.delta, facesim_no_face_generated=r.num_no_face_generated,
                           facesim_no_face_ground_truth=r.num_no_face_ground_truth)
            except ValueError as exc:
                row.update(_failed("facesim", exc, video), facesim_generated=np.nan, facesim_ground_truth=np.nan,
                           delta_facesim=np.nan)
        if "kpsdis" in m:
            target = video.kps * (self.cfg.kps_target_size / video.kps_size)
            r = kps_distance([f.kps if f is not None else None for f in gen_faces], target, gen.shape[1:3],
                             self.cfg.kps_target_size)
            row.update(kpsdis=r.value, kpsdis_no_face=r.num_no_face)
        if "syncnet" in m:
            row.update(self._sync(video, gen, gen_faces, "generated", gt_faces))
            row.update(self._sync(video, video.frames, gt_faces, "ground_truth", None))
        return row

    def _sync(self, video: TestVideo, frames, faces, which: str, fallback_faces) -> dict:
        key = "" if which == "generated" else "_gt"
        nan = {f"lse_d{key}": np.nan, f"lse_c{key}": np.nan, f"av_offset{key}": np.nan}
        if video.audio is None:
            return {**nan, **_failed(f"syncnet{key}", ValueError("video has no audio"), video)}
        out: dict[str, Any] = {}
        try:
            try:
                boxes, missing = syncnet.interpolate_missing_boxes([f.box if f is not None else None for f in faces])
            except ValueError:
                if fallback_faces is None:
                    raise
                scale = frames.shape[1] / video.frames.shape[1]
                boxes, missing = syncnet.interpolate_missing_boxes(
                    [f.box * scale if f is not None else None for f in fallback_faces])
                out["syncnet_gt_box_fallback"] = 1
            crops = syncnet.syncnet_face_crops(frames, boxes)
            s = syncnet.sync_scores(self.syncnet, crops, video.audio)
            out.update({f"lse_d{key}": s.lse_d, f"lse_c{key}": s.lse_c, f"av_offset{key}": s.offset,
                        f"syncnet_missing_boxes{key}": missing})
            return out
        except ValueError as exc:
            return {**nan, **out, **_failed(f"syncnet{key}", exc, video)}

    # ------------------------------------------------------------------ per dataset

    def dataset_metrics(self, dataset: str) -> dict[str, float]:
        state = self.datasets[dataset]
        rows = state.rows
        out: dict[str, float] = {"num_videos": len(rows)}
        if self.inception is not None:
            out.update(self._frechet("fid", state.fid_gen, state.fid_gt, ddof=1))
        if self.i3d is not None:
            out.update(self._frechet("fvd", state.fvd_gen, state.fvd_gt, ddof=0))
            out["fvd_short_videos"] = state.fvd_short_videos
        m = set(self.cfg.metrics)
        if "facesim" in m:
            g, t = _nanmean(rows, "facesim_generated"), _nanmean(rows, "facesim_ground_truth")
            out.update(facesim_generated=100 * g, facesim_ground_truth=100 * t, delta_facesim=100 * abs(g - t),
                       facesim_failed_videos=_count_nan(rows, "facesim_generated"))
        if "kpsdis" in m:
            out.update(kpsdis=_nanmean(rows, "kpsdis"), kpsdis_failed_videos=_count_nan(rows, "kpsdis"),
                       kpsdis_no_face_frames=sum(r.get("kpsdis_no_face", 0) for r in rows))
        if "syncnet" in m:
            for k in ("lse_d", "lse_c", "av_offset", "lse_d_gt", "lse_c_gt", "av_offset_gt"):
                out[k] = _nanmean(rows, k)
            out["syncnet_failed_videos"] = _count_nan(rows, "lse_c")
            out["syncnet_gt_box_fallback"] = sum(r.get("syncnet_gt_box_fallback", 0) for r in rows)
        return out

    def _frechet(self, name: str, gen: RunningMoments, gt: RunningMoments, ddof: int) -> dict[str, float]:
        out: dict[str, float] = {f"{name}_samples": min(gen.num_samples, gt.num_samples),
                                 f"{name}_required_samples": max(gen.dim, gt.dim) + 1}
        try:
            a = gen.statistics(ddof, self.cfg.allow_rank_deficient)
            b = gt.statistics(ddof, self.cfg.allow_rank_deficient)
            out[name] = frechet_distance(a, b)
            out[f"{name}_rank_deficient"] = float(not (a.full_rank and b.full_rank))
        except RankDeficientError as exc:
            log.warning("%s is NaN: %s", name.upper(), exc)
            out[name] = float("nan")
            out[f"{name}_rank_deficient"] = 1.0
        return out


def _failed(metric: str, exc: Exception, video: TestVideo) -> dict:
    log.warning("%s/%s: %s not computed: %s", video.dataset, video.name, metric, exc)
    return {f"{metric}_error": str(exc)}


def _values(rows: list[dict], key: str) -> np.ndarray:
    return np.array([float(r.get(key, np.nan)) for r in rows], dtype=np.float64)


def _nanmean(rows: list[dict], key: str) -> float:
    v = _values(rows, key)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")


def _count_nan(rows: list[dict], key: str) -> int:
    return int(np.isnan(_values(rows, key)).sum())
