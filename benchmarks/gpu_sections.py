"""The three measurements of ``benchmarks/gpu_check.py``: numerics, training, inference.

Each builds what it measures with the project's own code (``model.build``, ``training.engine`` through
``benchmarks/training_step.build_training_step``, ``model.pipeline``) from the configs in ``configs/``, with
random weights. Every item (one setting) runs through :func:`run_item`, which leaves a row whatever happens:
measured, skipped (budget), out of memory, or failed (traceback in the log).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.gpu_report import GIB, Budget, Report, Section, Sizes, median


# ------------------------------------------------------------------------------------------------ context
@dataclasses.dataclass
class Context:
    sizes: Sizes
    dev: torch.device
    budget: Budget
    report: Report
    tmp: Path
    _batches: dict[int, dict] = dataclasses.field(default_factory=dict)

    def config(self, stage: int, extra: tuple[str, ...] = ()):
        """``configs/<preset>/stage<N>.yaml`` with random weights and bf16."""
        from infra.config_tree import load
        from model.config import PretrainedPaths

        frames = 1 if stage == 1 else self.sizes.train_frames
        cfg = load(f"{self.sizes.preset}/stage{stage}", [f"data.num_frames={frames}", "train.precision=bf16", *extra])
        cfg.model.pretrained = PretrainedPaths()  # random weights: nothing to find or download
        return cfg

    def batch(self, stage: int) -> dict:
        """One batch of the stage, made by the loader's own last steps (``training.examples.ExampleBuilder`` and
        ``collate``) from synthetic clips with precomputed latents, as training reads them; reused by every step."""
        if stage not in self._batches:
            from training.examples import ExampleBuilder, collate

            cfg = self.config(stage)
            build = ExampleBuilder(cfg.data, cfg.model, seed=0)
            clips = [synthetic_clip(cfg.model, cfg.data.num_frames + 8, i) for i in range(cfg.train.batch_size)]
            self._batches[stage] = collate([build(c) for c in clips])
        return self._batches[stage]


def synthetic_clip(model, frames: int, index: int):
    """A clip as ``training.data`` decodes it from a shard with latents: a face's five keypoints and mouth box
    (crop pixels), random audio features and latents; no video, which training with latents never decodes."""
    from training.examples import ClipSample

    rng = np.random.default_rng(index)
    size, c = model.resolution, model.resolution / 2
    face = np.array([[-0.12, -0.1], [0.12, -0.1], [0.0, 0.0], [-0.08, 0.12], [0.08, 0.12]]) * size + c
    mouth = np.array([-0.12, 0.06, 0.12, 0.18]) * size + c
    return ClipSample(
        key=f"synthetic{index}", meta={"num_frames": frames, "crop_size": size, "has_audio": True},
        kps=np.repeat(face[None], frames, 0).astype(np.float32), mouth=np.repeat(mouth[None], frames, 0).astype(
            np.float32), audio=rng.standard_normal((2 * frames, model.audio_embed_dim)).astype(np.float16),
        latents=rng.standard_normal((frames, 4, model.latent_size, model.latent_size)).astype(np.float16),
        mp4=None, index=index, unit=0)


def allocated(dev: torch.device) -> int:
    return torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0


def peak_gib(dev: torch.device) -> float:
    """Peak GPU memory allocated since the last reset; on the CPU the process's peak RSS (never reset)."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_caveat(dev: torch.device) -> str:
    return "" if dev.type == "cuda" else " (on the CPU: the process's peak RSS so far, which never goes down)"


def release(dev: torch.device) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def run_item(ctx: Context, section: Section, kind: str, row: dict[str, Any],
             measure: Callable[[], dict[str, Any] | list[dict[str, Any]]], starts_empty: bool = True) -> bool:
    """One setting: skipped when the budget cannot hold it, else measured; OOM and errors become the row's note.
    ``starts_empty``: nothing should be on the GPU before it (else the note says how much was). Returns True
    when it was measured."""
    measured = False
    if not ctx.budget.begin(kind):
        rows = [{**row, "note": f"skipped: budget spent ({ctx.budget.elapsed():.0f} of {ctx.budget.seconds:.0f} s "
                                f"used; one such setting takes ~{ctx.budget.cost[kind]:.0f} s)"}]
    else:
        release(ctx.dev)
        base = allocated(ctx.dev)
        try:
            result = measure()
            rows = [{**row, **r} for r in (result if isinstance(result, list) else [result])]
            measured = True
        except Exception as exc:  # noqa: BLE001 - one setting's failure is recorded; the run goes on
            summary = ctx.report.failure(f"{section.title}: {row}")
            note = f"OOM (peak {peak_gib(ctx.dev):.1f} GiB)" if is_oom(exc) else f"failed: {summary}"
            rows = [{**row, "note": note}]
        if starts_empty and base > GIB // 4:
            rows[0]["note"] = (rows[0].get("note", "") + f" ({base / GIB:.1f} GiB held before)").strip()
        release(ctx.dev)
    section.rows.extend(rows)
    ctx.report.save()
    print(f"[gpu-check {ctx.budget.elapsed():5.0f} s, cpu {time.process_time():5.0f} s] {section.title}: "
          + ", ".join(f"{k}={v}" for k, v in rows[0].items() if v != ""), file=sys.stderr, flush=True)
    return measured


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 for matmuls and convolutions on (torch's default for cuDNN convolutions) or off (true fp32)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


# ------------------------------------------------------------------------------------------------ numerics
NUMERICS = {"fp32 again": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def numerics(ctx: Context) -> None:
    sec = ctx.report.section("numerics", "Numerics: one forward in lower precision vs fp32", [
        "precision", "rel. L2 error (worst draw)", "max abs error / max abs fp32", "finite", "note"],
        intro=(f"Conditioning modules + denoising UNet (`training.step.VExpressTrainModule`, stage III inputs, "
               f"{ctx.sizes.train_frames} frames, every condition on) with the weights cast to each precision, "
               f"against the same forward in fp32 with TF32 off; {ctx.sizes.numerics_draws} draw(s) of noise and "
               "timestep. Relative L2 = ‖out − ref‖ / ‖ref‖. Rough expectation: fp32 again ≈ 0 (run to run), "
               "TF32 ~1e-3, bf16 ~1e-2, fp16 several times under bf16 unless it overflows (then not finite)."))
    run_item(ctx, sec, "numerics", {}, lambda: _numerics(ctx))


@torch.no_grad()
def _numerics(ctx: Context) -> list[dict[str, Any]]:
    from model.build import build_modules
    from model.schedulers import build_noise_scheduler
    from training.step import VExpressTrainModule, make_step_inputs

    t0 = time.perf_counter()
    cfg, batch = ctx.config(3), ctx.batch(3)
    module = VExpressTrainModule(build_modules(cfg.model, device=ctx.dev, pretrained=False)).eval()
    alphas = build_noise_scheduler("ddim").alphas_cumprod
    draws = []
    for seed in range(ctx.sizes.numerics_draws):
        inputs = make_step_inputs(batch, None, alphas, cfg.train, torch.Generator().manual_seed(seed + 1), ctx.dev,
                                  cfg.model.vae_scaling_factor).model_inputs
        for mask in ("reference_mask", "kps_mask", "audio_mask"):  # dropout is training noise: conditions on
            inputs[mask] = torch.ones_like(inputs[mask])
        draws.append(inputs)
    with tf32(False):
        refs = [module(**x).float() for x in draws]
    rows = []
    for name, dtype in NUMERICS.items():
        low = module if dtype == torch.float32 else copy.deepcopy(module).to(dtype)
        with tf32(name == "tf32"):
            outs = [low(**x).float() for x in draws]
        rel = max(float((o - r).norm() / r.norm()) for o, r in zip(outs, refs))
        mx = max(float((o - r).abs().max() / r.abs().max()) for o, r in zip(outs, refs))
        finite = all(bool(torch.isfinite(o).all()) for o in outs)
        rows.append({"precision": name, "rel. L2 error (worst draw)": f"{rel:.2e}",
                     "max abs error / max abs fp32": f"{mx:.2e}", "finite": "yes" if finite else "NO"})
        del low, outs
    ctx.budget.measured("numerics", time.perf_counter() - t0)
    return rows


# ------------------------------------------------------------------------------------------------ training
TRAIN_SETTINGS = [(stage, ckpt) for stage in (1, 2, 3) for ckpt in (True, False)]
TRAIN_COLUMNS = ["stage", "frames × batch", "grad ckpt", "trainable", "ZeRO as run", "step s (median)", "min–max s",
                 "steps", "samples/s", "frames/s", "fwd / bwd / opt s", "peak GiB", "setup s", "note"]


def training(ctx: Context) -> None:
    from training.engine import init_distributed

    s = ctx.sizes
    sec = ctx.report.section("training", "Training: one-rank DeepSpeed step", TRAIN_COLUMNS, intro=(
        f"`{s.preset}` modules, random weights, bf16 (DeepSpeed bf16, fp32 master weights; the ZeRO stage "
        "`training.engine` runs on one rank), the stage's trainable set, one fixed batch (latents, as the loader "
        f"builds it), median over the timed steps after {s.train_warmup} warm-up; peak = the most GPU memory "
        f"allocated during setup and steps (model states + activations){peak_caveat(ctx.dev)}."))
    init_distributed()
    for stage, ckpt in TRAIN_SETTINGS:
        run_item(ctx, sec, "training", {"stage": "I" * stage if stage < 3 else "III", "grad ckpt": "on" if ckpt
                                        else "off"}, lambda stage=stage, ckpt=ckpt: _train(ctx, stage, ckpt))


def _train(ctx: Context, stage: int, ckpt: bool) -> dict[str, Any]:
    from benchmarks.training_step import build_training_step

    s = ctx.sizes
    t0 = time.perf_counter()
    base = allocated(ctx.dev)  # nothing, unless an earlier setting left memory behind (then noted)
    cfg = ctx.config(stage, (f"train.gradient_checkpointing={str(ckpt).lower()}",))
    batch = ctx.batch(stage)
    eng, one_step = build_training_step(cfg, batch, ctx.dev)
    try:
        setup = time.perf_counter() - t0
        for _ in range(s.train_warmup):
            one_step()
        steps = [one_step()]
        ctx.budget.measured("training", time.perf_counter() - t0)
        for _ in range(ctx.budget.repeats(steps[0]["step"], 1, s.train_steps)):
            steps.append(one_step())
        _sync(ctx.dev)
        peak = peak_gib(ctx.dev) - base / GIB
        trainable = sum(p.numel() for p in eng.module.parameters() if p.requires_grad)
        zero = getattr(eng, "zero_stage", "-")
    finally:  # DeepSpeed's hooks and flat buffers, released now rather than whenever the GC gets to them
        destroy = getattr(getattr(eng, "ds", None), "destroy", None)
        if destroy is not None:
            destroy()
    step = median([x["step"] for x in steps])
    samples = cfg.train.batch_size
    frames = samples * cfg.data.num_frames
    finite = all(np.isfinite(x["loss"]) for x in steps)
    return {"frames × batch": f"{cfg.data.num_frames} × {samples}", "trainable": f"{trainable / 1e6:.0f} M",
            "ZeRO as run": zero, "step s (median)": f"{step:.3f}",
            "min–max s": f"{min(x['step'] for x in steps):.3f}–{max(x['step'] for x in steps):.3f}",
            "steps": len(steps), "samples/s": f"{samples / step:.2f}", "frames/s": f"{frames / step:.1f}",
            "fwd / bwd / opt s": " / ".join(f"{median([x[k] for x in steps]):.3f}" for k in ("fwd", "bwd", "opt")),
            "peak GiB": f"{peak:.1f}", "setup s": f"{setup:.0f}",
            "note": "" if finite else "loss not finite"}


# ------------------------------------------------------------------------------------------------ inference
INFER_DTYPES = ("fp16", "bf16")
INFER_COLUMNS = ["preset", "steps × CFG", "window", "dtype", "offload", "frames", "UNet frames / frame", "s / frame",
                 "sampling s / frame", "decode s / frame", "s per video-second", "peak GiB", "calls", "note"]


def inference_presets(base) -> dict[str, Any]:
    """Every named preset of ``model.inference_config.PRESETS`` applied to ``base`` (the configured settings)."""
    from model.inference_config import PRESETS

    return {name: dataclasses.replace(base, preset=name, **fields) for name, fields in PRESETS.items()}


def inference_settings(presets: Mapping[str, Any]) -> list[tuple[str, bool, str]]:
    return [(dtype, offload, name) for dtype in INFER_DTYPES for offload in (False, True) for name in presets]


def audio_encoder_folder(folder: Path, hidden_size: int, full_size: bool) -> Path:
    """A random Wav2Vec2 saved as a ``from_pretrained`` folder: wav2vec2-base's shape (``Wav2Vec2Config``'s
    defaults: 12 layers, width 768) for the real check, the tests' tiny one for the rehearsal."""
    from perception.audio import save_tiny_wav2vec2

    if not full_size:
        return save_tiny_wav2vec2(folder, hidden_size=hidden_size)
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=hidden_size)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True).save_pretrained(folder)
    return folder


class _Pipelines:
    """One ``VExpressPipeline`` at a time (modules built once per dtype, on the device), as load_pipeline builds it."""

    def __init__(self, ctx: Context, cfg) -> None:
        self.ctx, self.cfg = ctx, cfg
        self.key: tuple[str, bool] | None = None
        self.pipe = self.modules = None
        self.encoders: dict[str, Any] = {}

    def get(self, dtype: str, offload: bool):
        """(pipeline, new): new when it was just built and still needs a warm-up call."""
        from model.build import build_modules, build_vae
        from model.pipeline import VExpressPipeline
        from model.pipeline_loading import make_audio_encoder
        from model.schedulers import build_noise_scheduler

        if self.key == (dtype, offload):
            return self.pipe, False
        self.pipe = None
        if self.modules is None or self.key[0] != dtype:
            self.modules = None
            release(self.ctx.dev)
            self.modules = build_modules(self.cfg.model, device=self.ctx.dev, pretrained=False), \
                build_vae(self.cfg.model)
        enc_dev = "cpu" if offload else str(self.ctx.dev)
        if enc_dev not in self.encoders:  # one at a time: an idle encoder on the GPU would count in the peak
            self.encoders.clear()
            release(self.ctx.dev)
            self.encoders[enc_dev] = make_audio_encoder(self.cfg, enc_dev)
        m = self.cfg.model
        self.pipe = VExpressPipeline(
            self.modules[0], self.modules[1], build_noise_scheduler(self.cfg.inference.scheduler), self.encoders[enc_dev],
            device=self.ctx.dev, dtype=dtype, offload=offload, vae_scaling_factor=m.vae_scaling_factor,
            audio_context=m.audio_frames_context, audio_vectors_per_frame=m.audio_vectors_per_frame)
        self.key = (dtype, offload)
        return self.pipe, True


def inference(ctx: Context) -> None:
    from model.generate import AUDIO_SAMPLE_RATE
    from model.retarget import fix_face

    s = ctx.sizes
    cfg = ctx.config(3)
    presets = inference_presets(cfg.inference)
    size, frames = cfg.model.resolution, s.infer_frames
    sec = ctx.report.section("inference", f"Inference: seconds per output frame at {size}²", INFER_COLUMNS, intro=(
        f"`{s.preset}` modules, random weights, the whole `VExpressPipeline` call (reference net, V-Kps + audio "
        f"encoding, windowed CFG sampling, per-frame VAE decode + median filter) for {frames} frames; "
        "offload = each module on the GPU only while it runs; peak = GPU memory allocated during the timed calls"
        f"{peak_caveat(ctx.dev)}; UNet frames / frame = frames pushed through the denoiser per output frame (CFG "
        "pair counted twice)."))
    cfg.model.pretrained.audio_encoder = str(audio_encoder_folder(ctx.tmp / "audio-encoder",
                                                                  cfg.model.audio_embed_dim, s.device == "cuda"))
    rng = np.random.default_rng(0)
    inputs = {"image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
              "kps": fix_face(np.array([[0.34, 0.4], [0.66, 0.4], [0.5, 0.6]]) * size, frames),
              "audio": (0.3 * np.sin(2 * np.pi * 220 * np.arange(round(frames / cfg.inference.fps * AUDIO_SAMPLE_RATE))
                                     / AUDIO_SAMPLE_RATE)).astype(np.float32)}
    pipes = _Pipelines(ctx, cfg)
    for dtype, offload, name in inference_settings(presets):
        p = presets[name]
        steps = s.infer_steps or p.num_inference_steps
        row = {"preset": name, "steps × CFG": f"{steps} × {p.guidance_scale:g} ({p.scheduler})",
               "window": f"{p.context_frames}/{p.context_overlap}", "dtype": dtype,
               "offload": "yes" if offload else "no"}
        run_item(ctx, sec, "inference", row, lambda d=dtype, o=offload, p=p, st=steps: _infer(
            ctx, pipes, d, o, p, st, inputs), starts_empty=False)  # the pipeline stays between presets
    pipes.pipe = pipes.modules = None
    pipes.encoders.clear()


def _infer(ctx: Context, pipes: _Pipelines, dtype: str, offload: bool, p, steps: int, inputs) -> dict[str, Any]:
    from model.schedulers import build_noise_scheduler

    t0 = time.perf_counter()
    pipe, new = pipes.get(dtype, offload)
    pipe.scheduler = build_noise_scheduler(p.scheduler)
    frames, size = ctx.sizes.infer_frames, pipes.cfg.model.resolution

    def call(n_steps: int) -> tuple[float, float, Any]:
        start = time.perf_counter()
        out = pipe(inputs["image"], inputs["kps"], inputs["audio"], num_frames=frames, size=size,
                   num_inference_steps=n_steps, guidance_scale=p.guidance_scale, context_frames=p.context_frames,
                   context_overlap=p.context_overlap, reference_attention_weight=p.reference_attention_weight,
                   audio_attention_weight=p.audio_attention_weight, seed=p.seed, output_type="latent", progress=False)
        mid = time.perf_counter()
        video = pipe.decode(out.latents, median_filter=p.median_filter, progress=False)
        if len(video) != frames:
            raise RuntimeError(f"pipeline returned {len(video)} frames, asked for {frames}")
        return mid - start, time.perf_counter() - mid, out.stats

    if new:
        call(1)  # warm-up: kernels, allocator, cuDNN handles for these shapes
    _sync(ctx.dev)
    if ctx.dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.dev)
    calls = [call(steps)]
    ctx.budget.measured("inference", time.perf_counter() - t0)
    for _ in range(ctx.budget.repeats(sum(calls[0][:2]), 1, ctx.sizes.infer_repeats)):
        calls.append(call(steps))
    total = median([a + b for a, b, _ in calls]) / frames
    stats = calls[0][2]
    return {"frames": frames, "UNet frames / frame": f"{stats.frame_evaluations / frames:.1f}",
            "s / frame": f"{total:.4f}", "sampling s / frame": f"{median([a for a, _, _ in calls]) / frames:.4f}",
            "decode s / frame": f"{median([b for _, b, _ in calls]) / frames:.4f}",
            "s per video-second": f"{total * p.fps:.2f}", "peak GiB": f"{peak_gib(ctx.dev):.1f}", "calls": len(calls),
            "note": ""}


SECTIONS: dict[str, Callable[[Context], None]] = {"numerics": numerics, "training": training, "inference": inference}


def new_context(sizes: Sizes, budget: Budget, report: Report, tmp: str | Path) -> Context:
    return Context(sizes=sizes, dev=torch.device(sizes.device, 0) if sizes.device == "cuda" else torch.device("cpu"),
                   budget=budget, report=report, tmp=Path(tmp))


def scratch_dir():
    return tempfile.TemporaryDirectory(prefix="gpu-check-")
