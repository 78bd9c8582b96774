"""ΔFaceSim (``evaluation/facesim.py``): signed, paired, ×100 at the dataset level, "Δ (generated)"."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from evaluation.metrics.base import Column, Metric, Network, count_nan, failed, fmt, isnan, nanmean, values


def _cell(r: dict, row: str) -> str:
    if "delta_facesim" not in r:
        return "-"
    if row == "ground_truth":
        return f"0.00 ({fmt(r.get('facesim_ground_truth'))})"
    if row == "method":
        return f"{fmt(r.get('delta_facesim'))} ({fmt(r.get('facesim_generated'))})"
    return "-"


class FaceSimMetric(Metric):
    name = "facesim"
    needs_faces = True
    needs_embedder = True
    columns = (Column("ΔFaceSim", 15, _cell),)
    plot_keys = ("delta_facesim", "facesim_generated")

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.rows: dict[str, list[dict]] = defaultdict(list)
        self.embedders: set[str] = set()

    def networks(self) -> list[Network]:
        return [Network("identity (ΔFaceSim)", name) for name in sorted(self.embedders)]

    def score_video(self, v) -> dict:
        from evaluation.facesim import face_similarity

        embedder = v.faces.embedder
        self.embedders.add(v.faces.embedder_name)
        i = v.reference_index
        try:
            r = face_similarity(embedder, v.video.frames[i], v.ground_truth_faces[i], v.generated, v.generated_faces,
                                v.video.frames, v.ground_truth_faces, exclude=[i])
            row = dict(facesim_generated=r.facesim_generated, facesim_ground_truth=r.facesim_ground_truth,
                       delta_facesim=r.delta, facesim_ground_truth_all=r.facesim_ground_truth_all,
                       facesim_paired_frames=r.num_paired_frames,
                       facesim_no_face_generated=r.num_no_face_generated,
                       facesim_no_face_ground_truth=r.num_no_face_ground_truth)
            if not r.num_paired_frames:
                row["facesim_error"] = "no frame with a face in both the generated and the ground-truth video"
        except ValueError as exc:
            row = dict(facesim_generated=np.nan, facesim_ground_truth=np.nan, delta_facesim=np.nan,
                       facesim_paired_frames=0, **failed("facesim", exc, v.video))
        self.rows[v.dataset].append(row)
        return row

    def dataset_metrics(self, dataset: str) -> dict:
        rows = self.rows[dataset]
        paired = [r for r in rows if r.get("facesim_paired_frames")]
        g, t = nanmean(paired, "facesim_generated"), nanmean(paired, "facesim_ground_truth")
        return {"facesim_generated": 100 * g, "facesim_ground_truth": 100 * t, "delta_facesim": 100 * (g - t),
                "facesim_ground_truth_all": 100 * nanmean(rows, "facesim_ground_truth_all"),
                "facesim_videos": len(paired), "facesim_failed_videos": count_nan(rows, "facesim_generated"),
                "facesim_no_face_generated_frames": int(np.nansum(values(rows, "facesim_no_face_generated"))),
                "facesim_no_face_ground_truth_frames": int(np.nansum(values(rows, "facesim_no_face_ground_truth")))}

    @classmethod
    def notes(cls, r: dict) -> list[str]:
        notes = []
        if r.get("facesim_failed_videos"):
            notes.append(f"ΔFaceSim: {int(r['facesim_failed_videos'])} videos without a frame that has a face on both "
                         "sides (or without a reference face): left out of both averages")
        if r.get("facesim_no_face_generated_frames"):
            notes.append(f"ΔFaceSim: {int(r['facesim_no_face_generated_frames'])} generated frames without a face "
                         "(their ground-truth frames are left out too)")
        gt, gt_all = r.get("facesim_ground_truth"), r.get("facesim_ground_truth_all")
        if gt_all is not None and not isnan(gt_all) and (isnan(gt) or abs(gt - gt_all) >= 0.005):
            notes.append(f"ΔFaceSim: FaceSim of all ground-truth frames with a face is {fmt(gt_all)}; the "
                         "Ground-Truth row and Δ use only the frames paired with a generated face")
        return notes
