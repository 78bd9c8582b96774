"""The one interface every metric implements (see ``evaluation/metrics/__init__.py`` for the registry).

A metric is constructed once per evaluation with a :class:`MetricContext`; ``score_video`` is called for
every test video with a :class:`VideoContext` (shared, lazily computed inputs: resized ground truth, face
detections) and returns the metric's entries of the per-video row, accumulating whatever it needs for the
dataset level; ``dataset_metrics`` returns its entries of ``metrics.json``. The report builds Table 1 from
the class attributes: ``columns`` (header, width and one cell per table row), ``notes`` and ``plot_keys``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

log = logging.getLogger("evaluation")

# Table rows, top to bottom: the real videos themselves, real vs real (the noise floor), the method.
ROWS = ("ground_truth", "floor", "method")


@dataclass(frozen=True)
class Column:
    header: str
    width: int
    cell: Callable[[dict, str], str]  # (one dataset's metrics, row) -> text


@dataclass(frozen=True)
class Network:
    role: str  # e.g. "FID Inception-v3"
    weights: str  # file name, or the backend's name
    random: bool = False


@dataclass
class MetricContext:
    cfg: Any  # evaluation.config.EvalConfig
    protocol: Any  # evaluation.protocols.Protocol
    i3d_random_width: float = 1.0  # tests shrink the random-weight I3D


class VideoContext:
    """One test video and its generation, with inputs several metrics share (computed on first use)."""

    def __init__(self, video, generated: np.ndarray, faces, half: int, reference_frame: int):
        self.video, self.generated, self.faces, self.half = video, generated, faces, half
        self.reference_index = min(reference_frame, len(video.frames) - 1)

    @property
    def dataset(self) -> str:
        return self.video.dataset

    @cached_property
    def gt_resized(self) -> np.ndarray:
        """Ground truth at the generated resolution (area), for the distribution metrics."""
        return resize_frames(self.video.frames, self.generated.shape[1:3])

    @cached_property
    def generated_faces(self) -> list:
        from perception.faces import detect_per_frame

        return detect_per_frame(self.faces.backend, self.generated)

    @cached_property
    def ground_truth_faces(self) -> list:
        from perception.faces import detect_per_frame

        return detect_per_frame(self.faces.backend, self.video.frames)


class Metric:
    name: ClassVar[str]
    needs_faces: ClassVar[bool] = False
    needs_embedder: ClassVar[bool] = False
    columns: ClassVar[tuple[Column, ...]] = ()
    plot_keys: ClassVar[tuple[str, ...]] = ()  # per-video keys worth a histogram

    def __init__(self, ctx: MetricContext) -> None:
        self.ctx, self.cfg, self.protocol = ctx, ctx.cfg, ctx.protocol

    def networks(self) -> list[Network]:
        return []

    def score_video(self, v: VideoContext) -> dict:
        raise NotImplementedError

    def dataset_metrics(self, dataset: str) -> dict:
        raise NotImplementedError

    @classmethod
    def notes(cls, r: dict) -> list[str]:
        return []


# ------------------------------------------------------------------------------------------- helpers


def failed(metric: str, exc: Exception, video) -> dict:
    log.warning("%s/%s: %s not computed: %s", video.dataset, video.name, metric, exc)
    return {f"{metric}_error": str(exc)}


def values(rows: list[dict], key: str) -> np.ndarray:
    return np.array([float(r[key]) if r.get(key) is not None else np.nan for r in rows], dtype=np.float64)


def nanmean(rows: list[dict], key: str) -> float:
    v = values(rows, key)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")


def count_nan(rows: list[dict], key: str) -> int:
    return int(np.isnan(values(rows, key)).sum())


def isnan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(value: Any, digits: int = 2) -> str:
    return "nan" if isnan(value) else f"{float(value):.{digits}f}"


def keyed_cell(keys: dict[str, str], digits: int = 2) -> Callable[[dict, str], str]:
    """A cell showing ``r[keys[row]]`` (formatted) on the rows ``keys`` names and "-" on the others."""
    def render(r: dict, row: str) -> str:
        key = keys.get(row)
        return fmt(r.get(key), digits) if key and key in r else "-"

    return render


def resize_frames(frames: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 resized (area) to ``hw``; returned as is when already that size."""
    import cv2

    if frames.shape[1:3] == tuple(hw):
        return frames
    return np.stack([cv2.resize(f, (hw[1], hw[0]), interpolation=cv2.INTER_AREA) for f in frames])


class FrechetSets:
    """Running feature moments of one dataset: generated, real, and the real set's two floor halves."""

    def __init__(self, what: str):
        from evaluation.frechet import RunningMoments

        self.gen = RunningMoments(f"{what} generated")
        self.real = RunningMoments(f"{what} ground truth")
        self.halves = (RunningMoments(f"{what} ground truth, half 1"), RunningMoments(f"{what} ground truth, half 2"))


def frechet_dataset_metrics(prefix: str, sets: FrechetSets, ddof: int, cfg) -> dict:
    """The distance with its counts and rank flag, and (``eval.floor``) the same for the floor halves."""
    from evaluation.frechet import summarize

    out = summarize(prefix, sets.gen, sets.real, ddof=ddof, sides=("generated", "real"),
                    allow_rank_deficient=cfg.allow_rank_deficient)
    if cfg.floor:
        out.update(summarize(f"{prefix}_floor", *sets.halves, ddof=ddof, sides=("half1", "half2"),
                             allow_rank_deficient=cfg.allow_rank_deficient))
    return out


def frechet_notes(prefix: str, label: str, r: dict) -> list[str]:
    """Why a Fréchet distance is missing or qualified: its sample counts, for the main and the floor row."""
    notes = []
    for key, what, sides in ((prefix, label, ("generated", "real")),
                             (f"{prefix}_floor", f"{label} floor", ("half1", "half2"))):
        if key not in r:
            continue
        n1, n2 = r.get(f"{key}_samples_{sides[0]}", 0), r.get(f"{key}_samples_{sides[1]}", 0)
        counts = f"{n1} {sides[0]} vs {n2} {sides[1]} samples of {r.get(f'{key}_dim', 0)}-d features"
        if isnan(r[key]):
            notes.append(f"{what} nan: {r.get(f'{key}_error', 'not computed')}")
        elif r.get(f"{key}_rank_deficient"):
            notes.append(f"{what} from a rank-deficient covariance ({counts}; full rank needs "
                         f"{int(r.get(f'{key}_dim', 0)) + 1}): biased upward, compare only at equal sample counts")
    return notes
