"""Objective pieces: per-frame conditional dropout rates, mouth-weighted loss, v target on zero-SNR schedule."""

from __future__ import annotations

import math

import pytest
import torch

from model.build import build_noise_scheduler
from training.dropout import sample_condition_masks
from training.losses import add_noise_and_velocity, diffusion_loss, min_snr_weights, offset_noise


def test_conditional_dropout_is_per_frame_with_the_configured_rates():
    g = torch.Generator().manual_seed(0)
    b, f = 4000, 12
    m = sample_condition_masks(b, f, stage=2, uncond_ratio=0.1, reference_drop_rate=0.2, kps_drop_rate=0.5,
                               generator=g)
    cond = ~m.uncond
    tol = lambda p, n: 5 * math.sqrt(p * (1 - p) / n)  # noqa: E731  (5 sigma)
    assert abs(m.uncond.float().mean() - 0.1) < tol(0.1, b)
    ref, kps = m.reference[cond], m.kps[cond]
    n = ref.numel()
    assert abs((1 - ref.mean()) - 0.2) < tol(0.2, n) and abs((1 - kps.mean()) - 0.5) < tol(0.5, n)
    # per frame: within one sample some frames are kept and some dropped
    mixed = ((ref.sum(1) > 0) & (ref.sum(1) < f)).float().mean()
    assert mixed > 0.9
    # independent of each other (P(both dropped) = 0.2 * 0.5)
    assert abs(((1 - ref) * (1 - kps)).mean() - 0.1) < tol(0.1, n)
    # CFG rows drop everything together
    assert m.reference[m.uncond].sum() == 0 and m.kps[m.uncond].sum() == 0 and m.audio[m.uncond].sum() == 0
    assert m.audio[cond].min() == 1


def test_stage_one_has_no_per_frame_dropout():
    m = sample_condition_masks(1000, 1, stage=1, uncond_ratio=0.1, reference_drop_rate=0.2, kps_drop_rate=0.5,
                               generator=torch.Generator().manual_seed(1))
    assert torch.equal(m.reference[:, 0], (~m.uncond).float()) and torch.equal(m.kps, m.reference)


def test_mouth_weighted_loss_equals_hand_computed_weighted_mse():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 4, 3, 5, 5, generator=g), torch.randn(2, 4, 3, 5, 5, generator=g)
    mask = torch.zeros(2, 1, 3, 5, 5)
    mask[0, 0, :, 1:3, 2:4] = 1
    mask[1, 0, 1, 0:2, 0:5] = 1
    w = 100.0
    terms = diffusion_loss(pred, target, mask, w)
    expected = 0.0
    mouth_sum, mouth_n = 0.0, 0
    for i in range(2):
        acc = 0.0
        for c in range(4):
            for f in range(3):
                for y in range(5):
                    for x in range(5):
                        e = float(pred[i, c, f, y, x] - target[i, c, f, y, x]) ** 2
                        inside = float(mask[i, 0, f, y, x])
                        acc += (w if inside else 1.0) * e
                        if inside:
                            mouth_sum, mouth_n = mouth_sum + e, mouth_n + 1
        expected += acc / (4 * 3 * 5 * 5)
    assert float(terms.total) == pytest.approx(expected / 2, rel=1e-5)
    assert float(terms.mouth) == pytest.approx(mouth_sum / mouth_n, rel=1e-5)
    sw = torch.tensor([0.5, 2.0])
    weighted = diffusion_loss(pred, target, mask, w, sample_weights=sw)
    per_sample = [float((( 1 + (w - 1) * mask[i]) * (pred[i] - target[i]) ** 2).mean()) for i in range(2)]
    assert float(weighted.total) == pytest.approx((0.5 * per_sample[0] + 2.0 * per_sample[1]) / 2, rel=1e-5)


def test_v_target_matches_diffusers_on_the_zero_snr_schedule():
    sched = build_noise_scheduler("ddim")
    assert sched.config.prediction_type == "v_prediction" and float(sched.alphas_cumprod[-1]) == 0.0
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 2, 4, 4, generator=g), torch.randn(3, 4, 2, 4, 4, generator=g)
    t = torch.tensor([0, 500, 999])
    noisy, v = add_noise_and_velocity(sched.alphas_cumprod, x0, noise, t)
    torch.testing.assert_close(noisy, sched.add_noise(x0, noise, t))
    torch.testing.assert_close(v, sched.get_velocity(x0, noise, t))
    torch.testing.assert_close(noisy[2], noise[2])  # terminal step is pure noise (zero SNR)
    w = min_snr_weights(sched.alphas_cumprod, t, gamma=5.0)
    assert float(w[2]) == 0.0 and 0 < float(w[1]) <= 1 and float(w[0]) == pytest.approx(5.0 / (float(
        sched.alphas_cumprod[0] / (1 - sched.alphas_cumprod[0])) + 1), rel=1e-4)


def test_noise_offset_adds_a_per_channel_constant():
    a = offset_noise((2, 4, 3, 8, 8), 0.0, torch.Generator().manual_seed(0))
    b = offset_noise((2, 4, 3, 8, 8), 0.5, torch.Generator().manual_seed(0))
    diff = b - a
    assert diff.std(dim=(2, 3, 4)).max() < 1e-6 and diff.abs().max() > 0
