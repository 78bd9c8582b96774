"""Fit a small ``AutoencoderKL`` to the training crops: the CPU preset's VAE.

    python -m training.fit_vae --config configs/cpu/stage1.yaml data.shards=<shards> vae.output_dir=<dir> \
        [vae.eval_shards=<held-out shards>] [vae.max_steps=1000 ...]

The SD VAE (sd-vae-ft-mse) is what the sd15 preset uses; at 64 px a random VAE cannot reconstruct a face, and
no small pretrained one can be downloaded here, so the CPU preset fits its own (architecture from the
``model.vae_*`` fields) on the frames of ``data.shards``, resized to ``model.resolution``:

- loss: L1 reconstruction of a posterior sample + ``vae.kl_weight`` x KL, AdamW with a cosine learning rate,
  random horizontal flips;
- resumable: ``<output_dir>/checkpoint.pt`` every ``vae.checkpoint_every`` steps (weights, optimizer, step, RNG);
- output: ``<output_dir>/vae/`` (a diffusers folder: ``model.pretrained.vae`` points the stages at it) with
  ``scaling_factor`` set so its latents have unit variance, ``metrics.json`` (PSNR of the held-out frames,
  steps, seconds) and ``reconstructions.png`` (originals above reconstructions), all logged to MLflow.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("training.fit_vae")


def load_frames(shards: str, size: int) -> torch.Tensor:
    """Every frame of every sample in a shard folder, resized to ``size``² and scaled to [-1, 1]."""
    from preprocessing.latents import resize_frames
    from preprocessing.shards import open_dataset

    clips = [resize_frames(s["frames"], size) for s in open_dataset(shards)]  # (3, n, size, size) each
    if not clips:
        raise ValueError(f"{shards}: no samples to fit the VAE on")
    return torch.cat([c.permute(1, 0, 2, 3) for c in clips])


def psnr_db(vae, frames: torch.Tensor, batch: int = 64) -> float:
    """Mean PSNR (dB, images in [0, 1]) of reconstructions from the posterior mean."""
    values = []
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            x = frames[i:i + batch]
            rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            mse = ((rec - x) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
            values.append(10 * torch.log10(1 / mse))
    return float(torch.cat(values).mean())


def latent_std(vae, frames: torch.Tensor, batch: int = 64) -> float:
    with torch.no_grad():
        means = [vae.encode(frames[i:i + batch]).latent_dist.mean for i in range(0, len(frames), batch)]
    return float(torch.cat(means).std())


class VaeFitter:
    def __init__(self, cfg) -> None:
        self.cfg, self.fit = cfg, cfg.vae
        self.out = Path(self.fit.output_dir)
        self.ckpt = self.out / "checkpoint.pt"

    def build(self):
        from model.build import build_vae
        from model.config import PretrainedPaths

        # Always the random architecture of model.vae_*: model.pretrained.vae is where the result goes.
        return build_vae(dataclasses.replace(self.cfg.model, pretrained=PretrainedPaths()), seed=self.fit.seed)

    def run(self) -> dict:
        if (self.out / "metrics.json").is_file() and (self.out / "vae" / "config.json").is_file():
            metrics = json.loads((self.out / "metrics.json").read_text())
            log.info("VAE already fitted in %s (PSNR %.2f dB); nothing to do", self.out, metrics["psnr_db"])
            return metrics
        if self.fit.threads:
            torch.set_num_threads(self.fit.threads)
        frames = load_frames(self.cfg.data.shards, self.cfg.model.resolution)
        held_out = load_frames(self.fit.eval_shards, self.cfg.model.resolution) if self.fit.eval_shards else frames
        log.info("fitting the VAE on %d frames of %s (%d held out for PSNR)", len(frames), self.cfg.data.shards,
                 len(held_out))
        vae = self.build()
        optimizer = torch.optim.AdamW(vae.parameters(), lr=self.fit.lr, weight_decay=0.0)
        generator = torch.Generator().manual_seed(self.fit.seed)
        first, seconds = self.restore(vae, optimizer, generator)
        tracker = self.tracker(resume=first > 0)
        start = time.perf_counter() - seconds
        from tqdm import tqdm

        for step in tqdm(range(first, self.fit.max_steps), initial=first, total=self.fit.max_steps, desc="fit VAE"):
            loss = self.train_step(vae, optimizer, frames, generator, step)
            if (step + 1) % 10 == 0:
                tracker.log_metrics({"vae_loss": loss}, step + 1)
            if (step + 1) % self.fit.checkpoint_every == 0 and step + 1 < self.fit.max_steps:
                self.save_checkpoint(vae, optimizer, generator, step + 1, time.perf_counter() - start)
        metrics = self.finish(vae, frames, held_out, time.perf_counter() - start, tracker)
        tracker.end()
        return metrics

    def train_step(self, vae, optimizer, frames, generator, step: int) -> float:
        lr = float(self.fit.lr * 0.5 * (1 + np.cos(np.pi * step / self.fit.max_steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = frames[torch.randint(0, len(frames), (self.fit.batch_size,), generator=generator)]
        if step % 2:
            x = x.flip(-1)
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        loss = (reconstruction - x).abs().mean() + self.fit.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def save_checkpoint(self, vae, optimizer, generator, step: int, seconds: float) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save({"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "generator": generator.get_state(), "seconds": seconds}, tmp)
        os.replace(tmp, self.ckpt)

    def restore(self, vae, optimizer, generator) -> tuple[int, float]:
        if not self.ckpt.is_file():
            return 0, 0.0
        try:
            state = torch.load(self.ckpt, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a torn or foreign file: say which, keep the file for the user
            raise ValueError(f"{self.ckpt}: cannot resume the VAE fit from this checkpoint ({type(exc).__name__}); "
                             "delete it to start the fit again") from exc
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        log.info("resuming the VAE fit at step %d from %s", state["step"], self.ckpt)
        return int(state["step"]), float(state["seconds"])

    def tracker(self, resume: bool):
        from training.tracking import Tracker

        cfg = dataclasses.replace(self.cfg, train=dataclasses.replace(self.cfg.train, output_dir=str(self.out)),
                                  tracking=dataclasses.replace(self.cfg.tracking,
                                                               run_name=self.cfg.tracking.run_name or "vae"))
        tracker = Tracker(cfg, enabled=True)
        tracker.start(resume=resume)
        return tracker

    def finish(self, vae, frames, held_out, seconds: float, tracker) -> dict:
        vae.eval()
        vae.register_to_config(scaling_factor=1.0 / latent_std(vae, frames))
        folder = self.out / "vae"
        tmp = self.out / "vae.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        vae.save_pretrained(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        metrics = {"psnr_db": psnr_db(vae, held_out), "train_psnr_db": psnr_db(vae, frames[:256]),
                   "scaling_factor": float(vae.config.scaling_factor), "steps": self.fit.max_steps,
                   "seconds": round(seconds, 1), "frames": len(frames), "held_out_frames": len(held_out)}
        strip = self.out / "reconstructions.png"
        save_reconstruction_strip(vae, held_out, strip)
        tracker.log_metrics({k: metrics[k] for k in ("psnr_db", "train_psnr_db", "scaling_factor")},
                            self.fit.max_steps)
        tracker.log_artifact(strip, "validation")
        tracker.log_artifact(folder, "vae")
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        self.ckpt.unlink(missing_ok=True)
        log.info("VAE: %s (held-out PSNR %.2f dB, %d steps, %.0f s)", folder, metrics["psnr_db"],
                 self.fit.max_steps, seconds)
        return metrics


def save_reconstruction_strip(vae, frames: torch.Tensor, path: Path, count: int = 8) -> Path:
    """Originals (top row) above their reconstructions (bottom row), evenly spaced through ``frames``."""
    from PIL import Image

    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    x = frames[idx]
    with torch.no_grad():
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    rows = [torch.cat(list(t), dim=2) for t in (x, rec)]  # (3, h, n*w) each
    image = ((torch.cat(rows, dim=1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.fit_vae", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="preset name (cpu/stage1) or YAML path")
    ap.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. vae.max_steps=500")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from infra.cli import run_cli
    from infra.config_tree import load

    def fit() -> int:
        VaeFitter(load(args.config, args.overrides)).run()
        return 0

    return run_cli("training.fit_vae", fit)


if __name__ == "__main__":
    raise SystemExit(main())
