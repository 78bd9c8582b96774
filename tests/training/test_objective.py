"""Objective pieces: per-frame conditional dropout rates, mouth-weighted loss, v target on zero-SNR schedule."""

from __future__ import annotations

import math

import pytest
import torch

from model.schedulers import build_noise_scheduler
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


def _hand_alphas_cumprod() -> list[float]:
    """The official schedule by hand: scaled-linear betas, then the zero-terminal-SNR rescale of sqrt(alpha_bar)."""
    n, b0, b1 = 1000, 0.00085 ** 0.5, 0.012 ** 0.5
    acp, prod = [], 1.0
    for i in range(n):
        prod *= 1.0 - (b0 + (b1 - b0) * i / (n - 1)) ** 2
        acp.append(prod)
    first, last = acp[0] ** 0.5, acp[-1] ** 0.5
    return [((a ** 0.5 - last) * first / (first - last)) ** 2 for a in acp]


def test_min_snr_weights_by_timestep_in_both_forms():
    sched = build_noise_scheduler("ddim")
    acp = _hand_alphas_cumprod()
    assert sched.alphas_cumprod.tolist() == pytest.approx(acp, rel=1e-4, abs=1e-7)
    gamma, steps = 5.0, [0, 10, 50, 100, 130, 160, 300, 500, 700, 900, 999]
    t = torch.tensor(steps)
    official = min_snr_weights(sched.alphas_cumprod, t, gamma)  # the default form
    diffusers = min_snr_weights(sched.alphas_cumprod, t, gamma, form="diffusers")
    for i, step in enumerate(steps):
        snr = acp[step] / (1 - acp[step])
        assert float(official[i]) == pytest.approx(min(snr + 1, gamma) / (snr + 1), rel=1e-4, abs=1e-6), step
        assert float(diffusers[i]) == pytest.approx(min(snr, gamma) / (snr + 1), rel=1e-4, abs=1e-6), step
    by_step = dict(zip(steps, zip(official.tolist(), diffusers.tolist())))
    assert by_step[999] == (1.0, 0.0)  # zero terminal SNR: full weight officially, none in the diffusers form
    assert by_step[700][0] == 1.0 and by_step[700][1] == pytest.approx(0.055, abs=0.002)
    for step in (0, 10, 50, 100, 130):  # SNR >= gamma (t < ~140): both are gamma / (SNR + 1)
        assert by_step[step][0] == pytest.approx(by_step[step][1], rel=1e-4)
    assert by_step[160][1] < by_step[160][0] < 1.0 == by_step[300][0]  # official: full weight from t = 161 on
    assert min_snr_weights(sched.alphas_cumprod, t, 0.0).tolist() == [1.0] * len(steps)
    with pytest.raises(ValueError, match="form"):
        min_snr_weights(sched.alphas_cumprod, t, gamma, form="epsilon")


def test_min_snr_and_latent_sampling_defaults_and_checks():
    from training.config import TrainConfig

    cfg = TrainConfig()
    assert (cfg.min_snr_gamma, cfg.min_snr_form, cfg.latent_sampling) == (5.0, "official", "sample")
    with pytest.raises(ValueError, match="train.min_snr_form"):
        TrainConfig(min_snr_form="hang")
    with pytest.raises(ValueError, match="train.latent_sampling"):
        TrainConfig(latent_sampling="mode")


def test_noise_offset_adds_a_per_channel_constant():
    a = offset_noise((2, 4, 3, 8, 8), 0.0, torch.Generator().manual_seed(0))
    b = offset_noise((2, 4, 3, 8, 8), 0.5, torch.Generator().manual_seed(0))
    diff = b - a
    assert diff.std(dim=(2, 3, 4)).max() < 1e-6 and diff.abs().max() > 0
