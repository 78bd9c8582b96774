"""The DeepSpeed engine's settings, and that one rank, with or without ZeRO, does the plain PyTorch loop's math."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from training.config import TrainConfig
from training.engine import DEEPSPEED_CONFIG_DIR, ONE_RANK_ZERO12, deepspeed_config

torch.set_num_threads(1)  # as one DeepSpeed rank with OMP_NUM_THREADS=1


def test_one_rank_runs_fp32_zero12_as_stage0_and_many_ranks_keep_the_shipped_files():
    shipped = json.loads((DEEPSPEED_CONFIG_DIR / "zero2.json").read_text())["zero_optimization"]
    for stage in (1, 2):
        one = deepspeed_config(TrainConfig(zero_stage=stage, max_grad_norm=1.0), "fp32", world_size=1)
        assert one["zero_optimization"]["stage"] == 0
        assert one["gradient_clipping"] == 0.0  # the engine clips, with torch's foreach kernels
        bf16 = deepspeed_config(TrainConfig(zero_stage=stage, max_grad_norm=1.0), "bf16", world_size=1)
        assert bf16["zero_optimization"] == {**shipped, **ONE_RANK_ZERO12, "stage": stage}
        assert bf16["gradient_clipping"] == 1.0
    two = deepspeed_config(TrainConfig(max_grad_norm=0.7), "fp32", world_size=2)
    assert two["zero_optimization"] == shipped and two["gradient_clipping"] == 0.7
    shipped3 = json.loads((DEEPSPEED_CONFIG_DIR / "zero3.json").read_text())["zero_optimization"]
    assert deepspeed_config(TrainConfig(zero_stage=3), "fp32", world_size=1)["zero_optimization"] == shipped3


def test_the_one_rank_shortcut_can_be_turned_off():
    shipped = json.loads((DEEPSPEED_CONFIG_DIR / "zero2.json").read_text())["zero_optimization"]
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(zero_stage=2, one_rank_shortcut=False)
        assert deepspeed_config(cfg, precision, world_size=1)["zero_optimization"] == shipped


def test_an_explicit_deepspeed_config_is_used_as_written(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2, "contiguous_gradients": True}}))
    ds = deepspeed_config(TrainConfig(deepspeed_config=str(path)), "fp32", world_size=1)
    assert ds["zero_optimization"] == {"stage": 2, "contiguous_gradients": True}
    assert ds["gradient_clipping"] == TrainConfig().max_grad_norm  # ZeRO clips inside DeepSpeed


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 4))


ZERO2_AS_WRITTEN = str(DEEPSPEED_CONFIG_DIR / "zero2.json")


@pytest.mark.parametrize("zero_stage, ds_file, max_grad_norm, grad_accum", [
    (2, "", 0.5, 1),  # the default: one rank runs it as stage 0, the engine clips
    (1, "", 0.0, 2),  # no clipping: the norm is still reported; accumulation over two micro-batches
    (2, ZERO2_AS_WRITTEN, 0.5, 2),  # real ZeRO-2 partitions (of one), DeepSpeed clips
])
def test_one_rank_matches_the_plain_loop_step_by_step(zero_stage, ds_file, max_grad_norm, grad_accum):
    from benchmarks.torch_engine import TorchEngine
    from training.engine import DeepSpeedEngine, init_distributed

    init_distributed()
    # lr and a tight clipping norm large enough that clipping, warmup and weight decay all act
    cfg = TrainConfig(lr=1e-2, max_grad_norm=max_grad_norm, warmup_steps=2, weight_decay=0.01,
                      zero_stage=zero_stage, deepspeed_config=ds_file, grad_accum=grad_accum, precision="fp32")
    ds, plain = DeepSpeedEngine(_model(), cfg), TorchEngine(_model(), cfg)
    assert ds.zero_stage == (2 if ds_file else 0)
    data = torch.Generator().manual_seed(1)
    norms = []
    for step in range(4 * grad_accum):
        x, y = torch.randn(2, 8, generator=data), torch.randn(2, 4, generator=data)
        losses, boundaries = [], []
        for engine in (ds, plain):
            loss = nn.functional.mse_loss(engine.forward(x), y)
            engine.backward(loss)
            boundaries.append(engine.step())
            losses.append(float(loss.detach()))
        assert boundaries == [(step + 1) % grad_accum == 0] * 2
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
        if boundaries[0]:
            assert ds.grad_norm() == pytest.approx(plain.grad_norm(), rel=1e-4)
            norms.append(plain.grad_norm())
            assert ds.lr() == pytest.approx(plain.lr())
    assert max(norms) > max_grad_norm  # clipping acted (and with clipping off the norm is still measured)
    for a, b in zip(ds.module.parameters(), plain.module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
