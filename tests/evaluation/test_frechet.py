"""Fréchet distance against an independent float64 scipy reference (the pytorch-fid formula)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from evaluation.frechet import (
    RankDeficientError,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
)


def scipy_reference(x1: np.ndarray, x2: np.ndarray) -> float:
    """Independent reference: np.cov + scipy.linalg.sqrtm of the (non-symmetric) product."""
    mu1, mu2 = x1.mean(0), x2.mean(0)
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("dim,n", [(8, 50), (64, 300), (128, 400)])
def test_matches_scipy_reference(dim, n):
    rng = np.random.default_rng(dim)
    mix = rng.normal(size=(dim, dim))
    x1 = rng.normal(size=(n, dim)) @ mix
    x2 = rng.normal(loc=0.3, size=(n, dim)) @ (mix + 0.2 * rng.normal(size=(dim, dim)))
    ours = frechet_distance_from_features(x1.astype(np.float32), x2.astype(np.float32))
    ref = scipy_reference(x1.astype(np.float32).astype(np.float64), x2.astype(np.float32).astype(np.float64))
    assert ours == pytest.approx(ref, rel=1e-6)


def test_set_against_itself_is_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 64)) * 5 + 3
    assert frechet_distance_from_features(x, x) < 1e-6


def test_shifted_mean_only():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 16))
    shift = np.arange(16, dtype=np.float64)
    assert frechet_distance_from_features(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_ddof0_is_stylegan_v_convention():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 4))
    s = feature_statistics(x, ddof=0)
    mean = x.sum(0) / len(x)
    np.testing.assert_allclose(s.cov, x.T @ x / len(x) - np.outer(mean, mean), atol=1e-12)


def test_too_few_samples_is_a_clear_error():
    x = np.random.default_rng(3).normal(size=(10, 32))
    with pytest.raises(RankDeficientError) as e:
        feature_statistics(x, name="fid generated")
    assert e.value.num_samples == 10 and e.value.dim == 32
    assert "fid generated" in str(e.value) and "33" in str(e.value)
    stats = feature_statistics(x, allow_rank_deficient=True)
    assert not stats.full_rank
    assert np.isfinite(frechet_distance(stats, stats))


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_samples, dim"):
        feature_statistics(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        feature_statistics(np.full((40, 3), np.nan))
    a = feature_statistics(np.random.default_rng(4).normal(size=(40, 3)))
    b = feature_statistics(np.random.default_rng(5).normal(size=(40, 4)))
    with pytest.raises(ValueError, match="dims differ"):
        frechet_distance(a, b)


def test_running_moments_match_batch_statistics():
    from evaluation.frechet import RunningMoments

    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 12)) * 0.01 + 1000.0  # large mean, small spread: the cancellation case
    acc = RunningMoments("acc")
    for chunk in np.array_split(x, 7):
        acc.append(chunk)
    for ddof in (0, 1):
        ref = feature_statistics(x, ddof=ddof)
        got = acc.statistics(ddof=ddof)
        np.testing.assert_allclose(got.mean, ref.mean, rtol=1e-12)
        np.testing.assert_allclose(got.cov, ref.cov, rtol=1e-8, atol=1e-14)
    with pytest.raises(RankDeficientError):
        RunningMoments("few").statistics()
