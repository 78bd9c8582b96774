"""The training engine: DeepSpeed (the only ``deepspeed.initialize`` in the project) and a plain-PyTorch twin.

Both expose the same small interface (:class:`Engine`): ``forward``, ``backward``, ``step``, ``lr``,
``grad_norm``, ``save``/``load``, ``module``. The plain one exists only so the benchmark can compare step time
and memory against DeepSpeed on the same model and data.

DeepSpeed settings: a JSON file from ``infra/deepspeed/`` (``zero{train.zero_stage}.json`` unless
``train.deepspeed_config`` names one) with the values that belong to the run filled in from the config: micro
batch, gradient accumulation, clipping and precision (bf16 on GPU, fp32 on CPU); a single fp32 rank runs ZeRO-1/2
as stage 0, there being nothing to partition (see ``one_rank_stage``). The optimizer is a client
``torch.optim.AdamW`` and the LR schedule a client linear-warmup-then-constant ``LambdaLR``; DeepSpeed steps,
saves and restores both.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from infra.net import free_port
from training.config import TrainConfig
from training.rendezvous import init_loopback_process_group

log = logging.getLogger(__name__)
DEEPSPEED_CONFIG_DIR = Path(__file__).resolve().parent.parent / "infra" / "deepspeed"


# ------------------------------------------------------------------------------------------ distributed
def init_distributed() -> tuple[int, int]:
    """Join (or, as a plain single process, create) the process group; returns (rank, world_size)."""
    # DeepSpeed JIT-compiles its shared-memory comm op on first use (34-70 s); one persistent cache, the same
    # one scripts/env.sh exports, so a shell without env.sh (an IDE, a bare pytest) does not compile it again.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions"))
    import deepspeed

    if "RANK" not in os.environ:  # a plain `python training/run.py`: a world of one on loopback
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", str(free_port())))
    if not torch.distributed.is_initialized():
        init_loopback_process_group()  # a loopback MASTER_ADDR: the rendezvous listens on loopback only
        deepspeed.init_distributed()  # joins that group, or runs env:// for a real master address
        release_shm_allreduce_buffer()
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def shm_allreduce_buffer(rank: int) -> Path:
    """Where DeepSpeed's CPU shared-memory all-reduce keeps ``rank``'s buffer (its csrc/cpu/comm/shm.cpp)."""
    return Path("/dev/shm") / (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
                               f"{os.environ.get('MASTER_PORT', '')}_{rank}")


def release_shm_allreduce_buffer() -> None:
    """Unlink this rank's DeepSpeed shared-memory buffer once every rank has mapped every buffer.

    On CPU under the launcher (LOCAL_SIZE set) DeepSpeed gives each rank a 66 MB /dev/shm file that the other ranks
    map by name during ``init_distributed``, and never unlinks it: each 2-rank launch left 132 MB of RAM behind
    until reboot (7.8 GB after 60 launches on this machine). After a barrier every rank holds its mappings, which
    outlive the name; the memory goes when the last rank exits.
    """
    buffer = shm_allreduce_buffer(torch.distributed.get_rank())
    if not os.environ.get("LOCAL_SIZE") or not buffer.parent.is_dir():
        return
    torch.distributed.barrier()
    buffer.unlink(missing_ok=True)


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def resolve_precision(precision: str) -> str:
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    return precision


# ------------------------------------------------------------------------------------------ schedule
def lr_lambda(cfg: TrainConfig):
    """LR factor per optimizer step: linear warmup over ``train.warmup_steps``, then ``train.lr_schedule``:
    ``constant`` (the official schedule) or ``cosine`` (half a cosine down to 0 at ``train.max_steps``, so short
    runs end on settled weights)."""
    warmup, total, schedule = cfg.warmup_steps, cfg.max_steps, cfg.lr_schedule

    def factor(step: int) -> float:
        ramp = 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)
        if schedule == "cosine":
            return ramp * 0.5 * (1.0 + math.cos(math.pi * min(step / max(total, 1), 1.0)))
        return ramp

    return factor


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    # fused: one pass over each tensor for the whole AdamW update (CPU since torch 2.4, and CUDA). It matters under
    # ZeRO, whose optimizer sees one flat tensor per group: the unfused update streams that flat tensor through
    # memory once per elementwise op, ~2x slower than the same update on cache-sized per-parameter tensors.
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                             weight_decay=cfg.weight_decay, fused=True)


def deepspeed_config(cfg: TrainConfig, precision: str, world_size: int) -> dict[str, Any]:
    default = DEEPSPEED_CONFIG_DIR / f"zero{cfg.zero_stage}.json"
    if not default.is_file():  # ZeRO-0/1: the ZeRO-2 file with its stage replaced below
        default = DEEPSPEED_CONFIG_DIR / "zero2.json"
    path = Path(cfg.deepspeed_config) if cfg.deepspeed_config else default
    if not path.is_file():
        raise ValueError(f"train.deepspeed_config: {path} not found (configs live in {DEEPSPEED_CONFIG_DIR})")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
    ds["gradient_accumulation_steps"] = cfg.grad_accum
    ds["gradient_clipping"] = cfg.max_grad_norm
    ds.pop("train_batch_size", None)  # derived by DeepSpeed from micro batch x accumulation x world
    ds["bf16"] = {"enabled": precision == "bf16"}
    ds["fp16"] = {"enabled": precision == "fp16", "initial_scale_power": 16}
    ds.setdefault("zero_optimization", {})
    if not cfg.deepspeed_config:
        ds["zero_optimization"]["stage"] = cfg.zero_stage
        if world_size == 1:
            ds["zero_optimization"]["stage"] = one_rank_stage(cfg.zero_stage, precision)
            if ds["zero_optimization"]["stage"] in (1, 2):
                ds["zero_optimization"].update(ONE_RANK_ZERO12)
    if clips_in_engine(ds, precision):
        ds["gradient_clipping"] = 0.0  # DeepSpeedEngine.step clips instead (see clips_in_engine)
    return ds


def one_rank_stage(zero_stage: int, precision: str) -> int:
    """The ZeRO stage a one-rank run uses for a configured ``zero_stage``.

    ZeRO-1/2 partition optimizer state and gradients over the data-parallel ranks. With one rank there is nothing
    to partition, and they only add work: a Python hook per parameter (1321 tensors in the tiny model) copying each
    gradient into a flat bucket, an all-reduce with itself, the flat gradient copied again into an fp32 master
    partition, and that partition copied back into the module after the update: 1.26-1.46x the plain PyTorch step
    on CPU and 1.25-1.35x its memory (benchmarks/bench_training.py). So an fp32 run on one rank uses stage 0, which
    keeps DeepSpeed in charge of the optimizer, schedule, accumulation and checkpoints and updates the parameters
    in place. Mixed precision keeps ZeRO-1/2 (with ``ONE_RANK_ZERO12``): there the fp32 master weights are needed
    anyway, and ZeRO's bf16 path is DeepSpeed's maintained one (its stage-0 bf16 path wraps the optimizer
    differently). ZeRO-3 stays: one rank may want it for parameter offload. An explicit ``train.deepspeed_config``
    is always run as written.
    """
    return 0 if zero_stage in (1, 2) and precision == "fp32" else zero_stage


# With one rank and mixed precision, ZeRO-1/2 have nothing to scatter: every gradient belongs to the one partition.
# Contiguous gradients + reduce-scatter then only copy each gradient into the reduction bucket and again into the
# flat partition, one Python call chain per parameter, which doubled the backward time on CPU. Without them
# DeepSpeed all-reduces each bucket flattened in one go and leaves gradients in place.
ONE_RANK_ZERO12 = {"contiguous_gradients": False, "reduce_scatter": False}


def clips_in_engine(ds_config: dict[str, Any], precision: str) -> bool:
    """fp32 without ZeRO: clip with torch's foreach kernels rather than DeepSpeed's, which walks the parameters in
    Python, one norm and one multiply per tensor (+8 ms a step on the tiny model). Same global norm, same result;
    the gradients are already all-reduced at the accumulation boundary where the clipping happens."""
    return precision == "fp32" and ds_config["zero_optimization"].get("stage", 0) == 0


def clip_or_measure(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """The global gradient norm, after clipping to ``max_norm`` when it is > 0 (0 disables clipping)."""
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], foreach=True)


def data_parallel_world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


# ------------------------------------------------------------------------------------------ engines
class Engine(Protocol):
    module: nn.Module
    dtype: torch.dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def step(self) -> bool: ...  # True when this micro-step ended an optimizer step
    def lr(self) -> float: ...
    def grad_norm(self) -> float: ...
    def save(self, root: Path, tag: str) -> None: ...
    def load(self, root: Path, tag: str) -> None: ...
    def full_state_dict(self) -> contextlib.AbstractContextManager[nn.Module]: ...


class DeepSpeedEngine:
    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        import deepspeed

        self.precision = resolve_precision(cfg.precision)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision, torch.float32)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(params, cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
        world_size = data_parallel_world_size()
        self.config = deepspeed_config(cfg, self.precision, world_size)
        self.zero_stage = self.config["zero_optimization"].get("stage", 0)
        self.ds, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=self.config)
        self.module = self.ds.module
        if world_size == 1 and self.zero_stage == 0:
            # The all-reduce of one rank's gradients with itself is the identity; without ZeRO DeepSpeed would
            # still flatten, reduce and unflatten every gradient each step. (Its pipeline engine turns it off too.)
            self.ds.enable_backward_allreduce = False
        self.clip_params = params if clips_in_engine(self.config, self.precision) else []  # also for the norm
        self.max_grad_norm = cfg.max_grad_norm
        self._grad_norm: float | None = None
        if cfg.zero_stage != self.zero_stage:
            log.info("one rank: ZeRO-%d runs as stage %d (nothing to partition; see training.engine.one_rank_stage)",
                     cfg.zero_stage, self.zero_stage)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.ds(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        self.ds.backward(loss)

    def step(self) -> bool:
        boundary = self.ds.is_gradient_accumulation_boundary()
        if boundary and self.clip_params:
            self._grad_norm = float(clip_or_measure(self.clip_params, self.max_grad_norm))
        self.ds.step()
        return boundary

    def lr(self) -> float:
        return float(self.ds.get_lr()[0])

    def grad_norm(self) -> float:
        norm = self._grad_norm if self.clip_params else self.ds.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def save(self, root: Path, tag: str) -> None:
        # save_latest=False: the trainer writes "latest" itself, atomically, after every rank finished.
        self.ds.save_checkpoint(str(root), tag=tag, save_latest=False)

    def load(self, root: Path, tag: str) -> None:
        path, _ = self.ds.load_checkpoint(str(root), tag=tag, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"{root}/{tag}: DeepSpeed found no checkpoint to load")

    @contextlib.contextmanager
    def full_state_dict(self):
        """The module with full parameters (gathered under ZeRO-3) for exporting weights."""
        if self.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None):
                yield self.module
        else:
            yield self.module


class TorchEngine:
    """Plain PyTorch with the same semantics (AdamW, warmup, clipping, accumulation), wrapped in
    ``DistributedDataParallel`` when a process group of more than one rank is up. Benchmark only."""

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


def build_engine(model: nn.Module, cfg: TrainConfig) -> Engine:
    if cfg.engine == "torch":
        return TorchEngine(model.to(device()), cfg)
    return DeepSpeedEngine(model, cfg)
