"""Score generated videos against their ground truth, per video and per dataset, with the registered metrics.

:class:`Evaluator` builds every metric of ``eval.metrics`` from the registry (``evaluation.metrics``) once,
resolves the face detector of each test set (``evaluation.faces.face_setup``: by default the backend the
test set was preprocessed with), and for every video hands the metrics one shared
:class:`~evaluation.metrics.base.VideoContext`. ``score_video`` returns one row of the per-video table;
``dataset_metrics`` the dataset-level numbers (FID and FVD exist only at that level). A metric that cannot
be computed for a video is NaN in its row with the reason in ``<metric>_error``, and counted at the dataset
level; nothing is averaged over silently.

Resolutions: FID and FVD compare the generated frames with the ground truth resized (area) to the generated
resolution (LatentSync's face-crop FVD crops each side at its own resolution); KpsDis is in pixels of
``eval.kps_target_size``²; ΔFaceSim and SyncNet use each video as it is.

Real-vs-real floor: every ground-truth video goes to one of two halves, alternating by source video in
test-set order (clips cut from one source video stay on one side, so the floor is not optimistic);
FID/FVD between the halves are the noise floor of a test set of half this size.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np

from evaluation.config import EvalConfig
from evaluation.faces import FaceSetup, face_setup
from evaluation.faces import make_embedder as _make_embedder
from evaluation.metrics import metric_classes
from evaluation.metrics.base import MetricContext, Network, VideoContext, resize_frames
from evaluation.testset import TestVideo

log = logging.getLogger(__name__)

__all__ = ["Evaluator", "make_embedder", "resize_frames"]


def make_embedder(cfg: EvalConfig, backend_name: str = "yunet", root: str = ""):
    """The ΔFaceSim identity embedder (see ``evaluation.faces.make_embedder``)."""
    return _make_embedder(cfg, backend_name, root)


class Evaluator:
    def __init__(self, cfg: EvalConfig, face_backend: Any = None, embedder: Any = None,
                 i3d_random_width: float = 1.0):
        self.cfg = cfg
        self.protocol = cfg.resolved_protocol()
        ctx = MetricContext(cfg, self.protocol, i3d_random_width)
        self.metrics = [cls(ctx) for cls in metric_classes(cfg.metrics)]
        self.needs_faces = any(m.needs_faces for m in self.metrics)
        self.needs_embedder = any(m.needs_embedder for m in self.metrics)
        self._given = (face_backend, embedder)
        self.faces: dict[str, FaceSetup] = {}
        self.rows: dict[str, list[dict]] = defaultdict(list)
        self._halves: dict[str, dict[str, int]] = defaultdict(dict)
        for name, _net in self.networks_with_random_weights():
            log.warning("%s: no weights file given, using RANDOM weights (results tagged random_weights)", name)

    # ------------------------------------------------------------------ setup

    def networks(self) -> list[Network]:
        return [n for m in self.metrics for n in m.networks()]

    def networks_with_random_weights(self) -> list[tuple[str, Network]]:
        short = {"FID Inception-v3": "inception", "FVD I3D": "i3d", "SyncNet": "syncnet"}
        return [(short.get(n.role, n.role), n) for n in self.networks() if n.random]

    @property
    def random_weights(self) -> list[str]:
        return [name for name, _ in self.networks_with_random_weights()]

    @property
    def datasets(self) -> list[str]:
        return list(self.rows)

    def setup_dataset(self, dataset: str, recorded: str | None = None, recorded_root: str | None = None) -> FaceSetup:
        """Resolve (once) the face detector and embedder for ``dataset``; needed before its videos are read
        when it is a raw folder (the keypoints are detected with the same backend)."""
        if dataset not in self.faces:
            backend, embedder = self._given
            self.faces[dataset] = face_setup(self.cfg, recorded, recorded_root, backend=backend, embedder=embedder,
                                             with_embedder=self.needs_embedder)
            s = self.faces[dataset]
            log.info("%s: faces detected with %s (test set recorded: %s)", dataset, s.backend_name,
                     s.recorded or "nothing")
        return self.faces[dataset]

    def _half(self, video: TestVideo) -> int:
        halves = self._halves[video.dataset]
        source = video.source_id or video.name
        if source not in halves:
            halves[source] = len(halves) % 2
        return halves[source]

    # ------------------------------------------------------------------ per video

    def score_video(self, video: TestVideo, generated: np.ndarray) -> dict:
        gen = np.asarray(generated)
        if gen.ndim != 4 or gen.shape[-1] != 3 or gen.dtype != np.uint8:
            raise ValueError(f"{video.name}: generated frames must be uint8 (F, H, W, 3), got {gen.dtype} {gen.shape}")
        if len(gen) != len(video.frames):
            raise ValueError(f"{video.name}: {len(gen)} generated frames but {len(video.frames)} ground-truth frames")
        faces = self.setup_dataset(video.dataset, video.face_backend) if self.needs_faces else None
        v = VideoContext(video, gen, faces, self._half(video), self.cfg.reference_frame)
        row: dict[str, Any] = {"dataset": video.dataset, "video": video.name, "num_frames": len(gen),
                               "generated_size": gen.shape[1], "floor_half": v.half + 1}
        for metric in self.metrics:
            row.update(metric.score_video(v))
        self.rows[video.dataset].append(row)
        return row

    # ------------------------------------------------------------------ per dataset

    def dataset_metrics(self, dataset: str) -> dict:
        out: dict[str, Any] = {"num_videos": len(self.rows[dataset]), "protocol": self.protocol.name}
        if self.cfg.floor:
            halves = self._halves[dataset]
            out["floor_sources_half1"] = sum(1 for h in halves.values() if h == 0)
            out["floor_sources_half2"] = sum(1 for h in halves.values() if h == 1)
        if dataset in self.faces:
            s = self.faces[dataset]
            out.update(face_backend=s.backend_name, face_backend_recorded=s.recorded or "")
            if self.needs_embedder:
                out["face_id_backend"] = s.embedder_name
        for metric in self.metrics:
            out.update(metric.dataset_metrics(dataset))
        return out
