"""Draw docs/images/data-flow.png: what each step of the pipeline reads and writes (matplotlib, no network).

    python scripts/draw_dataflow.py [--out docs/images/data-flow.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

STEP = "#dbe9f6"  # a process
DATA = "#fdf1d6"  # what lands on disk
TRACK = "#e3f3e0"  # MLflow
# (x, y, width, height, colour, title, detail); x/y are the box centre, in axis units (0..16 x 0..9)
BOXES = {
    "raw": (1.5, 7.4, 2.6, 1.3, DATA, "raw videos", "HDTF, VFHQ, test clips\nfolder / list / s3://"),
    "pre": (5.4, 7.4, 4.4, 1.3, STEP, "vexpress preprocess", "Ray: 25 fps, 4 s clips, insightface faces,\n"
            "512² crops, V-Kps, lips, wav2vec2 features"),
    "shards": (9.7, 7.4, 3.2, 1.3, DATA, "WebDataset shards", "shard-*.tar, index.json,\nrejected.jsonl"),
    "weights": (13.9, 7.4, 4.0, 1.3, DATA, "weights/ (fetch_weights.sh)", "SD1.5 UNet, sd-vae-ft-mse, wav2vec2,\n"
                "AnimateDiff, buffalo_l, V-Express"),
    "s1": (3.4, 4.7, 3.4, 1.3, STEP, "vexpress train stage1", "1 frame: ReferenceNet, UNet\nspatial, V-Kps guider"),
    "s2": (7.6, 4.7, 3.4, 1.3, STEP, "stage2", "12 frames: audio projection,\naudio attention, motion"),
    "s3": (11.8, 4.7, 3.4, 1.3, STEP, "stage3", "12 frames: everything"),
    "ckpt": (14.6, 3.0, 2.8, 1.6, DATA, "runs/sd15/stage3", "checkpoints/step-N/\nexport/ (5 files)\n+ config.yaml"),
    "eval": (6.0, 1.2, 3.8, 1.3, STEP, "vexpress evaluate", "test-set shards -> FID, FVD,\nΔFaceSim, KpsDis, SyncNet"),
    "gen": (12.7, 1.0, 3.6, 1.3, STEP, "vexpress generate", "ref image + audio (+ V-Kps)\n-> mp4 with audio"),
    "mlflow": (1.7, 1.6, 2.8, 2.1, TRACK, "MLflow", "one experiment\nparent run\n├ stage1..3 runs\n└ eval run"),
}
ARROWS = [("raw", "pre"), ("pre", "shards"), ("shards", "s1"), ("weights", "s1"), ("s1", "s2"), ("s2", "s3"),
          ("s3", "ckpt"), ("ckpt", "gen"), ("ckpt", "eval"), ("weights", "s2"), ("s1", "mlflow"), ("eval", "mlflow")]


def _edge(box, toward):
    """The point on ``box``'s border facing the point ``toward``."""
    x, y, w, h = box[:4]
    dx, dy = toward[0] - x, toward[1] - y
    scale = min((w / 2) / abs(dx) if dx else float("inf"), (h / 2) / abs(dy) if dy else float("inf"))
    return x + dx * scale, y + dy * scale


def draw(out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(16, 9), dpi=100)
    ax.set_xlim(0, 16.2)
    ax.set_ylim(0, 8.6)
    ax.axis("off")
    for x, y, w, h, colour, title, detail in BOXES.values():
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04,rounding_size=0.15",
                                    facecolor=colour, edgecolor="#4a4a4a", linewidth=1.2))
        ax.text(x, y + h / 2 - 0.28, title, ha="center", va="center", fontsize=12.5, fontweight="bold")
        ax.text(x, y - 0.12, detail, ha="center", va="center", fontsize=10, linespacing=1.25)
    for a, b in ARROWS:
        start = _edge(BOXES[a], BOXES[b][:2])
        end = _edge(BOXES[b], BOXES[a][:2])
        dashed = b == "mlflow"
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16, linewidth=1.4,
                                     color="#3c7d3c" if dashed else "#333333", linestyle="--" if dashed else "-",
                                     shrinkA=4, shrinkB=4))
    ax.text(0.2, 8.35, "V-Express pipeline: what each step reads and writes", fontsize=15, fontweight="bold")
    ax.text(7.6, 3.65, "train.init_from: the previous stage's folder (its latest export)", ha="center", fontsize=10,
            style="italic", color="#444444")
    for i, (colour, label) in enumerate(((STEP, "a command"), (DATA, "files on disk"), (TRACK, "MLflow"))):
        ax.add_patch(FancyBboxPatch((8.5, 0.95 - 0.45 * i), 0.35, 0.3, boxstyle="round,pad=0.02",
                                    facecolor=colour, edgecolor="#4a4a4a"))
        ax.text(9.0, 1.1 - 0.45 * i, label, va="center", fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs/images/data-flow.png")
    print(draw(ap.parse_args().out))
