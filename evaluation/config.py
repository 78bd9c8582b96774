"""Evaluation configuration (``python -m evaluation.run``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.config import check

METRICS = ("fid", "fvd", "facesim", "kpsdis", "syncnet")


@dataclass
class EvalConfig:
    # One or more test sets, comma-separated; each is a shard output folder (index.json) or a folder of
    # videos with audio; "name=path" names the dataset (default: the folder name). One table column each.
    test_set: str = ""
    output_dir: str = "runs/eval"
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    inception_path: str = ""  # pt_inception-2015-12-05 weights (pytorch-fid); empty -> random (tagged)
    i3d_path: str = ""  # TorchScript I3D (StyleGAN-V); empty -> random (tagged)
    syncnet_path: str = ""  # syncnet_v2.model; empty -> random (tagged)
    face_id_backend: str = "sface"  # sface (offline default) | arcface
    arcface_path: str = ""
    face_backend: str = "yunet"  # face detector for KpsDis / ΔFaceSim / SyncNet crops: yunet | insightface
    fvd_clip_frames: int = 16
    fid_dims: int = 2048  # Inception block: 2048 (pool3, standard) | 768 | 192 | 64 (need fewer frames)
    # Fewer samples than feature dims -> the Fréchet distance is NaN (counts logged) unless this is true,
    # in which case it is computed from the singular covariance and tagged "<metric>_rank_deficient".
    allow_rank_deficient: bool = False
    reference_frame: int = 0  # ground-truth frame used as the reference image (excluded from ΔFaceSim)
    kps_target_size: int = 512  # KpsDis is reported in pixels of this square frame
    max_videos: int = 0  # 0 = all (per test set)
    max_frames: int = 0  # 0 = whole clip; else generate/score only the first N frames
    audio_weight_sweep: list[float] = field(default_factory=lambda: [0.0, 1.0, 3.0])
    sweep_videos: int = 1  # videos used for the audio-attention-weight sweep plot (0 = no sweep)
    device: str = "cpu"  # feature networks (Inception, I3D, SyncNet)
    batch_size: int = 16
    method_name: str = "V-Express (ours)"

    def __post_init__(self) -> None:
        unknown = set(self.metrics) - set(METRICS)
        check(not unknown, "eval.metrics", f"unknown metric(s) {sorted(unknown)}; known: {sorted(METRICS)}")
        check(self.face_id_backend in ("sface", "arcface"), "eval.face_id_backend", "must be sface|arcface")
        check(self.face_id_backend != "arcface" or bool(self.arcface_path), "eval.arcface_path",
              "face_id_backend=arcface needs the path of an insightface ArcFace ONNX file or pack folder")
        check(self.face_backend in ("yunet", "insightface"), "eval.face_backend", "must be yunet|insightface")
        check(self.fvd_clip_frames >= 1, "eval.fvd_clip_frames", "must be >= 1")
        check(self.fid_dims in (64, 192, 768, 2048), "eval.fid_dims", "must be 64|192|768|2048")
        check(self.max_videos >= 0, "eval.max_videos", "must be >= 0")
        check(self.max_frames >= 0, "eval.max_frames", "must be >= 0")
        check(self.reference_frame >= 0, "eval.reference_frame", "must be >= 0")
        check(self.kps_target_size > 0, "eval.kps_target_size", "must be > 0")
        check(self.sweep_videos >= 0, "eval.sweep_videos", "must be >= 0")
        check(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        check(all(w >= 0 for w in self.audio_weight_sweep), "eval.audio_weight_sweep", "weights must be >= 0")
