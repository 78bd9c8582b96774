"""The metric registry: ``evaluation.scoring`` and ``evaluation.report`` iterate over it.

Adding a metric is one new module in this package defining a :class:`evaluation.metrics.base.Metric`
subclass, plus one line here (config name -> ``module:Class``). Classes are imported on first use, so
reading the config (``eval.metrics`` is validated against these names) stays cheap.
"""

from __future__ import annotations

import importlib

REGISTRY: dict[str, str] = {
    "fid": "evaluation.metrics.fid:FIDMetric",
    "fvd": "evaluation.metrics.fvd:FVDMetric",
    "facesim": "evaluation.metrics.facesim:FaceSimMetric",
    "kpsdis": "evaluation.metrics.kpsdis:KpsDisMetric",
    "syncnet": "evaluation.metrics.syncnet:SyncNetMetric",
}


def metric_class(name: str):
    """The :class:`Metric` subclass registered as ``name``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(REGISTRY)}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def metric_classes(names=None) -> list:
    """Classes of ``names`` (default: every registered metric), in registry order."""
    return [metric_class(n) for n in REGISTRY if names is None or n in names]
