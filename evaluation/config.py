"""Evaluation configuration (``python -m evaluation.run``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from evaluation.metrics import REGISTRY
from evaluation.protocols import PROTOCOLS, Protocol, get_protocol
from infra.config import check

METRICS = tuple(REGISTRY)  # derived from the registry: one place names the metrics


@dataclass
class EvalConfig:
    # One or more test sets, comma-separated; each is a shard output folder (index.json) or a folder of
    # videos with audio; "name=path" names the dataset (default: the folder name). One table column each.
    test_set: str = ""
    output_dir: str = "runs/eval"
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    # Frames, clips, crops and thresholds of every metric (evaluation/protocols.py,
    # docs/evaluation-protocol.md): stylegan-v | latentsync | all-clips
    protocol: str = "stylegan-v"
    inception_path: str = ""  # pt_inception-2015-12-05 weights (pytorch-fid); empty -> random (tagged)
    i3d_path: str = ""  # TorchScript I3D (StyleGAN-V); empty -> random (tagged)
    syncnet_path: str = ""  # syncnet_v2.model; empty -> random (tagged)
    # Face detector for KpsDis / ΔFaceSim / SyncNet tracks / face-crop FVD: auto = the backend recorded in
    # the test set's shards (the one its target keypoints came from; yunet for a raw folder) | yunet | insightface
    face_backend: str = "auto"
    insightface_root: str = ""  # folder with models/<pack>/*.onnx; empty -> the test set's, else ~/.insightface
    insightface_pack: str = "buffalo_l"
    insightface_missing: str = "error"  # face_backend=insightface without the pack: error | auto (recorded backend)
    face_id_backend: str = "auto"  # auto (the pack's ArcFace with insightface, else SFace) | sface | arcface
    arcface_path: str = ""  # ArcFace ONNX file or pack folder; empty -> the pack under insightface_root
    fid_dims: int = 2048  # Inception block: 2048 (pool3, standard) | 768 | 192 | 64 (need fewer frames)
    # Fréchet distances are computed at any sample count, with the counts and "<metric>_rank_deficient" stored
    # next to the value (as pytorch-fid and StyleGAN-V compute them); false: NaN below dim + 1 samples.
    allow_rank_deficient: bool = True
    floor: bool = True  # the real-vs-real row: FID/FVD between two halves of the ground truth
    # Protocol overrides (the table then says "modified"): 0 / -1 keep the protocol's value.
    fvd_clip_frames: int = 0
    sync_min_track: int = -1
    sync_min_face_size: int = -1
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
        check(self.protocol in PROTOCOLS, "eval.protocol", f"must be one of {sorted(PROTOCOLS)}, got {self.protocol!r}")
        check(self.face_backend in ("auto", "yunet", "insightface"), "eval.face_backend",
              "must be auto|yunet|insightface")
        check(self.insightface_missing in ("error", "auto"), "eval.insightface_missing", "must be error|auto")
        check(self.face_id_backend in ("auto", "sface", "arcface"), "eval.face_id_backend",
              "must be auto|sface|arcface")
        check(self.fvd_clip_frames >= 0, "eval.fvd_clip_frames", "must be >= 0 (0: the protocol's)")
        check(self.sync_min_track >= -1, "eval.sync_min_track", "must be >= 0, or -1 for the protocol's")
        check(self.sync_min_face_size >= -1, "eval.sync_min_face_size", "must be >= 0, or -1 for the protocol's")
        check(self.fid_dims in (64, 192, 768, 2048), "eval.fid_dims", "must be 64|192|768|2048")
        check(self.max_videos >= 0, "eval.max_videos", "must be >= 0")
        check(self.max_frames >= 0, "eval.max_frames", "must be >= 0")
        check(self.reference_frame >= 0, "eval.reference_frame", "must be >= 0")
        check(self.kps_target_size > 0, "eval.kps_target_size", "must be > 0")
        check(self.sweep_videos >= 0, "eval.sweep_videos", "must be >= 0")
        check(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        check(all(w >= 0 for w in self.audio_weight_sweep), "eval.audio_weight_sweep", "weights must be >= 0")

    def resolved_protocol(self) -> Protocol:
        """``eval.protocol`` with the ``eval.*`` overrides applied (and recorded as modifications)."""
        return get_protocol(
            self.protocol,
            fvd_clip_frames=self.fvd_clip_frames or None,
            sync_min_track=None if self.sync_min_track < 0 else self.sync_min_track,
            sync_min_face_size=None if self.sync_min_face_size < 0 else self.sync_min_face_size,
        )
