"""FID (pytorch-fid convention, ``evaluation/fid.py``): every generated frame vs every ground-truth frame of a
dataset, plus the real-vs-real floor (the ground truth's two halves)."""

from __future__ import annotations

from collections import defaultdict

from evaluation.metrics.base import (
    Column,
    FrechetSets,
    Metric,
    Network,
    frechet_dataset_metrics,
    frechet_notes,
    keyed_cell,
)


class FIDMetric(Metric):
    name = "fid"
    columns = (Column("FID", 8, keyed_cell({"method": "fid", "floor": "fid_floor"})),)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        from evaluation.fid import FIDInception

        self.net = FIDInception(self.cfg.inception_path or None, dims=self.cfg.fid_dims).to(self.cfg.device)
        self.sets: dict[str, FrechetSets] = defaultdict(lambda: FrechetSets("FID"))

    def networks(self) -> list[Network]:
        from evaluation.fid import FID_WEIGHTS_FILE

        return [Network("FID Inception-v3", f"{FID_WEIGHTS_FILE} ({self.cfg.fid_dims}-d)", self.net.random_weights)]

    def score_video(self, v) -> dict:
        from evaluation.fid import inception_features

        s, bs = self.sets[v.dataset], self.cfg.batch_size
        gen = inception_features(self.net, v.generated, bs, f"{v.video.name} generated")
        real = inception_features(self.net, v.gt_resized, bs, f"{v.video.name} ground truth")
        s.gen.append(gen)
        s.real.append(real)
        s.halves[v.half].append(real)
        return {"fid_frames": len(gen)}

    def dataset_metrics(self, dataset: str) -> dict:
        return frechet_dataset_metrics("fid", self.sets[dataset], self.protocol.fid_ddof, self.cfg)

    @classmethod
    def notes(cls, r: dict) -> list[str]:
        return frechet_notes("fid", "FID", r)
