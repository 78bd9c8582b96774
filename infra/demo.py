"""The main job end to end on the embedded default (``make demo``).

sample data → Ray preprocessing → shards → a VAE fitted to the crops → DeepSpeed stage I → II → III (the CPU
preset, ``configs/cpu``, 2 CPU ranks) → inference on a held-out clip → the summary (``summary.json``: does the
video show the subject, follow the V-Kps, move the mouth with the audio?) → evaluation → MLflow.

Each step writes a ``.done`` marker when it completes, so rerunning resumes instead of redoing; a step
that was interrupted is rerun with its own resume logic (preprocessing skips finished videos, the VAE fit and
training resume from their latest checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.net import free_port

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Step:
    """A named, resumable step: a command line, a callable giving one (paths that exist only once earlier
    steps ran), or an in-process action (a callable of no arguments returning None)."""

    name: str
    command: list[str] | Callable[[], list[str] | None]
    env: dict[str, str] | None = None


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _run_step(step: Step, out: Path, timings: dict[str, float]) -> None:
    marker = out / "steps" / f"{step.name}.done"
    if marker.exists():
        timings[step.name] = json.loads(marker.read_text())["seconds"]
        _log(f"{step.name}: already done ({timings[step.name]:.0f} s last time), skipping")
        return
    t0 = time.time()
    command = step.command() if callable(step.command) else step.command
    if command is None:
        returncode = 0
        _log(f"{step.name}: done in process")
    else:
        _log(f"{step.name}: {' '.join(command)}")
        returncode = subprocess.run(command, cwd=REPO, env={**os.environ, **(step.env or {})}).returncode
    if returncode != 0:
        raise SystemExit(f"demo: step {step.name!r} failed with exit code {returncode}; "
                         f"rerun `make demo` to resume from this step")
    timings[step.name] = time.time() - t0
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"seconds": timings[step.name]}))
    _log(f"{step.name}: done in {timings[step.name]:.0f} s")


HOLDOUT = "good_astronaut_mirror_espeak3.mp4"  # a clip no stage trains on: inference + evaluation use it
DEMO_EXPERIMENT = "vexpress-demo"
PRESET = "configs/cpu"  # the CPU preset: 64 px, a VAE fitted to the crops, log-mel audio (configs/cpu/*.yaml)


def split_inputs(out: Path) -> None:
    """List files for preprocessing: every sample file but the held-out clip trains (bad inputs included,
    so the rejected report shows the robustness paths); the held-out clip is the test set."""
    raw = out / "raw"
    files = sorted(p for p in raw.iterdir() if p.suffix == ".mp4")
    (out / "train_inputs.txt").write_text("".join(f"{p}\n" for p in files if p.name != HOLDOUT))
    (out / "test_inputs.txt").write_text(f"{raw / HOLDOUT}\n")


def export_holdout_inputs(out: Path) -> None:
    """The held-out clip's first frame, audio and V-Kps as files, as a user would pass them to generate, and a
    frame of the other identity (the carphone speaker) for ``facesim_other``."""
    import numpy as np
    from PIL import Image

    from preprocessing.media import write_wav
    from preprocessing.shards import open_dataset

    sample = next(iter(open_dataset(out / "test_shards")))
    dest = out / "holdout"
    dest.mkdir(exist_ok=True)
    Image.fromarray(sample["frames"][0]).save(dest / "reference.png")
    write_wav(dest / "audio.wav", sample["audio"], 16000)
    np.save(dest / "kps.npy", sample["kps"])
    other = next(s for s in open_dataset(out / "shards") if s["__key__"].startswith("good_carphone"))
    Image.fromarray(other["frames"][0]).save(dest / "other_reference.png")


def latest_export(stage_dir: Path) -> Path:
    """The stage's latest exported weights (``model.checkpoint_paths``, as every ``--checkpoint`` resolves)."""
    from model.checkpoint_paths import resolve_checkpoint

    try:
        return resolve_checkpoint(stage_dir).weights
    except OSError as exc:
        raise SystemExit(f"demo: {exc}; rerun to resume training") from exc


def build_steps(out: Path, overrides: list[str] = ()) -> list[Step]:
    py = sys.executable
    raw, runs = out / "raw", out / "runs"
    tracking = [f"tracking.tracking_uri=sqlite:///{out / 'mlflow.db'}", f"tracking.experiment={DEMO_EXPERIMENT}",
                "tracking.parent_run=demo"]
    vae = [f"model.pretrained.vae={runs / 'vae' / 'vae'}"]
    launcher = [str(Path(py).parent / "deepspeed"), "--num_gpus", "2", "--master_addr", "127.0.0.1"]
    stage3 = f"{PRESET}/stage3.yaml"
    steps = [
        Step("sample_data", [py, "-m", "preprocessing.sample_data", "--out", str(raw)]),
        Step("split_inputs", lambda: split_inputs(out)),
        Step("preprocess_train", [py, "infra/preprocess.py", "--config", f"{PRESET}/stage1.yaml",
                                  "--input", str(out / "train_inputs.txt"), "--output", str(out / "shards"),
                                  "preprocess.num_workers=2"]),
        Step("preprocess_test", [py, "infra/preprocess.py", "--config", f"{PRESET}/stage1.yaml",
                                 "--input", str(out / "test_inputs.txt"), "--output", str(out / "test_shards"),
                                 "preprocess.num_workers=1"]),
        Step("fit_vae", [py, "-m", "training.fit_vae", "--config", f"{PRESET}/stage1.yaml", *tracking,
                         f"data.shards={out / 'shards'}", f"vae.output_dir={runs / 'vae'}",
                         f"vae.eval_shards={out / 'test_shards'}", *overrides]),
        # Training reads latents of the fitted VAE instead of decoding and encoding video every step.
        Step("latents", lambda: [py, "-m", "preprocessing.latents", "--shards", str(out / "shards"),
                                 "--output", str(out / "shards_latents"), "--vae", str(runs / "vae" / "vae"),
                                 "--resolution", str(_resolution())]),
    ]
    for stage in (1, 2, 3):
        stage_args = [*tracking, *vae, f"data.shards={out / 'shards_latents'}",
                      f"train.output_dir={runs / f'stage{stage}'}", f"train.validation_shards={out / 'test_shards'}",
                      *overrides]
        if stage > 1:
            stage_args.append(f"train.init_from={runs / f'stage{stage - 1}'}")
        steps.append(Step(
            f"train_stage{stage}",
            lambda stage=stage, stage_args=stage_args: [
                *launcher, "--master_port", str(free_port()), "training/run.py",
                "--config", f"{PRESET}/stage{stage}.yaml", "--resume", "auto", *stage_args],
            env={"OMP_NUM_THREADS": "1"},
        ))
    holdout = out / "holdout"
    steps.append(Step("holdout_inputs", lambda: export_holdout_inputs(out)))
    steps.append(Step("inference", lambda: [
        py, "-m", "model.generate", "--config", stage3, "--checkpoint", str(latest_export(runs / "stage3")),
        "--reference", str(holdout / "reference.png"), "--audio", str(holdout / "audio.wav"),
        "--kps", str(holdout / "kps.npy"), "--output", str(out / "generated.mp4"), *vae,
        f"inference.kps_image_size={_crop_size(out)}", *overrides]))
    steps.append(Step("summary", lambda: [
        py, "-m", "evaluation.summary", "--config", stage3, "--checkpoint", str(latest_export(runs / "stage3")),
        "--test-shards", str(out / "test_shards"), "--generated", str(out / "generated.mp4"),
        "--other-reference", str(holdout / "other_reference.png"), "--output", str(out / "summary_metrics.json"),
        *vae, *overrides]))
    steps.append(Step("evaluation", lambda: [
        py, "-m", "evaluation.run", "--config", stage3,
        "--checkpoint", str(latest_export(runs / "stage3")), "--test-set", f"holdout={out / 'test_shards'}", *vae,
        f"eval.output_dir={out / 'eval'}", *tracking, "eval.allow_rank_deficient=true", "eval.fid_dims=64",
        "eval.max_videos=1", "eval.max_frames=50",
        "eval.sweep_videos=0", *overrides]))
    return steps


def _resolution() -> int:
    from infra.config_tree import load

    return load(f"{PRESET}/stage1.yaml").model.resolution


def _crop_size(out: Path) -> int:
    """The crop size the test shards were written at (their keypoints are pixels of that square)."""
    from preprocessing.shards import read_index

    return int(read_index(out / "test_shards")["config"]["crop_size"])


def write_summary(out: Path, timings: dict[str, float]) -> dict:
    """``summary.json``: the held-out metrics, the VAE's PSNR, each step's wall time and the total."""
    summary = json.loads((out / "summary_metrics.json").read_text())
    vae = json.loads((out / "runs" / "vae" / "metrics.json").read_text())
    summary["vae_psnr_db"] = vae["psnr_db"]
    summary["seconds"] = {name: round(secs, 1) for name, secs in timings.items()}
    summary["total_seconds"] = round(sum(timings.values()), 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo", help="output folder (rerun with the same folder to resume)")
    ap.add_argument("overrides", nargs="*", help="dot-list overrides for every step that reads the config, e.g. "
                    "train.max_steps=4 vae.max_steps=20 (a quick smoke run)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.time()
    for step in build_steps(out, args.overrides):
        _run_step(step, out, timings)
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    _log("finished in %.0f s" % (time.time() - t0))
    from evaluation.summary import format_summary

    summary = write_summary(out, timings)
    print(format_summary(summary))
    print(f"{'step':<32} {'seconds':>10}")
    for name, secs in timings.items():
        print(f"  {name:<30} {secs:10.0f}")
    print(f"  {'total':<30} {summary['total_seconds']:10.0f}")
    print(f"shards:   {out / 'shards' / 'index.json'} (rejected inputs: {out / 'shards' / 'rejected.jsonl'})")
    print(f"weights:  {', '.join(str(latest_export(out / 'runs' / f'stage{s}')) for s in (1, 2, 3))}")
    print(f"video:    {out / 'generated.mp4'} (validation strips: {out / 'runs' / 'stage3' / 'validation'})")
    print(f"summary:  {out / 'summary.json'}")
    print(f"metrics:  {out / 'eval' / 'table1.txt'}")
    print(f"MLflow:   {mlflow_hint(out)}")


def mlflow_hint(out: Path) -> str:
    """The command that serves the demo's store and the URL of its runs table."""
    from mlflow.tracking import MlflowClient

    from infra.tracking import ui_hint

    uri = f"sqlite:///{out / 'mlflow.db'}"
    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(DEMO_EXPERIMENT)
    return ui_hint(uri, exp.experiment_id if exp else "0").removeprefix("MLflow runs: ")


if __name__ == "__main__":
    main()
