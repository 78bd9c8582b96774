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


def test_too_few_samples_is_a_clear_error_only_when_strict():
    x = np.random.default_rng(3).normal(size=(10, 32))
    with pytest.raises(RankDeficientError) as e:
        feature_statistics(x, name="fid generated", allow_rank_deficient=False)
    assert e.value.num_samples == 10 and e.value.dim == 32
    assert "fid generated" in str(e.value) and "33" in str(e.value)
    stats = feature_statistics(x)  # default: computed, and flagged
    assert not stats.full_rank and stats.num_samples == 10
    assert np.isfinite(frechet_distance(stats, stats))
    with pytest.raises(RankDeficientError, match="need at least 2"):
        feature_statistics(x[:1], ddof=1)  # no covariance at all
    assert feature_statistics(x[:1], ddof=0).cov.max() == 0.0  # StyleGAN-V's biased covariance of one sample


def pytorch_fid_formula(mu1, s1, mu2, s2, eps=1e-6) -> float:
    """pytorch-fid's calculate_frechet_distance (scipy sqrtm in float64, eps retry, real part)."""
    covmean, _ = scipy.linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s1)) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("n,dim,ddof", [(10, 64, 1), (50, 64, 1), (30, 128, 0), (100, 200, 0), (3, 200, 1),
                                        (2, 16, 0)])
def test_fewer_samples_than_dims_match_pytorch_fid_formula(n, dim, ddof):
    """n < dim + 1: a singular covariance; the references still return a number, and so do we (same value)."""
    rng = np.random.default_rng(n + dim)
    x1 = rng.normal(size=(n, dim))
    x2 = rng.normal(loc=0.1, size=(n, dim)) * 1.3
    ours = frechet_distance_from_features(x1, x2, ddof=ddof)
    ref = pytorch_fid_formula(x1.mean(0), np.cov(x1, rowvar=False, ddof=ddof),
                              x2.mean(0), np.cov(x2, rowvar=False, ddof=ddof))
    assert ours == pytest.approx(ref, rel=1e-6)


def test_summarize_stores_counts_and_rank_flag():
    from evaluation.frechet import RunningMoments, summarize

    rng = np.random.default_rng(8)
    a, b, empty = RunningMoments("a"), RunningMoments("b"), RunningMoments("empty")
    a.append(rng.normal(size=(5, 8)))
    b.append(rng.normal(size=(12, 8)))
    out = summarize("fvd", a, b, ddof=0, sides=("generated", "real"))
    assert out["fvd_samples_generated"] == 5 and out["fvd_samples_real"] == 12 and out["fvd_dim"] == 8
    assert out["fvd_rank_deficient"] is True and np.isfinite(out["fvd"])
    strict = summarize("fvd", a, b, ddof=0, sides=("generated", "real"), allow_rank_deficient=False)
    assert np.isnan(strict["fvd"]) and "full-rank" in strict["fvd_error"]
    none = summarize("fid_floor", b, empty, ddof=1, sides=("half1", "half2"))
    assert np.isnan(none["fid_floor"]) and none["fid_floor_samples_half2"] == 0 and "need at least 2" in none[
        "fid_floor_error"]


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
