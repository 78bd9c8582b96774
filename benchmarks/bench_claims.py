"""The V-Express paper's claims, measured on the CPU demo model (``make demo`` first).

    python benchmarks/bench_claims.py [--demo runs/demo] [--out runs/claims] [--quick] [--seeds 2]

From the demo's stage I checkpoint and seeds, every variant trains stages II and III for the same steps as
the demo (``configs/cpu``) with the real launcher (2 CPU ranks), then generates the held-out clip with the
default inference settings and is measured with the demo summary (``evaluation.summary``) plus the mouth-opening
amplitude:

1. conditional dropout: the paper's V-Kps 50 % / reference 20 % per frame, vs off (0 / 0, the official configs);
2. progressive training: stage I -> II -> III, vs every module trained together from a fresh initialisation for
   the same total number of optimizer steps (the stage II recipe with stage III's freezing, i.e. none);
3. mouth loss weight 100 vs 1 in stages II/III;
4. on the final (paper) model, inference sweeps: audio attention weight 0 / 0.5 / 1 / 2 / 3 (mouth amplitude and
   mouth-audio correlation: the paper's Fig. 3) and reference attention weight 0.80 ... 1.00 (FaceSim and KpsDis).

Variants whose difference is small run with several training seeds (``--seeds``) and report mean and spread.
Everything lands in one MLflow parent run ("claims") with a child per variant and per sweep, and in
``<out>/claims.json``, ``<out>/table.md`` and ``<out>/*.png``. ``--quick``: a smoke run with a few steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

VARIANTS = {  # name -> (dot-list changes for stages II and III, seeds-eligible)
    "paper (dropout 0.5/0.2, mouth 100)": ([], True),
    "conditional dropout off (0/0)": (["train.kps_drop_rate=0", "train.reference_drop_rate=0"], True),
    "mouth loss weight 1": (["train.mouth_loss_weight=1"], True),
}
FROM_SCRATCH = "all modules from scratch (no stages)"
AUDIO_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 3.0)
REFERENCE_WEIGHTS = (0.8, 0.85, 0.9, 0.95, 1.0)
METRICS = ("mouth_audio_corr", "mouth_amplitude", "kpsdis_px", "facesim_ref", "face_found_rate")


class Bench:
    def __init__(self, demo: Path, out: Path, quick: bool, seeds: int) -> None:
        self.demo, self.out, self.quick, self.seeds = demo.resolve(), out.resolve(), quick, seeds
        self.tracking = [f"tracking.tracking_uri=sqlite:///{self.out / 'mlflow.db'}",
                         "tracking.experiment=vexpress-claims", "tracking.parent_run=claims"]
        self.common = [f"model.pretrained.vae={self.demo / 'runs' / 'vae' / 'vae'}",
                       f"data.shards={self.demo / 'shards_latents'}", "train.validate_every=0"]
        self.steps = {2: 20, 3: 10} if quick else self._demo_steps()

    def _demo_steps(self) -> dict[int, int]:
        from infra.config_tree import load

        return {s: load(f"cpu/stage{s}").train.max_steps for s in (2, 3)}

    # ------------------------------------------------------------------ training
    def train(self, stage: int, out: Path, init: Path, changes: list[str], seed: int, steps: int) -> Path:
        """One stage with the real launcher; returns its output folder (resumes if it already finished)."""
        from infra.net import free_port

        if (out / "checkpoints" / "latest").is_file() and (out / "done").is_file():
            return out
        launcher = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_addr",
                    "127.0.0.1", "--master_port", str(free_port())]
        cmd = [*launcher, "training/run.py", "--config", f"cpu/stage{min(stage, 3)}", "--resume", "auto",
               *self.tracking, *self.common, f"train.output_dir={out}", f"train.init_from={init}",
               f"train.max_steps={steps}", f"train.checkpoint_every={steps}", f"train.seed={seed}",
               f"tracking.run_name={out.parent.name}/{out.name}", *changes]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        (out / "done").write_text("ok")
        return out

    def progressive(self, name: str, changes: list[str], seed: int) -> Path:
        root = self.out / _slug(name) / f"seed{seed}"
        stage2 = self.train(2, root / "stage2", self.demo / "runs" / "stage1", changes, seed, self.steps[2])
        return self.train(3, root / "stage3", stage2, changes, seed, self.steps[3])

    def from_scratch(self, seed: int) -> Path:
        """Every module trains from a fresh initialisation, for stage I + II + III's steps together."""
        from infra.config_tree import load
        from model.build import build_modules
        from model.checkpoints import save_vexpress_weights

        root = self.out / _slug(FROM_SCRATCH) / f"seed{seed}"
        init = root / "init"
        cfg = load("cpu/stage3")
        if not (init / "config.yaml").is_file():
            save_vexpress_weights(build_modules(cfg.model, pretrained=False, seed=seed), init, config=cfg.model)
        total = (20 if self.quick else load("cpu/stage1").train.max_steps) + self.steps[2] + self.steps[3]
        return self.train(3, root / "stage3", init, ["train.lr=1e-3"], seed, total)

    # ------------------------------------------------------------------ measuring
    def measure(self, stage_dir: Path, audio_weight: float | None = None,
                reference_weight: float | None = None) -> dict[str, float]:
        import cv2
        import torch
        from PIL import Image

        from evaluation.summary import heldout_clip, summarize_video
        from infra.config_tree import load
        from model.inference_config import sampling_kwargs
        from model.pipeline_loading import load_pipeline
        from perception.face_id import SFaceEmbedder
        from perception.faces import make_face_backend
        from preprocessing.loudness import mouth_opening

        cfg = load("cpu/stage3", [*self.common, "inference.progress=false"])
        latest = stage_dir / "checkpoints" / (stage_dir / "checkpoints" / "latest").read_text().strip() / "export"
        pipe = load_pipeline(cfg, latest)
        size = cfg.model.resolution
        clip = heldout_clip(str(self.demo / "test_shards"))
        n = 40 if self.quick else len(clip["frames"])
        reference = cv2.resize(clip["frames"][0], (size, size), interpolation=cv2.INTER_AREA)
        options = sampling_kwargs(cfg.inference)
        if audio_weight is not None:
            options["audio_attention_weight"] = audio_weight
        if reference_weight is not None:
            options["reference_attention_weight"] = reference_weight
        frames = pipe(reference, clip["kps512"][:n, :3] * (size / 512), num_frames=n, size=size,
                      audio_features=torch.from_numpy(np.asarray(clip["features"], np.float32)), **options).frames
        other = np.asarray(Image.open(self.demo / "holdout" / "other_reference.png").convert("RGB")
                           .resize((size, size)))
        envelope = mouth_opening(clip["audio"], 16000, cfg.inference.fps, n)
        return summarize_video(frames, clip["kps512"][:n], envelope, reference, other, make_face_backend("yunet"),
                               SFaceEmbedder()).as_dict()

    # ------------------------------------------------------------------ the whole run
    def run(self) -> dict:
        results: dict = {"variants": {}, "audio_sweep": {}, "reference_sweep": {}}
        seeds = list(range(1 if self.quick else self.seeds))
        for name, (changes, multi) in VARIANTS.items():
            runs = [self.measure(self.progressive(name, changes, 42 + s)) for s in (seeds if multi else seeds[:1])]
            results["variants"][name] = _aggregate(runs)
            _log(f"{name}: {results['variants'][name]['mean']}")
        results["variants"][FROM_SCRATCH] = _aggregate([self.measure(self.from_scratch(42))])
        final = self.out / _slug(next(iter(VARIANTS))) / "seed42" / "stage3"
        for w in AUDIO_WEIGHTS:
            results["audio_sweep"][w] = self.measure(final, audio_weight=w)
        for w in REFERENCE_WEIGHTS:
            results["reference_sweep"][w] = self.measure(final, reference_weight=w)
        return results


def _aggregate(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {"mean": {k: float(np.nanmean([r[k] for r in runs])) for k in keys},
            "std": {k: float(np.nanstd([r[k] for r in runs])) for k in keys}, "runs": len(runs)}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")[:40]


def _log(msg: str) -> None:
    print(f"[claims {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def format_table(results: dict) -> str:
    lines = ["| variant | runs | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for name, agg in results["variants"].items():
        cells = [f"{agg['mean'][m]:.3f}" + (f" ± {agg['std'][m]:.3f}" if agg["runs"] > 1 else "") for m in METRICS]
        lines.append(f"| {name} | {agg['runs']} | " + " | ".join(cells) + " |")
    lines += ["", "| audio attention weight | mouth amplitude | mouth-audio r | KpsDis px | FaceSim ref |",
              "|---|---|---|---|---|"]
    for w, m in results["audio_sweep"].items():
        lines.append(f"| {float(w):.1f} | {m['mouth_amplitude']:.3f} | {m['mouth_audio_corr']:.3f} | "
                     f"{m['kpsdis_px']:.1f} | {m['facesim_ref']:.3f} |")
    lines += ["", "| reference attention weight | FaceSim ref | KpsDis px | mouth-audio r |", "|---|---|---|---|"]
    for w, m in results["reference_sweep"].items():
        lines.append(f"| {float(w):.2f} | {m['facesim_ref']:.3f} | {m['kpsdis_px']:.1f} | {m['mouth_audio_corr']:.3f} |")
    return "\n".join(lines)


def plot(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key, x_label, series in (
            ("audio_sweep", "audio attention weight", ("mouth_amplitude", "mouth_audio_corr")),
            ("reference_sweep", "reference attention weight", ("facesim_ref", "kpsdis_px"))):
        sweep = results[key]
        xs = [float(w) for w in sweep]
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        for ax, metric in zip(axes, series):
            ax.plot(xs, [sweep[w][metric] for w in sweep], marker="o")
            ax.set_xlabel(x_label)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        fig.suptitle(f"CPU demo model (64 px, minutes of training): {x_label}")
        fig.tight_layout()
        path = out / f"{key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def log_to_mlflow(results: dict, out: Path, files: list[Path]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("vexpress-claims")
    exp_id = exp.experiment_id if exp else client.create_experiment("vexpress-claims")
    found = client.search_runs([exp_id], filter_string="tags.`vexpress.parent` = 'claims'", max_results=1)
    pid = found[0].info.run_id if found else client.create_run(
        exp_id, run_name="claims", tags={"vexpress.parent": "claims"}).info.run_id
    for name, agg in results["variants"].items():
        child = client.create_run(exp_id, run_name=f"result: {name}", tags={"mlflow.parentRunId": pid})
        for k, v in agg["mean"].items():
            client.log_metric(child.info.run_id, k, v)
        client.set_terminated(child.info.run_id)
    for key in ("audio_sweep", "reference_sweep"):
        child = client.create_run(exp_id, run_name=key, tags={"mlflow.parentRunId": pid})
        for step, (w, m) in enumerate(results[key].items()):
            client.log_metric(child.info.run_id, "weight", float(w), step=step)
            for k, v in m.items():
                client.log_metric(child.info.run_id, k, v, step=step)
        client.set_terminated(child.info.run_id)
    for f in files:
        client.log_artifact(pid, str(f))
    client.set_terminated(pid)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", default="runs/demo", help="a finished `make demo` folder")
    ap.add_argument("--out", default="runs/claims")
    ap.add_argument("--quick", action="store_true", help="a smoke run: few steps, one seed, 40 frames")
    ap.add_argument("--seeds", type=int, default=2, help="training seeds for the variants with small differences")
    args = ap.parse_args()
    demo = Path(args.demo)
    if not (demo / "steps" / "train_stage1.done").is_file():
        print(f"bench_claims: {demo} has no finished stage I; run `make demo` first", file=sys.stderr)
        return 2
    out = Path(args.out) / ("quick" if args.quick else "full")
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    results = Bench(demo, out, args.quick, args.seeds).run()
    table = format_table(results)
    (out / "claims.json").write_text(json.dumps(results, indent=2, default=float))
    (out / "table.md").write_text(table + "\n")
    files = [out / "claims.json", out / "table.md", *plot(results, out)]
    log_to_mlflow(results, out, files)
    print(table)
    print(f"{time.time() - start:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
