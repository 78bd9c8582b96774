"""The evaluation's outputs: the Table-1 layout, strict-JSON metrics, the per-video CSV, plots, the MLflow run.

Table columns, notes and plotted per-video keys come from the metric registry (``evaluation.metrics``):
each metric class declares its columns (one cell per row: Ground-Truth, the real-vs-real floor, the
method), so a new metric appears here without touching this module.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.metrics import metric_classes
from evaluation.metrics.base import ROWS

ROW_LABELS = {"ground_truth": "Ground-Truth", "floor": "Real vs real (floor)"}


# ------------------------------------------------------------------------------------------- table


def table1(results: dict[str, dict[str, Any]], method: str, metrics: list[str] | None = None,
           header: list[str] | tuple[str, ...] = ()) -> str:
    """The paper's Table 1 layout, per dataset one column group of the metrics' columns (FID, FVD,
    ΔFaceSim (FaceSim), KpsDis, Sync-C, Sync-D); rows Ground-Truth, the real-vs-real floor, the method.
    ``header`` lines (protocol, networks, random-weight warning) go above it, notes for every nan below."""
    classes = metric_classes(metrics)
    cols = [c for cls in classes for c in cls.columns]
    datasets = list(results)
    group_w = sum(c.width for c in cols) + len(cols) - 1
    name_w = max(22, len(method) + 2)
    head1 = " " * name_w + "".join(f"| {d:<{group_w}}" for d in datasets)
    head2 = f"{'':<{name_w}}" + "".join("| " + " ".join(f"{c.header:>{c.width}}" for c in cols) for _ in datasets)
    lines = [*header, *([""] if header else []), head1, head2, "-" * len(head2)]
    for row in ROWS:
        label = ROW_LABELS.get(row, method)
        cells = ["| " + " ".join(f"{c.cell(results[d], row):>{c.width}}" for c in cols) for d in datasets]
        lines.append(f"{label:<{name_w}}" + "".join(cells))
    notes = [f"  {d}: {n}" for d in datasets for cls in classes for n in cls.notes(results[d])]
    notes += [f"  {d}: {int(results[d]['skipped_no_audio'])} test videos skipped: no audio"
              for d in datasets if results[d].get("skipped_no_audio")]
    if notes:
        lines += ["", "Notes (nan = not computable; see per_video.csv and metrics.json):", *notes]
    return "\n".join(lines)


def random_weights_label(networks: list[str]) -> str:
    """The warning every output that shows numbers carries when a feature network had random weights."""
    if not networks:
        return ""
    return f"RANDOM-WEIGHT feature networks ({', '.join(networks)}): these numbers test the plumbing, not quality"


# ------------------------------------------------------------------------------------------- json


def strict(obj: Any) -> Any:
    """``obj`` with NaN/inf as None and numpy scalars/arrays as Python values: valid RFC 8259 JSON."""
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def write_strict_json(obj: Any, path: Path) -> Path:
    path.write_text(json.dumps(strict(obj), indent=1, sort_keys=True, allow_nan=False) + "\n")
    return path


# ------------------------------------------------------------------------------------------- csv


def write_rows_csv(rows: list[dict], path: Path) -> Path:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


# ------------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _suptitle(fig, random_networks: list[str] | None) -> None:
    label = random_weights_label(random_networks or [])
    if label:
        fig.suptitle(label, fontsize=8, color="darkred")


def plot_keys(metrics: list[str] | None = None) -> list[str]:
    return [k for cls in metric_classes(metrics) for k in cls.plot_keys]


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, fontsize=12, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_distributions(rows: list[dict], path: Path, metrics: list[str] | None = None,
                       random_networks: list[str] | None = None) -> Path:
    """One histogram per per-video metric, one colour per dataset; NaN rows are left out (and counted);
    a metric without a single finite value says "no data"."""
    keys = plot_keys(metrics) or ["(no per-video metric)"]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.0), squeeze=False)
    datasets = sorted({r["dataset"] for r in rows})
    for ax, m in zip(axes[0], keys):
        ax.set_title(m, fontsize=9)
        drawn = False
        for d in datasets:
            v = np.array([float(r[m]) if r.get(m) is not None else np.nan for r in rows if r["dataset"] == d])
            ok = v[~np.isnan(v)]
            if len(ok):
                ax.hist(ok, bins=min(20, max(3, len(ok))), alpha=0.6,
                        label=f"{d} (n={len(ok)}, nan={len(v) - len(ok)})")
                drawn = True
        if drawn:
            ax.legend(fontsize=6)
        else:
            _no_data(ax)
    _suptitle(fig, random_networks)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def mouth_opening(frames: np.ndarray, mouth_boxes: np.ndarray) -> np.ndarray:
    """A pixel proxy of mouth opening per frame: the grayscale standard deviation (0…1) inside the mouth box.

    The 5-point keypoints have no lip landmarks; an open mouth shows the dark cavity and teeth, so the
    contrast inside the mouth box rises with the opening. Boxes are in pixels of ``frames``."""
    out = np.full(len(frames), np.nan)
    for i, (frame, box) in enumerate(zip(frames, mouth_boxes)):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        patch = frame[max(0, y0):y1, max(0, x0):x1]
        if patch.size:
            out[i] = float((patch.astype(np.float64) @ [0.299, 0.587, 0.114]).std() / 255.0)
    return out


def plot_audio_weight_sweep(sweep: dict[float, tuple[np.ndarray, np.ndarray]], path: Path, title: str,
                            random_networks: list[str] | None = None) -> Path:
    """The paper's Fig. 3 as numbers and pictures: mouth opening over time for each audio attention weight
    (left) and six evenly spaced frames per weight (right, one row per weight)."""
    plt = _pyplot()
    fig, (ax, ax_img) = plt.subplots(1, 2, figsize=(11, 3.5), gridspec_kw={"width_ratios": [1, 1.4]})
    strips = []
    for w, (frames, opening) in sorted(sweep.items()):
        ax.plot(opening, label=f"audio weight {w:g} (mean {np.nanmean(opening):.3f})")
        idx = np.linspace(0, len(frames) - 1, min(6, len(frames))).astype(int)
        strips.append(np.concatenate([frames[i] for i in idx], axis=1))
    ax.set_xlabel("frame")
    ax.set_ylabel("mouth opening (grayscale std in mouth box)")
    ax.set_title(title, fontsize=8)
    if strips:
        ax.legend(fontsize=7)
        ax_img.imshow(np.concatenate(strips, axis=0))
        ax_img.set_yticks([(i + 0.5) * strips[0].shape[0] for i in range(len(strips))],
                          [f"w={w:g}" for w in sorted(sweep)])
        ax_img.set_xticks([])
    else:
        _no_data(ax)
        _no_data(ax_img)
    _suptitle(fig, random_networks)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------- mlflow


def flatten_params(prefix: str, obj: Any) -> dict[str, str]:
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    out: dict[str, str] = {}
    for k, v in obj.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flatten_params(key, v))
        else:
            out[key] = str(v)[:500]
    return out


def numeric_metrics(dataset: str, metrics: dict[str, Any]) -> dict[str, float]:
    """The MLflow metrics of one dataset: numbers, and flags as 0/1 (NaN stays NaN, which MLflow stores);
    strings (protocol, backends, errors) stay in metrics.json and the params."""
    return {f"{dataset}/{k}": float(v) for k, v in metrics.items()
            if isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating))}
