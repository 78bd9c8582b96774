"""Training benchmark: loader throughput, DeepSpeed vs plain PyTorch step time / peak memory, sd15 memory plan.

    python benchmarks/bench_training.py                 # everything (CPU: a few minutes)
    python benchmarks/bench_training.py --only loader|step|memory

1. Loader: clips/s and frames/s of one reader (num_workers=0, i.e. per worker) over shards of 512² clips, with
   and without precomputed latents (sd15 sizes: 12 frames, V-Kps at 512², latents 64²), stage II.
2. Step: the DeepSpeed engine (default config: ZeRO-2, which one fp32 rank runs as stage 0) against the plain
   PyTorch loop (same fused AdamW, clipping with the global grad norm, warmup schedule, fp32) on the tiny model and
   the same fixed batch and noise. Each engine lives in its own process (so peak RSS is its own), both with the
   same torch/OMP thread count (--threads, default 1 as per DeepSpeed rank); after --warmup untimed steps the
   parent drives them one step at a time, alternating (and alternating who goes first), so load from the shared
   machine hits both alike. Reported: median time per phase (inputs, forward, backward, optimizer step) and per
   step, the ratio of medians and the median of the paired per-step ratios, whether the losses agree step by step,
   and the ZeRO settings as run. Target: DeepSpeed / plain <= 1.15. ``--ranks 2`` runs each engine on 2 ranks
   (DeepSpeed with the shipped multi-rank ZeRO-2 settings, plain = DistributedDataParallel on gloo; a step takes
   as long as its slowest rank). ``--ds-override train.deepspeed_config=infra/deepspeed/zero2.json`` runs the
   shipped file as written even on one rank; ``--ds-override train.zero_stage=0`` picks another stage.
3. Memory: the sd15 preset in stage III (everything but ReferenceNet up_blocks.3 trained) on 8 GPUs: DeepSpeed's
   ZeRO-2/ZeRO-3 model-state estimates from the parameter counts (modules built on the meta device), plus
   activations with gradient checkpointing, measured by running the denoising UNet and ReferenceNet forward on the
   meta device:

     activations ~= bytes x ( sum over checkpointed segments of their saved inputs
                              + the largest segment's intermediate outputs (recomputed during its backward) )
                  + non-checkpointed module outputs (conv_in, time embedding, conv_out, ...)

   Segments are the modules diffusers checkpoints (each ResNet block, spatial transformer and motion module).

Measured on the 2-core CPU machine (1 thread per process, stage 3, 20 interleaved steps after 3 warm-up), step ms
DeepSpeed / plain (ratio of medians; the median of paired ratios within a few % of it):
  one rank, ZeRO-2 as written, unfused AdamW:           tiny 281 / 201 = 1.40x   4x wider 1740 / 977 = 1.78x
  one rank, ZeRO-2 without scatter/contiguous, fused:   tiny 197 / 157 = 1.26x   4x wider 1210 / 830 = 1.46x
  one rank, as now (stage 0, no self all-reduce, foreach clipping; three runs):
                                                        tiny 0.97-1.13x          4x wider 0.97-1.04x
  peak RSS now: tiny 1.03 / 0.89 GiB = 1.15x (DeepSpeed's own imports), 4x wider 1.96 / 1.83 GiB = 1.07x.
  2 ranks vs DDP (--ranks 2): ZeRO-2 (shipped) tiny 231 / 168 = 1.38x, 4x wider 1553 / 880 = 1.76x;
                              ZeRO-0             tiny 184 / 186 = 0.99x, 4x wider 1293 / 1052 = 1.23x.
Where ZeRO's time goes on CPU: with one rank, a Python hook per parameter (1321 tensors) copying gradients into
flat buckets, an all-reduce with itself, a second copy into the fp32 master partition, a per-tensor norm, and the
updated partition copied back (that is why one fp32 rank now runs stage 0: it partitions nothing). With two
ranks the same copies plus gloo's reduce-scatter and all-gather, which wait ~0.44 s a step on the 4x-wider
model (profiled: c10d wait) where DDP overlaps one all-reduce with the backward; overlap_comm did not help
(1.65x). The GPU comparison (bf16, NCCL) is still to be run: no GPU was lent to this work.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    print(f"\n## {title}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(" | ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(x).ljust(w) for x, w in zip(r, widths)))


# --------------------------------------------------------------------------------------------- loader
def bench_loader(clips: int, batches: int) -> None:
    from infra.config_tree import load
    from tests.synthetic_shards import write_synthetic_shards
    from training.data import make_loader

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for latents in (True, False):
            shards = write_synthetic_shards(Path(tmp) / str(latents), clips=clips, frames=40, size=512,
                                            audio_dim=768, latent_size=64 if latents else None, per_shard=4)
            cfg = load("sd15/stage2", [f"data.shards={shards}", "data.num_workers=0"])
            loader, _ = make_loader(cfg.data, cfg.model, 2, 1, 0, 1)
            it = iter(loader)
            next(it)  # warm-up (imports, first tar open)
            start = time.perf_counter()
            for _ in range(batches):
                next(it)
            dt = time.perf_counter() - start
            rows.append(["latents" if latents else "frames (mp4 decode)", batches, f"{batches / dt:.2f}",
                         f"{batches * cfg.data.num_frames / dt:.1f}"])
    table("Loader, one reader (per worker), sd15 sizes, stage II (12 frames + reference, 512²)",
          ["source", "clips", "clips/s", "frames/s"], rows)


# --------------------------------------------------------------------------------------------- step
WIDER = ["model.block_out_channels=[64,128,256,256]", "model.cross_attention_dim=64", "model.resolution=128"]


def engine_worker(engine: str, stage: int, overrides: list[str], warmup: int) -> None:
    """One engine in this process, driven over stdin: a line "step" runs one optimizer step and prints its phase
    times as JSON; "end" prints peak RSS (GiB) and exits. The parent alternates between two such workers, so
    both engines see the same machine load (the machine is shared) while only one of them runs at a time."""
    import resource

    import torch

    from infra.config_tree import load
    from tests.synthetic_shards import write_synthetic_shards
    from training.data import make_loader
    from training.engine import init_distributed

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_synthetic_shards(Path(tmp), clips=2)
        cfg = load(f"tiny/stage{stage}", [f"data.shards={shards}", "data.num_workers=0",
                                          "data.num_frames=4" if stage > 1 else "data.num_frames=1", *overrides])
        batch = next(iter(make_loader(cfg.data, cfg.model, stage, 1, 0, 1)[0]))
    if engine == "deepspeed":
        init_distributed()
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:  # the plain loop over many ranks: DDP on gloo
        torch.distributed.init_process_group("gloo")
    from benchmarks.training_step import build_training_step

    eng, one_step = build_training_step(cfg, batch, torch.device("cpu"), engine)

    for _ in range(warmup):  # first steps: allocator growth, lazy init, DeepSpeed's bucket setup
        one_step()
    zero = getattr(eng, "config", {}).get("zero_optimization")
    print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "zero": zero}), flush=True)
    for line in sys.stdin:
        if line.strip() == "step":
            print(json.dumps(one_step()), flush=True)
        else:
            break
    print(json.dumps({"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}), flush=True)


class _Worker:
    def __init__(self, engine: str, stage: int, overrides: list[str], warmup: int, threads: int,
                 rank: int = 0, world: int = 1, port: int = 0) -> None:
        self.engine = engine
        group = {} if world == 1 else {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--engine-worker", engine, "--stage", str(stage), "--warmup", str(warmup),
             *[f"--model-override={o}" for o in overrides]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "OMP_NUM_THREADS": str(threads), **group})

    def read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.engine} worker exited with {self.proc.wait()} (its stderr is above)")
            if line.startswith("{"):
                return json.loads(line)

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def ask(self, command: str) -> dict:
        self.send(command)
        return self.read()


class _Ranks:
    """One engine over ``world`` rank processes driven together: a step is sent to every rank, and its time is the
    slowest rank's (phases from rank 0)."""

    def __init__(self, engine: str, stage: int, overrides: list[str], warmup: int, threads: int, world: int) -> None:
        from infra.net import free_port

        port = free_port()
        self.ranks = [_Worker(engine, stage, overrides, warmup, threads, r, world, port) for r in range(world)]

    def read(self) -> dict:
        return [w.read() for w in self.ranks][0]

    def ask(self, command: str) -> dict:
        for w in self.ranks:
            w.send(command)
        replies = [w.read() for w in self.ranks]
        if "step" in replies[0]:
            return {**replies[0], "step": max(r["step"] for r in replies)}
        return {k: max(r[k] for r in replies) for k in replies[0]}  # peak RSS: the largest rank's

    def kill(self) -> None:
        for w in self.ranks:
            w.proc.kill()


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def bench_step(steps: int, stage: int, warmup: int, threads: int, ds_overrides: list[str], sizes: list[str],
               ranks: int) -> None:
    models = {"tiny": ("tiny", []), "wider": ("tiny, 4x wider at 128² (" + " ".join(WIDER) + ")", WIDER)}
    for label, overrides in (models[s] for s in sizes):
        _bench_step(steps, stage, warmup, threads, label, overrides, ds_overrides, ranks)


def _bench_step(steps: int, stage: int, warmup: int, threads: int, label: str, overrides: list[str],
                ds_overrides: list[str], ranks: int) -> None:
    workers = {"torch": _Ranks("torch", stage, overrides, warmup, threads, ranks),
               "deepspeed": _Ranks("deepspeed", stage, overrides + ds_overrides, warmup, threads, ranks)}
    try:
        ready = {e: w.read() for e, w in workers.items()}  # both set up (in parallel) and warmed up
        times: dict[str, list[dict]] = {e: [] for e in workers}
        for i in range(steps):  # alternate, and alternate who goes first, so drift in load hits both alike
            for e in (("torch", "deepspeed") if i % 2 == 0 else ("deepspeed", "torch")):
                times[e].append(workers[e].ask("step"))
        peak = {e: w.ask("end")["peak_rss_gib"] for e, w in workers.items()}
    finally:
        for w in workers.values():
            w.kill()
    med = {e: {k: _median([t[k] for t in ts]) for k in ("inputs", "fwd", "bwd", "opt", "step")}
           for e, ts in times.items()}
    paired = _median([d["step"] / t["step"] for d, t in zip(times["deepspeed"], times["torch"])])
    rows = [[e, ready[e]["threads"], *(f"{med[e][k] * 1000:.0f}" for k in ("inputs", "fwd", "bwd", "opt", "step")),
             f"{peak[e]:.2f}"] for e in workers]
    ratio = med["deepspeed"]["step"] / med["torch"]["step"]
    rows.append(["deepspeed / plain", "", *(f"{med['deepspeed'][k] / med['torch'][k]:.2f}x"
                                             for k in ("inputs", "fwd", "bwd", "opt", "step")),
                 f"{peak['deepspeed'] / peak['torch']:.2f}x"])
    same_loss = all(abs(d["loss"] - t["loss"]) <= 1e-4 * max(1.0, abs(t["loss"]))
                    for d, t in zip(times["deepspeed"], times["torch"]))
    procs = "1 process each" if ranks == 1 else f"{ranks} ranks each (plain = DDP on gloo; step = slowest rank)"
    table(f"Step, {label} model, stage {stage}, CPU fp32, {procs}, {threads} thread(s) per process "
          f"({os.cpu_count()} CPUs), median of {steps} interleaved steps after {warmup} warm-up",
          ["engine", "threads", "inputs ms", "fwd ms", "bwd ms", "opt ms", "step ms", "peak RSS GiB"], rows)
    print(f"deepspeed / plain step time: {ratio:.3f}x (ratio of medians), {paired:.3f}x (median of paired "
          f"ratios); target <= 1.15 -> {'met' if max(ratio, paired) <= 1.15 else 'NOT met'}; "
          f"losses equal step by step: {same_loss}")
    print(f"DeepSpeed zero_optimization as run: {json.dumps(ready['deepspeed']['zero'])}")


# --------------------------------------------------------------------------------------------- memory
def activation_bytes(cfg, frames: int, batch: int, bytes_per: int = 2) -> dict[str, float]:
    """Meta-device forward with hooks (see the module docstring for the formula)."""
    import torch

    from model.build import build_modules

    modules = build_modules(cfg.model, device="meta")
    unet, ref = modules.denoising_unet, modules.reference_net
    segment_types = ("ResnetBlock", "Transformer", "MotionModule", "TemporalTransformer")

    def is_segment(m) -> bool:
        name = type(m).__name__
        return any(t in name for t in segment_types)

    segments: list[list[float]] = []  # [input bytes, intermediate bytes]
    stack: list[int] = []
    other = [0.0]

    def numel(x) -> float:
        if isinstance(x, torch.Tensor):
            return float(x.numel())
        if isinstance(x, (list, tuple)):
            return sum(numel(v) for v in x)
        if hasattr(x, "sample"):
            return numel(x.sample)
        return 0.0

    def pre(mod, args):
        if is_segment(mod) and not stack:
            segments.append([numel(args[:1]) * bytes_per, 0.0])
            stack.append(id(mod))

    def post(mod, args, out):
        if stack and stack[-1] == id(mod):
            stack.pop()
            return
        if not list(mod.children()):  # leaf op outputs
            if stack:
                segments[-1][1] += numel(out) * bytes_per
            else:
                other[0] += numel(out) * bytes_per

    handles = []
    for m in list(unet.modules()) + list(ref.modules()):
        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    lat = cfg.model.latent_size
    d = cfg.model.cross_attention_dim
    with torch.no_grad():
        feats = ref(torch.zeros(batch, 4, lat, lat, device="meta"), timestep=0)
        unet(torch.zeros(batch, 4, frames, lat, lat, device="meta"), torch.zeros(batch, device="meta"),
             audio_tokens=torch.zeros(batch, frames, cfg.model.audio_num_queries, d, device="meta"),
             reference_features=feats,
             kps_features=torch.zeros(batch, cfg.model.block_out_channels[0], frames, lat, lat, device="meta"),
             reference_frame_mask=torch.ones(batch, frames, device="meta"))
    for h in handles:
        h.remove()
    saved = sum(s[0] for s in segments)
    largest = max(s[1] for s in segments)
    no_ckpt = sum(s[0] + s[1] for s in segments) + other[0]
    return {"segments": len(segments), "saved": saved, "largest": largest, "other": other[0],
            "with_ckpt": saved + largest + other[0], "without_ckpt": no_ckpt}


def bench_memory(gpus: int) -> None:
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from infra.config_tree import load
    from model.build import build_modules
    from model.stages import trainable_parameter_names

    cfg = load("sd15/stage3")
    modules = build_modules(cfg.model, device="meta")
    params = dict(modules.named_parameters())
    trainable = trainable_parameter_names(modules, 3)  # all but ReferenceNet up_blocks.3
    total = sum(params[n].numel() for n in trainable)
    largest = max(p.numel() for p in params.values())  # the largest single tensor gathered at once
    vae_params = 83_653_863  # sd-vae-ft-mse, frozen, bf16
    vae_params += sum(p.numel() for n, p in params.items() if n not in trainable)  # frozen weights, bf16 too
    gib = 2**30
    _, z2 = estimate_zero2_model_states_mem_needs(total, gpus, 1, cpu_offload=False)
    _, z3, _ = estimate_zero3_model_states_mem_needs(total, largest, gpus, 1, cpu_offload=False)
    _, z3o, _ = estimate_zero3_model_states_mem_needs(total, largest, gpus, 1, cpu_offload=True,
                                                      cpu_offload_params=True)
    act = activation_bytes(cfg, frames=cfg.data.num_frames, batch=cfg.train.batch_size)
    frozen = vae_params * 2
    rows = []
    for name, states in (("ZeRO-2", z2), ("ZeRO-3", z3), ("ZeRO-3 + CPU offload", z3o)):
        with_ckpt = (states + act["with_ckpt"] + frozen) / gib
        without = (states + act["without_ckpt"] + frozen) / gib
        rows.append([name, f"{states / gib:.2f}", f"{act['with_ckpt'] / gib:.2f}", f"{with_ckpt:.2f}",
                     "yes" if with_ckpt <= 24 else "no", f"{without:.2f}"])
    print(f"\nsd15 stage III: {total:,} trainable parameters (all but ReferenceNet up_blocks.3), largest tensor "
          f"{largest:,}; "
          f"batch {cfg.train.batch_size} x {cfg.data.num_frames} frames at {cfg.model.latent_size}² latents, bf16; "
          f"{act['segments']} checkpointed segments, saved inputs {act['saved'] / gib:.2f} GiB, largest segment "
          f"recompute {act['largest'] / gib:.2f} GiB, other {act['other'] / gib:.2f} GiB; frozen VAE + up_blocks.3 "
          f"{frozen / gib:.2f} GiB")
    table(f"Memory per GPU, sd15 stage III, {gpus} GPUs (DeepSpeed estimates + activation estimate)",
          ["config", "model states GiB", "activations (ckpt) GiB", "total GiB", "fits 24 GB", "total w/o ckpt GiB"],
          rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["loader", "step", "memory"], default=None)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--steps", type=int, default=20, help="timed steps per engine (step benchmark)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (step benchmark)")
    p.add_argument("--threads", type=int, default=1, help="torch/OMP threads of each engine (step benchmark)")
    p.add_argument("--stage", type=int, default=3)
    p.add_argument("--ranks", type=int, default=1,
                   help="data-parallel ranks per engine (step benchmark; >1: DeepSpeed's shipped ZeRO vs DDP)")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--sizes", nargs="+", choices=["tiny", "wider"], default=["tiny", "wider"])
    p.add_argument("--ds-override", action="append", default=[],
                   help="config override for the DeepSpeed engine only, e.g. train.deepspeed_config=my.json")
    p.add_argument("--engine-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-override", action="append", default=[], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.engine_worker:
        engine_worker(args.engine_worker, args.stage, args.model_override, args.warmup)
        return 0
    if args.only in (None, "loader"):
        bench_loader(args.clips, args.clips)
    if args.only in (None, "step"):
        bench_step(args.steps, args.stage, args.warmup, args.threads, args.ds_override, args.sizes, args.ranks)
    if args.only in (None, "memory"):
        bench_memory(args.gpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
