"""The stage trainer: an explicit :class:`TrainState` and a train loop made of short named steps.

    setup:  distributed -> modules (+ previous stage's weights) -> staged freezing (asserted) -> engine
            -> [resume] -> data -> tracking
    loop:   next batches -> forward/backward (grad accumulation) -> optimizer step -> metrics
            -> checkpoint every N -> validation video every K
    end:    final checkpoint + exported safetensors (official five-file layout)

Checkpoints: ``<output_dir>/checkpoints/step-000010/`` holds DeepSpeed's files, one ``train_state`` file per
rank (step, data position, RNG states), ``config.yaml`` and ``export/`` (the five module files + config).
``checkpoints/latest`` names the newest folder; it is written to a temp file and renamed, after every rank
saved, so it never points at a partial checkpoint. The last ``train.keep_last`` folders are kept.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from infra.config import save_config
from training import checkpoint_files
from training.checkpoint_files import LATEST, load_train_state, rng_states, set_rng_states
from training.data import DataPosition, make_loader
from training.engine import Engine, build_engine, device, init_distributed
from training.losses import LossTerms, diffusion_loss
from training.step import VExpressTrainModule, make_step_inputs
from training.tracking import Tracker

log = logging.getLogger(__name__)


def step_tag(step: int) -> str:
    return f"step-{step:06d}"


# ------------------------------------------------------------------------------------------ state
@dataclass
class TrainState:
    """Everything besides model/optimizer/schedule that resuming needs, per rank."""

    step: int = 0  # optimizer steps done
    samples: int = 0  # samples this rank consumed
    data: DataPosition = field(default_factory=DataPosition)
    generator: torch.Generator = field(default_factory=torch.Generator)  # noise, timesteps, dropout

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain types only: the file loads with ``torch.load(weights_only=True)``."""
        return {"step": self.step, "samples": self.samples, "data": self.data.state_dict(),
                "generator": self.generator.get_state(), "rng": rng_states()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.samples = state["step"], state["samples"]
        self.data = DataPosition.from_state_dict(state["data"])
        self.generator.set_state(state["generator"])
        if "rng" in state:
            set_rng_states(state["rng"])
            return
        random.setstate(state["python_rng"])  # the layout before RNG states were stored as tensors
        np.random.set_state(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


# ------------------------------------------------------------------------------------------ helpers
def check_trainable(modules: nn.Module, stage: int) -> dict[str, int]:
    """Raise unless exactly ``model.stages``' parameters for ``stage`` require grad; return the counts."""
    from model.stages import trainable_parameter_names

    intended = set(trainable_parameter_names(modules, stage))
    params = dict(modules.named_parameters())
    actual = {n for n, p in params.items() if p.requires_grad}
    if actual != intended:
        extra, missing = sorted(actual - intended)[:5], sorted(intended - actual)[:5]
        raise RuntimeError(f"stage {stage}: trainable parameters differ from model.stages: "
                           f"{len(actual - intended)} unexpected (e.g. {extra}), {len(intended - actual)} missing "
                           f"(e.g. {missing})")
    counts = {"trainable_tensors": len(actual), "frozen_tensors": len(params) - len(actual),
              "trainable_params": sum(params[n].numel() for n in actual),
              "frozen_params": sum(p.numel() for n, p in params.items() if n not in actual)}
    return counts


def resolve_init_weights(init_from: str) -> Path:
    """``train.init_from``: any ``--checkpoint`` form (a stage output folder, a step folder, an export folder)."""
    from model.checkpoint_paths import resolve_checkpoint

    try:
        return resolve_checkpoint(init_from).weights
    except OSError as exc:
        raise FileNotFoundError(f"train.init_from={init_from!r}: {exc}; run the previous stage first") from exc


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


# ------------------------------------------------------------------------------------------ trainer
@dataclass
class StepMetrics:
    loss: float
    loss_mouth: float
    lr: float
    grad_norm: float
    step_time: float
    samples_per_s: float
    memory_gb: float


class Trainer:
    """One stage. ``hooks`` are called as ``hook(trainer, metrics)`` after every optimizer step (tests)."""

    def __init__(self, cfg: Any, resume: str | None = None,
                 hooks: tuple[Callable[[Trainer, StepMetrics], None], ...] = ()) -> None:
        self.cfg, self.resume, self.hooks = cfg, resume, hooks
        self.out = Path(cfg.train.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.history: list[StepMetrics] = []

    # -------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        from training.preflight import check_inputs

        check_inputs(self.cfg, self.resume)  # wrong paths fail here, before DeepSpeed starts
        self.rank, self.world = init_distributed()
        self.is_main = self.rank == 0
        self.device = device()
        seed_everything(self.cfg.train.seed + self.rank)
        self.modules = self.build_modules()
        self.freeze_for_stage()
        self.vae, self.alphas_cumprod = self.build_frozen_parts()
        self.engine: Engine = build_engine(VExpressTrainModule(self.modules), self.cfg.train)
        self.modules = self.engine.module.vexpress
        self.state = TrainState(data=DataPosition(seed=self.cfg.data.seed, world_size=self.world,
                                                  num_workers=max(self.cfg.data.num_workers, 1)))
        self.state.generator.manual_seed(self.cfg.train.seed * 1000 + self.rank)
        resumed = self.restore_checkpoint() if self.resume else False
        self.batches = self.make_batches()
        self.tracker = Tracker(self.cfg, enabled=self.is_main)
        self.tracker.start(resume=resumed)
        if self.is_main and not resumed:
            self.out.mkdir(parents=True, exist_ok=True)
            self.tracker.log_artifact(save_config(self.cfg, self.out / "config.yaml"))
            self.tracker.log_params({f"count.{k}": v for k, v in self.counts.items()})

    def build_modules(self) -> nn.Module:
        from model.build import build_modules

        modules = build_modules(self.cfg.model)
        if self.cfg.train.stage > 1 or self.cfg.train.init_from:
            if not self.cfg.train.init_from:
                raise ValueError(f"train.init_from: stage {self.cfg.train.stage} starts from the previous stage's "
                                 "output; name its output folder")
            from model.checkpoints import load_vexpress_weights

            source = resolve_init_weights(self.cfg.train.init_from)
            load_vexpress_weights(modules, source)  # everything the previous stage learned, nothing re-zeroed
            self._log(f"initialised from {source}")
        if self.cfg.train.stage == 2 and self.cfg.model.pretrained.motion_module:
            from model.pretrained import load_motion_modules  # AnimateDiff motion prior, as the official stage 2

            load_motion_modules(modules.denoising_unet, self.cfg.model.pretrained.motion_module)
        if self.cfg.train.gradient_checkpointing:
            for m in modules.children():  # the UNets (the guider and audio projection are small)
                if getattr(m, "_supports_gradient_checkpointing", False):
                    m.enable_gradient_checkpointing()
        return modules

    def freeze_for_stage(self) -> None:
        from model.stages import set_trainable

        set_trainable(self.modules, self.cfg.train.stage)
        self.counts = check_trainable(self.modules, self.cfg.train.stage)
        self._log(f"stage {self.cfg.train.stage}: {self.counts['trainable_tensors']} trainable tensors "
                  f"({self.counts['trainable_params']:,} params), {self.counts['frozen_tensors']} frozen "
                  f"({self.counts['frozen_params']:,} params)")

    def build_frozen_parts(self) -> tuple[nn.Module | None, torch.Tensor]:
        from model.build import build_noise_scheduler, build_vae

        scheduler = build_noise_scheduler("ddim")
        vae = build_vae(self.cfg.model).to(self.device).eval().requires_grad_(False)
        return vae, scheduler.alphas_cumprod.float()

    def make_batches(self) -> Iterator[dict[str, Any]]:
        loader, self.state.data = make_loader(self.cfg.data, self.cfg.model, self.cfg.train.stage,
                                              self.cfg.train.batch_size, self.rank, self.world, self.state.data)
        return iter(loader)

    # -------------------------------------------------------------------------------- loop
    def run(self) -> list[StepMetrics]:
        self.setup()
        status = "FAILED"
        try:
            self.train()
            status = "FINISHED"
        finally:
            self.tracker.end(status)
        return self.history

    def train(self) -> None:
        from tqdm import tqdm

        cfg = self.cfg.train
        bar = tqdm(total=cfg.max_steps, initial=self.state.step, disable=not self.is_main, desc=f"stage {cfg.stage}")
        saved_at = -1
        while self.state.step < cfg.max_steps:
            metrics = self.train_step()
            self.state.step += 1
            self.record(metrics)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics.loss:.4f}")
            if self.state.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
                saved_at = self.state.step
            if cfg.validate_every and self.state.step % cfg.validate_every == 0:
                self.validate()
            for hook in self.hooks:
                hook(self, metrics)
        bar.close()
        if saved_at != self.state.step:
            self.save_checkpoint()
        self.log_final_artifacts()

    def train_step(self) -> StepMetrics:
        start = time.perf_counter()
        total = mouth = 0.0
        samples = 0
        for _ in range(self.cfg.train.grad_accum):
            batch = self.next_batch()
            terms = self.forward_backward(batch)
            self.engine.step()
            total += float(terms.total.detach()) / self.cfg.train.grad_accum
            mouth += float(terms.mouth) / self.cfg.train.grad_accum
            samples += batch["target"].shape[0]
        elapsed = time.perf_counter() - start
        self.state.samples += samples
        return StepMetrics(loss=total, loss_mouth=mouth, lr=self.engine.lr(), grad_norm=self.engine.grad_norm(),
                           step_time=elapsed, samples_per_s=samples * self.world / elapsed,
                           memory_gb=self.memory_gb())

    def next_batch(self) -> dict[str, Any]:
        batch = next(self.batches)
        self.state.data.advance(batch)
        return batch

    def forward_backward(self, batch: dict[str, Any]) -> LossTerms:
        inputs = make_step_inputs(batch, self.vae, self.alphas_cumprod, self.cfg.train, self.state.generator,
                                  self.device, self.vae.config.scaling_factor)
        pred = self.engine.forward(**inputs.model_inputs)
        terms = diffusion_loss(pred, inputs.target, inputs.mouth_mask, self.cfg.train.mouth_loss_weight,
                               inputs.sample_weights)
        self.engine.backward(terms.total)
        return terms

    def memory_gb(self) -> float:
        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**30
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # peak RSS (KiB -> GiB)

    def record(self, m: StepMetrics) -> None:
        self.history.append(m)
        if self.state.step % self.cfg.train.log_every == 0 or self.state.step == self.cfg.train.max_steps:
            self.tracker.log_metrics({"loss": m.loss, "loss_mouth": m.loss_mouth, "lr": m.lr,
                                      "grad_norm": m.grad_norm, "step_time_s": m.step_time,
                                      "samples_per_s": m.samples_per_s, "memory_gb": m.memory_gb}, self.state.step)

    # -------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        tag = step_tag(self.state.step)
        folder = self.ckpt_root / tag
        if self.is_main:  # a folder being rewritten (a resumed run saving the same step again) is not resumable
            checkpoint_files.mark_saving(folder, self.state.step)
        self.engine.save(self.ckpt_root, tag)
        (folder / "train_state").mkdir(parents=True, exist_ok=True)
        torch.save(self.state.state_dict(), folder / "train_state" / f"rank-{self.rank:05d}.pt")
        self.export_weights(folder / "export")
        _barrier()
        if self.is_main:
            save_config(self.cfg, folder / "config.yaml")
            checkpoint_files.write_manifest(folder, self.state.step, self.cfg.train.checkpoint_checksums)
            tmp = self.ckpt_root / f".{LATEST}.tmp"
            tmp.write_text(tag)
            os.replace(tmp, self.ckpt_root / LATEST)
            self.prune_checkpoints()
            self._log(f"checkpoint {folder}")
        _barrier()
        return folder

    def export_weights(self, folder: Path) -> None:
        from model.checkpoints import save_vexpress_weights

        with self.engine.full_state_dict() as module:
            if self.is_main:
                save_vexpress_weights(module.vexpress, folder, config=self.cfg)  # the whole tree: generate/evaluate read it

    def prune_checkpoints(self) -> None:
        steps = sorted(p for p in self.ckpt_root.glob("step-*") if p.is_dir())
        for old in steps[:-self.cfg.train.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    def restore_checkpoint(self) -> bool:
        # A checkpoint whose files differ from its manifest is refused (explicit folder) or skipped for the
        # previous one (auto), by rank 0 for every rank.
        found = checkpoint_files.choose_on_rank0(self.ckpt_root, self.resume, self.is_main)
        if found is None:
            self._log(f"--resume auto: no checkpoint under {self.ckpt_root}, starting fresh")
            return False
        self.ckpt_root, tag = found
        state_file = self.ckpt_root / tag / "train_state" / f"rank-{self.rank:05d}.pt"
        if not state_file.is_file():
            raise FileNotFoundError(f"{state_file}: missing; was the checkpoint written with a different world size?")
        self.engine.load(self.ckpt_root, tag)
        self.state.load_state_dict(load_train_state(state_file))
        self._log(f"resumed from {self.ckpt_root / tag} at step {self.state.step}")
        return True

    # -------------------------------------------------------------------------------- artifacts
    def validate(self) -> None:
        if self.is_main:
            from training.validation import render_validation_video

            with self.engine.full_state_dict() as module:
                files = render_validation_video(self.cfg, module.vexpress, self.vae, self.state.step, self.out)
            for path in files:
                self.tracker.log_artifact(path, "validation")
        _barrier()

    def log_final_artifacts(self) -> None:
        if self.is_main:
            latest = self.ckpt_root / (self.ckpt_root / LATEST).read_text().strip()
            self.tracker.log_artifact(latest / "export", "weights")
            self.tracker.log_artifact(latest / "config.yaml", "config")

    def _log(self, message: str) -> None:
        if self.is_main:
            log.info(message)
