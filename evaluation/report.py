"""The evaluation's outputs: the Table-1 layout, the per-video CSV, plots, and the MLflow run."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

PLOT_METRICS = ("delta_facesim", "facesim_generated", "kpsdis", "lse_d", "lse_c", "av_offset")


# ------------------------------------------------------------------------------------------- table


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{value:.{digits}f}"


def table1(results: dict[str, dict[str, float]], method: str) -> str:
    """The paper's Table 1 layout: per dataset FID, FVD, ΔFaceSim (FaceSim), KpsDis, SyncNet (= LSE-C);
    a Ground-Truth row (FaceSim of the real frames, LSE-C of the real video) above the method's row."""
    cols = ["FID", "FVD", "ΔFaceSim", "KpsDis", "SyncNet"]
    width = [8, 8, 15, 8, 8]
    datasets = list(results)
    name_w = max(16, len(method) + 2)
    head1 = " " * name_w + "".join(f"| {d:<{sum(width) + len(width) - 1}}" for d in datasets)
    head2 = f"{'':<{name_w}}" + "".join("| " + " ".join(f"{c:>{w}}" for c, w in zip(cols, width)) for _ in datasets)

    def row(label: str, cells_per_ds: list[list[str]]) -> str:
        return f"{label:<{name_w}}" + "".join(
            "| " + " ".join(f"{c:>{w}}" for c, w in zip(cells, width)) for cells in cells_per_ds)

    gt, ours = [], []
    for d in datasets:
        r = results[d]
        gt.append(["-", "-", f"0.00 ({_fmt(r.get('facesim_ground_truth'))})" if "facesim_ground_truth" in r else "-",
                   "-", _fmt(r.get("lse_c_gt"), 3) if "lse_c_gt" in r else "-"])
        ours.append([_fmt(r.get("fid")) if "fid" in r else "-", _fmt(r.get("fvd")) if "fvd" in r else "-",
                     f"{_fmt(r.get('delta_facesim'))} ({_fmt(r.get('facesim_generated'))})"
                     if "delta_facesim" in r else "-",
                     _fmt(r.get("kpsdis")) if "kpsdis" in r else "-", _fmt(r.get("lse_c"), 3) if "lse_c" in r else "-"])
    lines = [head1, head2, "-" * len(head2), row("Ground-Truth", gt), row(method, ours)]
    notes = [f"  {d}: {n}" for d in datasets for n in table_notes(results[d])]
    if notes:
        lines += ["", "Notes (nan = not computable; see per_video.csv and the MLflow metrics):", *notes]
    return "\n".join(lines)


def _isnan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def table_notes(r: dict[str, float]) -> list[str]:
    """Why a number is missing or qualified: sample counts, no-face frames, fallbacks."""
    notes = []
    for name in ("fid", "fvd"):
        if name not in r:
            continue
        counts = f"{int(r.get(f'{name}_samples', 0))} samples, {int(r.get(f'{name}_required_samples', 0))} needed"
        if _isnan(r[name]):
            notes.append(f"{name.upper()} nan: too few samples for a full-rank covariance ({counts})")
        elif r.get(f"{name}_rank_deficient"):
            notes.append(f"{name.upper()} computed from a rank-deficient covariance ({counts}); not comparable")
    if r.get("facesim_failed_videos"):
        notes.append(f"ΔFaceSim: {int(r['facesim_failed_videos'])} of {int(r['num_videos'])} videos without a "
                     "face in any generated frame (or no reference face)")
    if r.get("kpsdis_no_face_frames"):
        notes.append(f"KpsDis: {int(r['kpsdis_no_face_frames'])} generated frames without a face (excluded), "
                     f"{int(r.get('kpsdis_failed_videos', 0))} videos with none")
    if r.get("syncnet_failed_videos"):
        notes.append(f"SyncNet: {int(r['syncnet_failed_videos'])} videos not scored (see syncnet_error)")
    if r.get("syncnet_gt_box_fallback"):
        notes.append(f"SyncNet: {int(r['syncnet_gt_box_fallback'])} videos cropped with the ground-truth face "
                     "boxes (no face detected in the generated frames)")
    if r.get("skipped_no_audio"):
        notes.append(f"{int(r['skipped_no_audio'])} test videos skipped: no audio")
    return notes


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


def plot_distributions(rows: list[dict], path: Path) -> Path | None:
    """One histogram per per-video metric, one colour per dataset; NaN rows are left out (and counted)."""
    metrics = [m for m in PLOT_METRICS if any(m in r for r in rows)]
    if not metrics:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 2.8), squeeze=False)
    datasets = sorted({r["dataset"] for r in rows})
    for ax, m in zip(axes[0], metrics):
        for d in datasets:
            v = np.array([float(r.get(m, np.nan)) for r in rows if r["dataset"] == d])
            ok = v[~np.isnan(v)]
            ax.hist(ok, bins=min(20, max(3, len(ok))), alpha=0.6, label=f"{d} (n={len(ok)}, nan={len(v) - len(ok)})")
        ax.set_title(m)
        ax.legend(fontsize=6)
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


def plot_audio_weight_sweep(sweep: dict[float, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
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
    ax.legend(fontsize=7)
    ax_img.imshow(np.concatenate(strips, axis=0))
    ax_img.set_yticks([(i + 0.5) * strips[0].shape[0] for i in range(len(strips))],
                      [f"w={w:g}" for w in sorted(sweep)])
    ax_img.set_xticks([])
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


def log_to_mlflow(tracking_uri: str, experiment: str, run_name: str, params: dict[str, str],
                  results: dict[str, dict[str, float]], tags: dict[str, str], artifacts: list[Path]) -> str:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags(tags)
        mlflow.log_params(params)
        for dataset, metrics in results.items():
            mlflow.log_metrics({f"{dataset}/{k}": float(v) for k, v in metrics.items()})
        for a in artifacts:
            mlflow.log_artifact(str(a))
        return run.info.run_id
