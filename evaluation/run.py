"""``python -m evaluation.run``: generate every test video from its own reference frame, audio and V-Kps,
score it against the ground truth, and log the results to MLflow.

    python -m evaluation.run --checkpoint runs/tiny/stage3 \\
        --test-set hdtf=shards/hdtf_test,avspeech=/data/avspeech_test [--config tiny/stage3] [eval.fid_dims=64 ...]

Per test video: reference image = ground-truth frame ``eval.reference_frame``; V-Kps = the video's own
keypoint sequence (eyes + nose) scaled to the model resolution; audio = the video's own track. Frames, clips
and thresholds of every metric follow ``eval.protocol`` (``evaluation/protocols.py``). Outputs in
``eval.output_dir``: ``per_video.csv``, ``metrics.json`` (strict JSON: nan is null), ``table1.txt``,
``distributions.png``, ``audio_weight_sweep.png``, all logged to an MLflow run nested under the training's parent
run, in the training's store and experiment (``infra.tracking.log_evaluation_run``; the ``tracking`` section).
Runs that used any random-weight feature network carry the tag ``random_weights=true`` and
``random_weight_networks=<names>``, and table1.txt and every plot title say so.

``--checkpoint`` takes any form ``model.checkpoint_paths`` resolves (a stage output folder, a step folder, an
export folder, an official five-file folder); the config is the one saved beside it unless ``--config`` is given.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from evaluation import report
from evaluation.scoring import Evaluator
from evaluation.testset import TestVideo, iter_test_videos, parse_test_sets

log = logging.getLogger("evaluation.run")

# (video, audio_attention_weight) -> generated uint8 frames (F, S, S, 3), F = len(video.frames)
GenerateFn = Callable[[TestVideo, float], np.ndarray]


def pipeline_generate_fn(cfg, checkpoint: str | None) -> GenerateFn:
    """Generation with ``model.pipeline.VExpressPipeline`` (built once, on first use)."""
    from model.inference_config import sampling_kwargs
    from model.pipeline_loading import load_pipeline

    pipe = None
    size = cfg.model.resolution

    def generate(video: TestVideo, audio_weight: float) -> np.ndarray:
        nonlocal pipe
        if pipe is None:
            pipe = load_pipeline(cfg, checkpoint)
        ref = video.frames[min(cfg.eval.reference_frame, len(video.frames) - 1)]
        kps = video.kps[:, :3] * (size / video.kps_size)
        audio_kwargs = ({"audio": video.audio} if video.audio is not None
                        else {"audio_features": video.audio_features})
        out = pipe(ref, kps, num_frames=len(video.frames), size=size,
                   **{**sampling_kwargs(cfg.inference), "audio_attention_weight": audio_weight, "progress": False},
                   **audio_kwargs)
        return out.frames

    return generate


@dataclass
class EvalRun:
    results: dict[str, dict[str, float]]
    rows: list[dict]
    table: str
    run_id: str
    output_dir: Path
    random_weights: list[str]


def _mouth_boxes_at(video: TestVideo, size: int) -> np.ndarray:
    from preprocessing.clips import mouth_boxes

    boxes = video.mouth if video.mouth is not None else mouth_boxes(video.kps, video.kps_size)
    return np.asarray(boxes, np.float64) * (size / video.kps_size)


def table_header(evaluator: Evaluator) -> list[str]:
    """Lines above Table 1: random-weight warning, protocol, networks, face detector per test set."""
    lines = []
    warning = report.random_weights_label(evaluator.random_weights)
    if warning:
        lines.append(f"WARNING: {warning}")
    lines.append(evaluator.protocol.describe())
    nets = [f"{n.role} {n.weights}{' [RANDOM WEIGHTS]' if n.random else ''}" for n in evaluator.networks()]
    if nets:
        lines.append("Networks: " + "; ".join(nets))
    for d, s in evaluator.faces.items():
        recorded = f"test set recorded {s.recorded}" if s.recorded else "raw videos: keypoints detected with it"
        ident = f", identity {s.embedder_name}" if evaluator.needs_embedder else ""
        lines.append(f"Faces ({d}): detector {s.backend_name} ({recorded}){ident}")
    return lines


def _evaluate_test_sets(cfg, evaluator: Evaluator, generate_fn: GenerateFn) -> tuple[dict, dict, str]:
    """Generate and score every test video; returns skipped-without-audio counts, the sweep and its title."""
    from evaluation.testset import recorded_face_backend

    ev = cfg.eval
    sweep: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    sweep_title = ""
    skipped: dict[str, int] = {}
    default_w = cfg.inference.audio_attention_weight
    for dataset, path in parse_test_sets(ev.test_set):
        skipped[dataset] = 0
        recorded, recorded_root = recorded_face_backend(path) if Path(path).is_dir() else (None, None)

        def backend_factory(dataset=dataset, recorded=recorded, recorded_root=recorded_root):
            # raw folders need keypoints even when no face metric is on: the evaluation's detector makes them
            return evaluator.setup_dataset(dataset, recorded, recorded_root).backend

        if evaluator.needs_faces and Path(path).is_dir():
            evaluator.setup_dataset(dataset, recorded, recorded_root)
        videos = iter_test_videos(path, dataset, backend_factory, ev.max_videos, ev.max_frames)
        for i, video in enumerate(tqdm(videos, desc=f"evaluating {dataset}", unit="video")):
            if video.audio is None and video.audio_features is None:
                log.warning("%s/%s: no audio; skipped (nothing to drive the generation)", dataset, video.name)
                skipped[dataset] += 1
                continue
            generated = generate_fn(video, default_w)
            row = evaluator.score_video(video, generated)
            log.info("%s/%s: %s", dataset, video.name,
                     {k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
            if not sweep and i < ev.sweep_videos and ev.audio_weight_sweep:
                sweep_title = f"{dataset}/{video.name}"
                boxes = _mouth_boxes_at(video, generated.shape[1])
                for w in ev.audio_weight_sweep:
                    frames = generated if w == default_w else generate_fn(video, w)
                    sweep[w] = (frames, report.mouth_opening(frames, boxes))
    return skipped, sweep, sweep_title


def run_evaluation(cfg, generate_fn: GenerateFn, *, checkpoint: str | None = None, config_name: str = "",
                   face_backend=None, embedder=None, i3d_random_width: float = 1.0) -> EvalRun:
    ev = cfg.eval
    out = Path(ev.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    evaluator = Evaluator(ev, face_backend=face_backend, embedder=embedder, i3d_random_width=i3d_random_width)
    skipped, sweep, sweep_title = _evaluate_test_sets(cfg, evaluator, generate_fn)
    results = {d: evaluator.dataset_metrics(d) for d in evaluator.datasets}
    if not results:
        raise ValueError(f"eval.test_set {ev.test_set!r}: no video was evaluated (skipped without audio: "
                         f"{sum(skipped.values())})")
    for d, metrics in results.items():
        metrics["skipped_no_audio"] = skipped.get(d, 0)
    rows = [r for d in evaluator.datasets for r in evaluator.rows[d]]
    table = report.table1(results, ev.method_name, ev.metrics, table_header(evaluator))
    (out / "table1.txt").write_text(table + "\n")
    artifacts = [report.write_rows_csv(rows, out / "per_video.csv"), out / "table1.txt",
                 report.write_strict_json(results, out / "metrics.json"),
                 report.plot_distributions(rows, out / "distributions.png", ev.metrics, evaluator.random_weights)]
    if sweep:
        artifacts.append(report.plot_audio_weight_sweep(sweep, out / "audio_weight_sweep.png", sweep_title,
                                                        evaluator.random_weights))
    tags = {"random_weights": str(bool(evaluator.random_weights)).lower(),
            "random_weight_networks": ",".join(evaluator.random_weights) or "none",
            "protocol": evaluator.protocol.name, "checkpoint": str(checkpoint or ""), "config": config_name}
    for d, m in results.items():
        for name in ("fid", "fvd"):
            if m.get(f"{name}_rank_deficient") and not np.isnan(m.get(name, np.nan)):
                tags[f"{d}/{name}_rank_deficient"] = "true"
    params = report.flatten_params("eval", ev)
    params.update(report.flatten_params("inference", cfg.inference))
    params["checkpoint"] = str(checkpoint or "")
    params["config"] = config_name
    from infra.tracking import log_evaluation_run

    run_id = log_evaluation_run(cfg, checkpoint, params, results, tags, artifacts)
    return EvalRun(results, rows, table, run_id, out, evaluator.random_weights)


def parse_args(argv=None) -> argparse.Namespace:
    from infra.cli import Parser

    ap = Parser("python -m evaluation.run", description=__doc__.split("\n\n")[0],
                sections=("eval", "inference", "model", "tracking"))
    ap.add_argument("--config", default=None, help="preset name or YAML path (default: the config saved beside "
                    "--checkpoint, else tiny/stage3; sd15/stage3 for an official five-file folder)")
    ap.add_argument("--checkpoint", default=None, help="stage output, step, export or official five-file folder")
    ap.add_argument("--test-set", action="append", default=[],
                    help="shard output folder or folder of videos, optionally name=path; repeatable")
    ap.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. eval.fid_dims=64")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    from infra.cli import run_cli

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    return run_cli("evaluation", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from infra.config_tree import load_for_checkpoint

    overrides = list(args.overrides)
    if args.test_set:
        overrides.append(f"eval.test_set={','.join(args.test_set)}")
    cfg, config_name = load_for_checkpoint(args.config, args.checkpoint, overrides)
    result = run_evaluation(cfg, pipeline_generate_fn(cfg, args.checkpoint), checkpoint=args.checkpoint,
                            config_name=config_name)
    print(result.table)
    if result.random_weights:
        print(f"\nNOTE: random-weight feature networks: {', '.join(result.random_weights)} "
              "(numbers test the plumbing, not quality)")
    print(f"\nMLflow run {result.run_id}; outputs in {result.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
