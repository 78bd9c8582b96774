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
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Step:
    name: str
    command: list[str]
    env: dict[str, str] | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _run_step(step: Step, out: Path, timings: dict[str, float]) -> None:
    marker = out / "steps" / f"{step.name}.done"
    if marker.exists():
        timings[step.name] = json.loads(marker.read_text())["seconds"]
        _log(f"{step.name}: already done ({timings[step.name]:.0f} s last time), skipping")
        return
    _log(f"{step.name}: {' '.join(step.command)}")
    t0 = time.time()
    env = {**os.environ, **(step.env or {})}
    proc = subprocess.run(step.command, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"demo: step {step.name!r} failed with exit code {proc.returncode}; "
                         f"rerun `make demo` to resume from this step")
    timings[step.name] = time.time() - t0
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"seconds": timings[step.name]}))
    _log(f"{step.name}: done in {timings[step.name]:.0f} s")


def build_steps(out: Path) -> list[Step]:
    py = sys.executable
    raw, shards, runs = out / "raw", out / "shards", out / "runs"
    tracking = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    common = [f"tracking.tracking_uri={tracking}", "tracking.experiment=vexpress-demo",
              f"data.shards={shards}"]
    omp = {"OMP_NUM_THREADS": "1"}
    steps = [
        Step("sample_data", [py, "-m", "preprocessing.sample_data", "--out", str(raw)]),
        Step("preprocess", [py, "infra/preprocess.py", "--input", str(raw / "videos"), "--output", str(shards),
                            "--holdout", str(out / "holdout.json"), "preprocess.num_workers=2"]),
    ]
    for stage in (1, 2, 3):
        stage_dir = runs / f"stage{stage}"
        overrides = [*common, f"train.output_dir={stage_dir}"]
        if stage > 1:
            overrides.append(f"train.init_from={runs / f'stage{stage - 1}'}")
        steps.append(Step(
            f"train_stage{stage}",
            ["deepspeed", "--num_gpus", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
             "training/run.py", "--config", f"configs/tiny/stage{stage}.yaml", "--resume", "auto", *overrides],
            env=omp,
        ))
    steps.append(Step("inference", [py, "-m", "model.generate", "--config", "configs/tiny/stage3.yaml",
                                    "--checkpoint", str(runs / "stage3" / "export"),
                                    "--holdout", str(out / "holdout.json"),
                                    "--output", str(out / "generated.mp4")]))
    steps.append(Step("evaluation", [py, "-m", "evaluation.run", "--config", "configs/tiny/stage3.yaml",
                                     "--checkpoint", str(runs / "stage3" / "export"),
                                     "--test-set", str(shards), "--holdout", str(out / "holdout.json"),
                                     f"tracking.tracking_uri={tracking}", "tracking.experiment=vexpress-demo",
                                     f"eval.output_dir={out / 'eval'}"]))
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
    print(f"video:    {out / 'generated.mp4'}")
    print(f"metrics:  {out / 'eval'}")
    print(f"MLflow:   mlflow ui --backend-store-uri sqlite:///{out / 'mlflow.db'} --host 127.0.0.1")


if __name__ == "__main__":
    main()
