"""KpsDis (``evaluation/kpsdis.py``): target V-Kps vs keypoints detected on the generated frames."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from evaluation.metrics.base import Column, Metric, count_nan, keyed_cell, nanmean, values


class KpsDisMetric(Metric):
    name = "kpsdis"
    needs_faces = True
    columns = (Column("KpsDis", 8, keyed_cell({"method": "kpsdis"})),)
    plot_keys = ("kpsdis",)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.rows: dict[str, list[dict]] = defaultdict(list)

    def score_video(self, v) -> dict:
        from evaluation.kpsdis import kps_distance

        size = self.cfg.kps_target_size
        target = v.video.kps * (size / v.video.kps_size)
        r = kps_distance([f.kps if f is not None else None for f in v.generated_faces], target,
                         v.generated.shape[1:3], size)
        row = {"kpsdis": r.value, "kpsdis_no_face": r.num_no_face}
        self.rows[v.dataset].append(row)
        return row

    def dataset_metrics(self, dataset: str) -> dict:
        rows = self.rows[dataset]
        return {"kpsdis": nanmean(rows, "kpsdis"), "kpsdis_failed_videos": count_nan(rows, "kpsdis"),
                "kpsdis_no_face_frames": int(np.nansum(values(rows, "kpsdis_no_face")))}

    @classmethod
    def notes(cls, r: dict) -> list[str]:
        notes = []
        recorded, used = r.get("face_backend_recorded"), r.get("face_backend")
        if "kpsdis" in r and recorded and used and recorded != used:
            notes.append("KpsDis compares keypoints of two detectors: the test set's target V-Kps come from "
                         f"{recorded}, the generated frames' from {used}")
        if r.get("kpsdis_no_face_frames"):
            notes.append(f"KpsDis: {int(r['kpsdis_no_face_frames'])} generated frames without a face (excluded), "
                         f"{int(r.get('kpsdis_failed_videos', 0))} videos with none")
        return notes
