"""Evaluation configuration (``python -m evaluation.run``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.config import check


@dataclass
class EvalConfig:
    test_set: str = ""
    output_dir: str = "runs/eval"
    metrics: list[str] = field(default_factory=lambda: ["fid", "fvd", "facesim", "kpsdis", "syncnet"])
    inception_path: str = ""  # pt_inception-2015-12-05 weights (pytorch-fid); empty -> random (tagged)
    i3d_path: str = ""  # TorchScript I3D (StyleGAN-V); empty -> random (tagged)
    syncnet_path: str = ""  # syncnet_v2.model; empty -> random (tagged)
    face_id_backend: str = "sface"  # sface (offline default) | arcface
    arcface_path: str = ""
    fvd_clip_frames: int = 16
    max_videos: int = 0  # 0 = all
    audio_weight_sweep: list[float] = field(default_factory=lambda: [0.0, 1.0, 3.0])

    def __post_init__(self) -> None:
        known = {"fid", "fvd", "facesim", "kpsdis", "syncnet"}
        unknown = set(self.metrics) - known
        check(not unknown, "eval.metrics", f"unknown metric(s) {sorted(unknown)}; known: {sorted(known)}")
        check(self.face_id_backend in ("sface", "arcface"), "eval.face_id_backend", "must be sface|arcface")
        check(self.fvd_clip_frames >= 1, "eval.fvd_clip_frames", "must be >= 1")
        check(self.max_videos >= 0, "eval.max_videos", "must be >= 0")
