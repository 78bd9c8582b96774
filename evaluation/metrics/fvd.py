"""FVD with the protocol's clip sampling, crops and value range (``evaluation/protocols.py``), plus the
real-vs-real floor (clips of the ground truth's two halves)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from evaluation.metrics.base import (
    Column,
    FrechetSets,
    Metric,
    Network,
    failed,
    frechet_dataset_metrics,
    frechet_notes,
    keyed_cell,
)
from evaluation.protocols import fvd_clip_starts


def protocol_clips(protocol, frames: np.ndarray, faces, *, real: bool, name: str) -> tuple[list[int], np.ndarray]:
    """The protocol's clips of one video: their start frames and the uint8 clips ``(n, k, h, w, 3)``."""
    from evaluation.fvd import face_crop_clip

    k = protocol.fvd_clip_frames
    starts = fvd_clip_starts(protocol, len(frames), real=real, name=name)
    if not starts:
        where = f" from frame {protocol.fvd_fixed_start}" if protocol.fvd_sampling == "fixed_start" else ""
        raise ValueError(f"{len(frames)} frames: too short for the {protocol.name} FVD clip ({k} frames{where})")
    clips = []
    for s in starts:
        clip = frames[s : s + k]
        if protocol.fvd_face_crop:
            clip = face_crop_clip(clip, [f.box if f is not None else None for f in faces[s : s + k]],
                                  protocol.fvd_face_crop)
        clips.append(clip)
    return starts, np.stack(clips)


class FVDMetric(Metric):
    name = "fvd"
    columns = (Column("FVD", 8, keyed_cell({"method": "fvd", "floor": "fvd_floor"})),)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        from evaluation.fvd import load_i3d

        self.i3d = load_i3d(self.cfg.i3d_path or None, self.cfg.device, random_width=ctx.i3d_random_width)
        self.needs_faces = self.protocol.fvd_face_crop > 0
        self.sets: dict[str, FrechetSets] = defaultdict(lambda: FrechetSets("FVD clips"))
        self.skipped: dict[str, int] = defaultdict(int)

    def networks(self) -> list[Network]:
        from evaluation.fvd import I3D_FILE

        return [Network("FVD I3D", I3D_FILE, self.i3d.random_weights)]

    def score_video(self, v) -> dict:
        from evaluation.fvd import clip_features

        p, name, s = self.protocol, v.video.name, self.sets[v.dataset]
        crop = p.fvd_face_crop > 0
        kw = dict(value_range=p.fvd_value_range, resize=not crop)
        row: dict = {"fvd_clips": 0}
        try:
            real_starts, real = protocol_clips(p, v.video.frames if crop else v.gt_resized,
                                               v.ground_truth_faces if crop else None, real=True, name=name)
            real_feats = clip_features(self.i3d, real, **kw)
            s.halves[v.half].append(real_feats)  # the floor is a property of the test set, whatever was generated
            row["fvd_real_start"] = real_starts[0]
            gen_starts, gen = protocol_clips(p, v.generated, v.generated_faces if crop else None, real=False,
                                             name=name)
        except ValueError as exc:  # no clip on one side: the video is left out of both FVD sets, and counted
            self.skipped[v.dataset] += 1
            return {**row, **failed("fvd", exc, v.video)}
        s.gen.append(clip_features(self.i3d, gen, **kw))
        s.real.append(real_feats)
        return {**row, "fvd_clips": len(gen_starts), "fvd_generated_start": gen_starts[0]}

    def dataset_metrics(self, dataset: str) -> dict:
        out = frechet_dataset_metrics("fvd", self.sets[dataset], self.protocol.fvd_ddof, self.cfg)
        out["fvd_skipped_videos"] = self.skipped[dataset]
        return out

    @classmethod
    def notes(cls, r: dict) -> list[str]:
        notes = frechet_notes("fvd", "FVD", r)
        if r.get("fvd_skipped_videos"):
            notes.append(f"FVD: {int(r['fvd_skipped_videos'])} videos without the protocol's clip on both sides "
                         "(too short, or no face for a face-crop clip): left out of both sets (see fvd_error)")
        return notes
