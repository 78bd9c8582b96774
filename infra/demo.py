"""The main job end to end on the embedded default (``make demo``).

sample data → Ray preprocessing → shards → DeepSpeed stage I → II → III (tiny preset, 2 CPU ranks)
→ inference on a held-out clip → evaluation → MLflow.

Each step writes a ``.done`` marker when it completes, so rerunning resumes instead of redoing; a step
that was interrupted is rerun with its own resume logic (preprocessing skips finished videos, training
resumes from its latest checkpoint).
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


def split_inputs(out: Path) -> None:
    """List files for preprocessing: every sample file but the held-out clip trains (bad inputs included,
    so the rejected report shows the robustness paths); the held-out clip is the test set."""
    raw = out / "raw"
    files = sorted(p for p in raw.iterdir() if p.suffix == ".mp4")
    (out / "train_inputs.txt").write_text("".join(f"{p}\n" for p in files if p.name != HOLDOUT))
    (out / "test_inputs.txt").write_text(f"{raw / HOLDOUT}\n")


def export_holdout_inputs(out: Path) -> None:
    """The held-out clip's first frame, audio and V-Kps as files, as a user would pass them to generate."""
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


def latest_export(stage_dir: Path) -> Path:
    latest = stage_dir / "checkpoints" / "latest"
    if not latest.is_file():
        raise SystemExit(f"demo: {stage_dir} has no checkpoints/latest; rerun to resume training")
    return stage_dir / "checkpoints" / latest.read_text().strip() / "export"


def build_steps(out: Path) -> list[Step]:
    py = sys.executable
    raw, runs = out / "raw", out / "runs"
    tracking = [f"tracking.tracking_uri=sqlite:///{out / 'mlflow.db'}", "tracking.experiment=vexpress-demo",
                "tracking.parent_run=demo"]
    launcher = [str(Path(py).parent / "deepspeed"), "--num_gpus", "2", "--master_addr", "127.0.0.1"]
    steps = [
        Step("sample_data", [py, "-m", "preprocessing.sample_data", "--out", str(raw)]),
        Step("split_inputs", lambda: split_inputs(out)),
        Step("preprocess_train", [py, "infra/preprocess.py", "--input", str(out / "train_inputs.txt"),
                                  "--output", str(out / "shards"), "preprocess.num_workers=2"]),
        Step("preprocess_test", [py, "infra/preprocess.py", "--input", str(out / "test_inputs.txt"),
                                 "--output", str(out / "test_shards"), "preprocess.num_workers=1"]),
    ]
    for stage in (1, 2, 3):
        overrides = [*tracking, f"data.shards={out / 'shards'}", f"train.output_dir={runs / f'stage{stage}'}"]
        if stage > 1:
            overrides.append(f"train.init_from={runs / f'stage{stage - 1}'}")
        steps.append(Step(
            f"train_stage{stage}",
            lambda stage=stage, overrides=overrides: [
                *launcher, "--master_port", str(free_port()), "training/run.py",
                "--config", f"configs/tiny/stage{stage}.yaml", "--resume", "auto", *overrides],
            env={"OMP_NUM_THREADS": "1"},
        ))
    steps.append(Step("holdout_inputs", lambda: export_holdout_inputs(out)))
    steps.append(Step("inference", lambda: [
        py, "-m", "model.generate", "--config", "configs/tiny/stage3.yaml",
        "--checkpoint", str(latest_export(runs / "stage3")),
        "--reference", str(out / "holdout/reference.png"), "--audio", str(out / "holdout/audio.wav"),
        "--kps", str(out / "holdout/kps.npy"), "--output", str(out / "generated.mp4")]))
    steps.append(Step("evaluation", lambda: [
        py, "-m", "evaluation.run", "--config", "configs/tiny/stage3.yaml",
        "--checkpoint", str(latest_export(runs / "stage3")), "--test-set", f"holdout={out / 'test_shards'}",
        f"eval.output_dir={out / 'eval'}", f"eval.tracking_uri=sqlite:///{out / 'mlflow.db'}",
        "eval.experiment=vexpress-demo", "eval.allow_rank_deficient=true", "eval.fid_dims=64"]))
    return steps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo", help="output folder (rerun with the same folder to resume)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.time()
    for step in build_steps(out):
        _run_step(step, out, timings)
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    _log("finished in %.0f s" % (time.time() - t0))
    for name, secs in timings.items():
        print(f"  {name:<14} {secs:7.0f} s")
    print(f"shards:   {out / 'shards' / 'index.json'} (rejected inputs: {out / 'shards' / 'rejected.jsonl'})")
    print(f"weights:  {', '.join(str(latest_export(out / 'runs' / f'stage{s}')) for s in (1, 2, 3))}")
    print(f"video:    {out / 'generated.mp4'}")
    print(f"metrics:  {out / 'eval' / 'table1.txt'}")
    print(f"MLflow:   mlflow ui --backend-store-uri sqlite:///{out / 'mlflow.db'} --host 127.0.0.1")


if __name__ == "__main__":
    main()
