"""Named evaluation protocols: which frames, clips, crops, value ranges and thresholds each metric uses.

A metric formula is only comparable with a published number when the protocol around it is the same: FVD
moves several-fold with the number of clips, and SyncNet scores depend on which face tracks are kept.
``eval.protocol`` picks one of :data:`PROTOCOLS`; docs/evaluation-protocol.md says which published table
each one is meant to match and what is known not to be comparable.

``stylegan-v``
    FVD as StyleGAN-V's ``fvd2048_16f``: one 16-frame clip per video, a random start for real videos
    (seeded here, per video name) and start 0 for generated ones; whole frames, the I3D resizes them to
    224² (bilinear) and sees values in [-1, 1]; biased covariance. FID: pytorch-fid (every frame, bilinear
    299², [-1, 1], unbiased covariance). SyncNet: syncnet_python's ``run_pipeline`` defaults.
``latentsync``
    FVD as LatentSync's ``eval/eval_fvd.py``: frames 20–35 (``vr[20:36]``) of every video, the detected
    face box cropped and resized to 224² (area), values in [0, 1] fed to the I3D without rescaling (their
    script divides by 255 and passes ``rescale=False``), unbiased covariance (``np.cov``). SyncNet: their
    ``eval_sync_conf.py`` (``min_track=50``). FID as ``stylegan-v`` (their repository has no FID script).
``all-clips``
    The behaviour before protocols existed, for regression tracking on short clips: every non-overlapping
    16-frame clip of every video, whole frames, [-1, 1], biased covariance; SyncNet on the whole clip as
    one track (gaps interpolated, no minimum length or face size, ground-truth boxes when the generated
    video has no face). Matches no published table.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Protocol:
    name: str
    summary: str  # one line for table1.txt
    matches: tuple[str, ...]  # published tables this protocol is meant to reproduce
    # FVD
    fvd_clip_frames: int = 16
    fvd_sampling: str = "one_random_real"  # one_random_real | fixed_start | all_clips
    fvd_fixed_start: int = 0  # first frame for fvd_sampling=fixed_start
    fvd_face_crop: int = 0  # 0: whole frames (I3D resizes to 224²); N: detected face box resized to N²
    fvd_value_range: str = "minus1_1"  # minus1_1 (x/127.5 - 1) | zero_one (x/255)
    fvd_ddof: int = 0  # 0: StyleGAN-V FeatureStats; 1: np.cov
    fvd_seed: int = 0  # seeds the random start of each real clip (with the video name)
    # FID (pytorch-fid)
    fid_ddof: int = 1
    # SyncNet
    sync_tracking: str = "syncnet_python"  # syncnet_python (run_pipeline's track_shot) | whole_clip
    sync_min_track: int = 100  # a track needs MORE than this many detected frames (run_pipeline: len > min_track)
    sync_min_face_size: int = 100  # mean box side (pixels of the scored video) must exceed this
    sync_num_failed_det: int = 25  # a gap of more missed frames ends a track
    sync_iou_threshold: float = 0.5  # consecutive detections of one track overlap by more than this
    sync_crop_scale: float = 0.4
    sync_gt_box_fallback: bool = False  # all-clips only: crop generated videos with the ground-truth boxes
    modified: tuple[str, ...] = ()  # fields changed by eval.* overrides (the table says so)

    def describe(self) -> str:
        mod = f" (modified: {', '.join(self.modified)})" if self.modified else ""
        return f"protocol {self.name}{mod}: {self.summary}"


PROTOCOLS: dict[str, Protocol] = {
    "stylegan-v": Protocol(
        name="stylegan-v",
        summary="FVD = StyleGAN-V fvd2048_16f (1 clip x 16 frames per video, real start random, generated start "
                "0, I3D resize 224, [-1,1]); FID = pytorch-fid on every frame; SyncNet = syncnet_python "
                "(min_track 100, crop 0.4, 25 fps)",
        matches=("StyleGAN-V (Skorokhodov et al., CVPR 2022) FVD16 tables (fvd2048_16f)",
                 "V-Express paper Table 1 (closest available: the paper does not publish its FVD clip sampling)"),
    ),
    "latentsync": Protocol(
        name="latentsync",
        summary="FVD = LatentSync eval_fvd.py (frames 20-35, face crop 224, [0,1], np.cov); FID = pytorch-fid on "
                "every frame; SyncNet = LatentSync eval_sync_conf.py (min_track 50, crop 0.4, 25 fps)",
        matches=("LatentSync (Li et al., 2024) tables: FVD and Sync-C on HDTF and VoxCeleb2",),
        fvd_sampling="fixed_start", fvd_fixed_start=20, fvd_face_crop=224, fvd_value_range="zero_one", fvd_ddof=1,
        sync_min_track=50,
    ),
    "all-clips": Protocol(
        name="all-clips",
        summary="FVD on every non-overlapping 16-frame clip ([-1,1], I3D resize 224); FID = pytorch-fid on every "
                "frame; SyncNet on the whole clip as one track; matches no published table",
        matches=(),
        fvd_sampling="all_clips", sync_tracking="whole_clip", sync_min_track=0, sync_min_face_size=0,
        sync_gt_box_fallback=True,
    ),
}


def get_protocol(name: str, **overrides) -> Protocol:
    """The named protocol with ``overrides`` (fields whose value is not None) applied and recorded."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {sorted(PROTOCOLS)}")
    base = PROTOCOLS[name]
    changes = {k: v for k, v in overrides.items() if v is not None and getattr(base, k) != v}
    if not changes:
        return base
    return dataclasses.replace(base, **changes, modified=tuple(f"{k}={v}" for k, v in sorted(changes.items())))


# ------------------------------------------------------------------------------------------- FVD clips


def _name_seed(name: str) -> int:
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "little")


def fvd_clip_starts(protocol: Protocol, num_frames: int, *, real: bool, name: str) -> list[int]:
    """First frames of the FVD clips of one video ([] when it is too short for the protocol).

    ``one_random_real``: one clip; a real video starts at a uniform integer in ``[0, T − k]`` drawn from a
    generator seeded by (``fvd_seed``, video name), so the choice is reproducible and independent of the
    order videos are read in; a generated video starts at 0 (StyleGAN-V reads generated videos with
    ``load_n_consecutive_random_offset=False``). ``fixed_start``: one clip at ``fvd_fixed_start`` on both
    sides. ``all_clips``: ``0, k, 2k, …`` while a full clip fits."""
    k = protocol.fvd_clip_frames
    if protocol.fvd_sampling == "all_clips":
        return list(range(0, num_frames - k + 1, k))
    if protocol.fvd_sampling == "fixed_start":
        start = protocol.fvd_fixed_start
        return [start] if start + k <= num_frames else []
    if protocol.fvd_sampling == "one_random_real":
        if num_frames < k:
            return []
        if not real:
            return [0]
        rng = np.random.default_rng([protocol.fvd_seed, _name_seed(name)])
        return [int(rng.integers(0, num_frames - k + 1))]
    raise ValueError(f"protocol {protocol.name}: unknown fvd_sampling {protocol.fvd_sampling!r}")
