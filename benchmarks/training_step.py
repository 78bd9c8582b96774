"""The one-rank training step the step benchmarks time (``bench_training.py``, ``gpu_sections.py``): the project's
own modules, loss and engine on a fixed batch, one optimizer step per call, with per-phase times."""

from __future__ import annotations

import time


def _phase_timer(sync=None):
    """Wall time since the last call (seconds); ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each read,
    so asynchronous device work is charged to the phase that launched it."""
    last = [time.perf_counter()]

    def lap() -> float:
        if sync is not None:
            sync()
        now = time.perf_counter()
        dt, last[0] = now - last[0], now
        return dt

    return lap


def build_training_step(cfg, batch: dict, dev, engine: str = "deepspeed"):
    """The one-rank training path of ``training/`` for ``cfg`` on ``dev``, driven one optimizer step at a time.

    Seeded random modules, the stage's trainable set (``model.stages``), gradient checkpointing when
    ``train.gradient_checkpointing``, the frozen VAE, ``training.engine.build_engine`` (or, for ``engine="torch"``,
    the plain loop of ``benchmarks/torch_engine.py``) and the step of ``training.trainer`` (inputs, forward + loss, backward, optimizer
    step) on the fixed ``batch``. Returns ``(engine, one_step)``; ``one_step()`` returns the phase times (s),
    the loss and the gradient norm. The process group must be up (``training.engine.init_distributed``).
    """
    import torch

    from model.build import build_modules, build_vae
    from model.schedulers import build_noise_scheduler
    from model.stages import set_trainable
    from training.engine import build_engine
    from training.losses import diffusion_loss
    from training.step import VExpressTrainModule, make_step_inputs

    torch.manual_seed(0)
    modules = build_modules(cfg.model, device=dev, pretrained=False)  # initialised where it runs
    set_trainable(modules, cfg.train.stage)
    if cfg.train.gradient_checkpointing:
        modules.enable_gradient_checkpointing()
    vae = build_vae(cfg.model).to(dev).eval().requires_grad_(False)
    alphas = build_noise_scheduler("ddim").alphas_cumprod
    if engine == "torch":
        from benchmarks.torch_engine import TorchEngine

        eng = TorchEngine(VExpressTrainModule(modules).to(dev), cfg.train)
    else:
        eng = build_engine(VExpressTrainModule(modules), cfg.train)
    gen = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize if dev.type == "cuda" else None

    def one_step() -> dict[str, float]:
        lap = _phase_timer(sync)
        inputs = make_step_inputs(batch, vae, alphas, cfg.train, gen, dev, cfg.model.vae_scaling_factor)
        t_in = lap()
        loss = diffusion_loss(eng.forward(**inputs.model_inputs), inputs.target, inputs.mouth_mask,
                              cfg.train.mouth_loss_weight, inputs.sample_weights).total
        t_fwd = lap()
        eng.backward(loss)
        t_bwd = lap()
        eng.step()
        t_opt = lap()
        return {"inputs": t_in, "fwd": t_fwd, "bwd": t_bwd, "opt": t_opt, "step": t_in + t_fwd + t_bwd + t_opt,
                "loss": float(loss.detach()), "grad_norm": eng.grad_norm()}

    return eng, one_step
