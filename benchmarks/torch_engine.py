"""A plain-PyTorch twin of ``training.engine.DeepSpeedEngine`` for the step benchmark and the equivalence test.

Same interface (``training.engine.Engine``) and the same math: AdamW, linear warmup, clipping, accumulation; wrapped
in ``DistributedDataParallel`` when a process group of more than one rank is up. Training itself always runs
DeepSpeed; this exists so its step time, memory and results can be compared with the loop it replaces.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.config import TrainConfig
from training.engine import clip_or_measure, lr_lambda, make_optimizer, resolve_precision


class TorchEngine:
    """Plain PyTorch with the same semantics (AdamW, warmup, clipping, accumulation), wrapped in
    ``DistributedDataParallel`` when a process group of more than one rank is up."""

    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        self.precision = resolve_precision(cfg.precision)
        self.dtype = {"bf16": torch.bfloat16}.get(self.precision, torch.float32)
        self.module = model.to(self.dtype)
        self.wrapped = self.module
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            # static graph: the same parameters are used every step, and some never are (the ReferenceNet's last
            # up-block feeds nothing), which DDP otherwise rejects
            self.wrapped = nn.parallel.DistributedDataParallel(self.module, static_graph=True)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.grad_accum, self.max_grad_norm = cfg.grad_accum, cfg.max_grad_norm
        self.micro = 0
        self._grad_norm = float("nan")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.wrapped(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def step(self) -> bool:
        self.micro += 1
        if self.micro % self.grad_accum:
            return False
        self._grad_norm = float(clip_or_measure(self.params, self.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def grad_norm(self) -> float:
        return self._grad_norm

    def save(self, root: Path, tag: str) -> None:
        folder = Path(root) / tag
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "micro": self.micro}, folder / "torch_engine.pt")

    def load(self, root: Path, tag: str) -> None:
        state = torch.load(Path(root) / tag / "torch_engine.pt", weights_only=True)
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro = state["micro"]

    @contextlib.contextmanager
    def full_state_dict(self):
        yield self.module
