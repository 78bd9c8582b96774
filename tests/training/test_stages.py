"""Stage behaviour on the tiny model through the DeepSpeed engine (one in-process rank, gloo on CPU):
learning on a fixed batch, staged freezing of stage II, exact resume."""

from __future__ import annotations

import pytest
import torch

from infra.config_tree import load

torch.set_num_threads(1)  # as one DeepSpeed rank with OMP_NUM_THREADS=1


def _cfg(shards, out, stage, *extra):
    frames = 1 if stage == 1 else 2
    return load(f"tiny/stage{stage}", [f"data.shards={shards}", f"data.num_frames={frames}", "data.num_workers=0",
                                       f"train.output_dir={out}", "tracking.enabled=false", *extra])


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_loss_halves_on_a_fixed_batch_with_fixed_noise(synthetic_shards, tmp_path, stage):
    from model.build import build_modules, build_vae
    from model.schedulers import build_noise_scheduler
    from model.stages import set_trainable
    from training.data import make_loader
    from training.engine import DeepSpeedEngine, init_distributed
    from training.losses import diffusion_loss
    from training.step import VExpressTrainModule, make_step_inputs

    init_distributed()
    cfg = _cfg(synthetic_shards, tmp_path, stage, "train.lr=1e-3", "train.weight_decay=0")
    loader, _ = make_loader(cfg.data, cfg.model, stage, 1, 0, 1)
    batch = next(iter(loader))
    modules = build_modules(cfg.model)
    set_trainable(modules, stage)
    vae = build_vae(cfg.model).eval().requires_grad_(False)
    alphas = build_noise_scheduler("ddim").alphas_cumprod
    engine = DeepSpeedEngine(VExpressTrainModule(modules), cfg.train)
    losses = []
    for _ in range(25):
        inputs = make_step_inputs(batch, vae, alphas, cfg.train, torch.Generator().manual_seed(3),
                                  torch.device("cpu"), cfg.model.vae_scaling_factor)
        pred = engine.forward(**inputs.model_inputs)
        terms = diffusion_loss(pred, inputs.target, inputs.mouth_mask, cfg.train.mouth_loss_weight,
                               inputs.sample_weights)
        engine.backward(terms.total)
        engine.step()
        losses.append(float(terms.total.detach()))
    assert min(losses[-5:]) <= 0.5 * losses[0], losses


def _trained_stage1(synthetic_shards, out) -> dict[str, torch.Tensor]:
    """One stage I step into ``out``; its exported weights by parameter name (what later stages start from)."""
    from model.build import build_modules
    from model.checkpoints import load_vexpress_weights
    from training.trainer import Trainer, resolve_init_weights

    Trainer(_cfg(synthetic_shards, out, 1, "train.max_steps=1")).run()
    stage1 = build_modules(load("tiny/stage1").model, pretrained=False)
    load_vexpress_weights(stage1, resolve_init_weights(str(out)))
    return {k: v.clone() for k, v in stage1.named_parameters()}


def test_stage_two_changes_exactly_its_group_and_keeps_stage_one(synthetic_shards, tmp_path):
    from model.stages import trainable_parameter_names
    from training.trainer import Trainer

    before = _trained_stage1(synthetic_shards, tmp_path / "stage1")

    trainer = Trainer(_cfg(synthetic_shards, tmp_path / "stage2", 2, "train.max_steps=3", "train.lr=1e-3",
                           f"train.init_from={tmp_path / 'stage1'}"))
    trainer.run()
    after = dict(trainer.modules.named_parameters())
    group = trainable_parameter_names(trainer.modules, 2)
    assert group and len(group) < len(after)
    for name, value in after.items():
        if name in group:
            assert not torch.equal(value, before[name]), f"{name} did not change"
        else:
            assert torch.equal(value, before[name]), f"{name} (frozen in stage II) changed"
    zero_init = [n for n in group if n.startswith("denoising_unet.") and n.endswith((".attn2.to_out.0.weight", ".proj_out.weight"))]
    assert zero_init and all(before[n].abs().max() == 0 for n in zero_init)  # zero-initialised ...
    assert all(after[n].abs().max() > 0 for n in zero_init)  # ... and trained


def test_stage_three_trains_all_but_the_reference_net_up_blocks_3(synthetic_shards, tmp_path):
    from training.trainer import Trainer

    before = _trained_stage1(synthetic_shards, tmp_path / "stage1")
    trainer = Trainer(_cfg(synthetic_shards, tmp_path / "stage3", 3, "train.max_steps=2", "train.lr=1e-3",
                           f"train.init_from={tmp_path / 'stage1'}"))
    trainer.run()
    after = dict(trainer.modules.named_parameters())
    up3 = {n for n in after if n.startswith("reference_net.up_blocks.3.")}
    assert up3 and {n for n, p in after.items() if not p.requires_grad} == up3
    assert trainer.counts["frozen_tensors"] == len(up3)
    assert all(torch.equal(after[n], before[n]) for n in up3)
    changed = {n for n in after if n not in up3 and not torch.equal(after[n], before[n])}
    # conv_out: nothing reads the ReferenceNet's output, so it gets no gradient (tests/model/test_unet_3d.py)
    rest = [n for n in after if n.startswith("reference_net.") and n not in up3 and ".conv_out." not in f".{n}"]
    assert set(rest) <= changed and len(changed) > 0.9 * (len(after) - len(up3))


class _Crash(RuntimeError):
    pass


# One fp32 rank runs ZeRO-2 as stage 0 (train.one_rank_shortcut); the shipped zero2.json named explicitly
# keeps ZeRO-2's partitioned optimizer checkpoint, the layout multi-rank runs save and resume.
@pytest.mark.parametrize("zero2_as_written", [False, True], ids=["one-rank-default", "zero2"])
def test_resume_after_a_kill_gives_the_same_losses_and_weights(synthetic_shards, tmp_path, zero2_as_written):
    from training.engine import DEEPSPEED_CONFIG_DIR
    from training.trainer import Trainer

    n = 2
    Trainer(_cfg(synthetic_shards, tmp_path / "stage1", 1, "train.max_steps=1")).run()
    args = (f"train.init_from={tmp_path / 'stage1'}", f"train.max_steps={2 * n}", f"train.checkpoint_every={n}",
            "train.lr=1e-3", "train.warmup_steps=3", "train.uncond_ratio=0.3", "data.shuffle_buffer=3",
            *([f"train.deepspeed_config={DEEPSPEED_CONFIG_DIR / 'zero2.json'}"] if zero2_as_written else []))
    straight = Trainer(_cfg(synthetic_shards, tmp_path / "straight", 2, *args))
    straight_losses = [m.loss for m in straight.run()]

    def crash_after_checkpoint(trainer, _metrics):
        if trainer.state.step == n + 1:  # one step past the checkpoint: that progress is lost
            raise _Crash

    first = Trainer(_cfg(synthetic_shards, tmp_path / "killed", 2, *args), hooks=(crash_after_checkpoint,))
    with pytest.raises(_Crash):
        first.run()
    zero_files = list((tmp_path / "killed").rglob("*zero_pp_rank_0_mp_rank_00_optim_states.pt"))
    assert bool(zero_files) == zero2_as_written  # ZeRO-2's partitioned optimizer state, or stage 0's plain one
    resumed = Trainer(_cfg(synthetic_shards, tmp_path / "killed", 2, *args), resume="auto")
    resumed_losses = [m.loss for m in resumed.run()]
    assert len(resumed_losses) == n
    assert resumed_losses == pytest.approx(straight_losses[n:], rel=1e-5, abs=1e-7)
    assert [m.loss for m in first.history[:n]] == pytest.approx(straight_losses[:n], rel=1e-6)
    a, b = dict(straight.modules.named_parameters()), dict(resumed.modules.named_parameters())
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert straight.engine.lr() == resumed.engine.lr()
