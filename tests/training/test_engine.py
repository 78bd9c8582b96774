"""The DeepSpeed engine's settings, and that one ZeRO-2 rank does the plain PyTorch loop's math."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from training.config import TrainConfig
from training.engine import DEEPSPEED_CONFIG_DIR, ONE_RANK_ZERO12, deepspeed_config

torch.set_num_threads(1)  # as one DeepSpeed rank with OMP_NUM_THREADS=1


def test_one_rank_skips_the_scatter_and_contiguous_copies_and_many_ranks_keep_zero2_json():
    shipped = json.loads((DEEPSPEED_CONFIG_DIR / "zero2.json").read_text())["zero_optimization"]
    one = deepspeed_config(TrainConfig(), "fp32", world_size=1)["zero_optimization"]
    two = deepspeed_config(TrainConfig(), "fp32", world_size=2)["zero_optimization"]
    assert one == {**shipped, **ONE_RANK_ZERO12}
    assert one["contiguous_gradients"] is False and one["reduce_scatter"] is False
    assert two == shipped


def test_an_explicit_deepspeed_config_is_used_as_written(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2, "contiguous_gradients": True}}))
    ds = deepspeed_config(TrainConfig(deepspeed_config=str(path)), "fp32", world_size=1)
    assert ds["zero_optimization"] == {"stage": 2, "contiguous_gradients": True}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 4))


@pytest.mark.parametrize("zero_stage", [1, 2])
def test_one_zero_rank_matches_the_plain_loop_step_by_step(zero_stage):
    from training.engine import DeepSpeedEngine, TorchEngine, init_distributed

    init_distributed()
    # lr and a tight clipping norm large enough that clipping, warmup and weight decay all act
    cfg = TrainConfig(lr=1e-2, max_grad_norm=0.5, warmup_steps=2, weight_decay=0.01, zero_stage=zero_stage,
                      precision="fp32")
    ds, plain = DeepSpeedEngine(_model(), cfg), TorchEngine(_model(), cfg)
    data = torch.Generator().manual_seed(1)
    for _ in range(4):
        x, y = torch.randn(2, 8, generator=data), torch.randn(2, 4, generator=data)
        losses = []
        for engine in (ds, plain):
            loss = nn.functional.mse_loss(engine.forward(x), y)
            engine.backward(loss)
            assert engine.step()
            losses.append(float(loss.detach()))
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
        assert ds.grad_norm() == pytest.approx(plain.grad_norm(), rel=1e-4)
        assert ds.lr() == pytest.approx(plain.lr())
    for a, b in zip(ds.module.parameters(), plain.module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
