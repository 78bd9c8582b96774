"""Fréchet distance between two Gaussians fitted to feature sets (the core of FID and FVD).

Conventions
-----------
- ``features``: a 2-D array ``(num_samples, dim)``; any float dtype, converted to float64.
- Statistics are float64. ``ddof=1`` (unbiased covariance) is the pytorch-fid convention used for FID;
  ``ddof=0`` (divide by N) is StyleGAN-V's ``FeatureStats.get_mean_cov`` convention used for FVD.
- ``d² = |μ1 − μ2|² + tr(Σ1) + tr(Σ2) − 2·tr((Σ1 Σ2)^½)``.

The trace of the matrix square root is computed from the eigenvalues of the symmetric PSD matrix
``Σ1^½ Σ2 Σ1^½`` (which has the same eigenvalues as ``Σ1 Σ2``). This is exact for PSD covariances, needs no
complex arithmetic and never fails to converge, unlike a general ``sqrtm`` of the non-symmetric product
(for which pytorch-fid adds ``eps·I`` when it fails).

Few samples: a covariance of ``dim`` features estimated from ``n ≤ dim`` samples is singular, and the
distance then carries a large estimation bias. The references (pytorch-fid, StyleGAN-V) compute it anyway,
and so do we by default: :class:`FeatureStatistics` records ``num_samples`` and ``full_rank`` and
:func:`summarize` stores both next to the value, so no number is read without its sample count. With
``allow_rank_deficient=False`` such statistics raise :class:`RankDeficientError` (carrying the counts)
instead. Fewer than ``ddof + 1`` samples give no covariance at all and always raise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class RankDeficientError(ValueError):
    """Fewer samples than needed for a full-rank covariance; carries the counts."""

    def __init__(self, name: str, num_samples: int, dim: int, minimum: int | None = None):
        self.name, self.num_samples, self.dim = name, num_samples, dim
        if minimum is not None:
            super().__init__(f"{name}: {num_samples} samples cannot give a covariance (need at least {minimum})")
            return
        super().__init__(
            f"{name}: {num_samples} samples of {dim}-d features cannot give a full-rank covariance "
            f"(need at least {dim + 1}); add samples, use lower-dimensional features, or pass "
            "allow_rank_deficient=True to compute it anyway"
        )


@dataclass(frozen=True)
class FeatureStatistics:
    mean: np.ndarray  # (dim,) float64
    cov: np.ndarray  # (dim, dim) float64
    num_samples: int
    full_rank: bool  # num_samples > dim

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])


def feature_statistics(
    features: np.ndarray, *, ddof: int = 1, name: str = "features", allow_rank_deficient: bool = True
) -> FeatureStatistics:
    """Mean and covariance (float64) of ``features`` ``(num_samples, dim)``."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected (num_samples, dim) features, got shape {x.shape}")
    n, d = x.shape
    if n < ddof + 1:
        raise RankDeficientError(name, n, d, minimum=ddof + 1)  # not even a covariance
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: features contain NaN or inf ({int((~np.isfinite(x)).sum())} values)")
    full_rank = n > d
    if not full_rank and not allow_rank_deficient:
        raise RankDeficientError(name, n, d)
    mean = x.mean(axis=0)
    centered = x - mean
    cov = centered.T @ centered / (n - ddof)
    return FeatureStatistics(mean=mean, cov=cov, num_samples=n, full_rank=full_rank)


def _clip_rounding(eig: np.ndarray) -> np.ndarray:
    """Zero the eigenvalues that are rounding noise (|λ| below dim·eps·λ_max); sqrt would amplify them."""
    tol = max(float(eig.max(initial=0.0)), 0.0) * eig.shape[0] * np.finfo(np.float64).eps
    return np.where(eig > tol, eig, 0.0)


def _psd_sqrt(mat: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix."""
    w, v = np.linalg.eigh((mat + mat.T) / 2)
    return (v * np.sqrt(_clip_rounding(w))) @ v.T


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """``tr((Σ1 Σ2)^½)`` via the eigenvalues of the symmetric PSD matrix ``Σ1^½ Σ2 Σ1^½``."""
    s1 = _psd_sqrt(cov1)
    m = s1 @ cov2 @ s1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(_clip_rounding(eig)).sum())


def frechet_distance_from_moments(mu1, cov1, mu2, cov2) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2), float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.shape[0],) * 2:
        raise ValueError(
            f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, cov {cov1.shape} vs {cov2.shape}"
        )
    diff = mu1 - mu2
    tr1, tr2 = float(np.trace(cov1)), float(np.trace(cov2))
    value = float(diff @ diff) + tr1 + tr2 - 2.0 * trace_sqrt_product(cov1, cov2)
    # Rounding can leave a tiny negative number for identical sets; anything larger is a real error.
    scale = max(tr1 + tr2, 1e-300)
    if value < 0:
        if value < -1e-9 * scale:
            raise FloatingPointError(f"Fréchet distance came out negative ({value}); covariances not PSD?")
        value = 0.0
    return value


def frechet_distance(stats1: FeatureStatistics, stats2: FeatureStatistics) -> float:
    """Fréchet distance between two :class:`FeatureStatistics`."""
    if stats1.dim != stats2.dim:
        raise ValueError(f"feature dims differ: {stats1.dim} vs {stats2.dim}")
    return frechet_distance_from_moments(stats1.mean, stats1.cov, stats2.mean, stats2.cov)


def frechet_distance_from_features(
    features1: np.ndarray,
    features2: np.ndarray,
    *,
    ddof: int = 1,
    allow_rank_deficient: bool = True,
    names: tuple[str, str] = ("generated", "ground truth"),
) -> float:
    """Convenience: statistics of both sets, then their Fréchet distance."""
    s1 = feature_statistics(features1, ddof=ddof, name=names[0], allow_rank_deficient=allow_rank_deficient)
    s2 = feature_statistics(features2, ddof=ddof, name=names[1], allow_rank_deficient=allow_rank_deficient)
    return frechet_distance(s1, s2)


class RunningMoments:
    """Feature sums accumulated batch by batch (bounded memory for long test sets), float64.

    Sums are taken around a fixed shift (the first batch's mean) so the covariance does not suffer the
    cancellation of ``E[xxᵀ] − μμᵀ`` when features have a large mean."""

    def __init__(self, name: str = "features"):
        self.name = name
        self.num_samples = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    def append(self, features: np.ndarray) -> None:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"{self.name}: expected (num_samples, dim) features, got shape {x.shape}")
        if len(x) == 0:
            return
        if not np.isfinite(x).all():
            raise ValueError(f"{self.name}: features contain NaN or inf")
        if self._shift is None:
            self._shift = x.mean(axis=0)
            self._sum = np.zeros(x.shape[1])
            self._outer = np.zeros((x.shape[1], x.shape[1]))
        elif x.shape[1] != self._shift.shape[0]:
            raise ValueError(f"{self.name}: feature dim changed from {self._shift.shape[0]} to {x.shape[1]}")
        c = x - self._shift
        self._sum += c.sum(axis=0)
        self._outer += c.T @ c
        self.num_samples += len(x)

    @property
    def dim(self) -> int:
        return 0 if self._shift is None else int(self._shift.shape[0])

    def statistics(self, ddof: int = 1, allow_rank_deficient: bool = True) -> FeatureStatistics:
        n, d = self.num_samples, self.dim
        if n < ddof + 1:
            raise RankDeficientError(self.name, n, d, minimum=ddof + 1)
        if n <= d and not allow_rank_deficient:
            raise RankDeficientError(self.name, n, d)
        mean_c = self._sum / n
        cov = (self._outer - n * np.outer(mean_c, mean_c)) / (n - ddof)
        return FeatureStatistics(mean=mean_c + self._shift, cov=(cov + cov.T) / 2, num_samples=n, full_rank=n > d)


def summarize(prefix: str, a: RunningMoments, b: RunningMoments, *, ddof: int, sides: tuple[str, str],
              allow_rank_deficient: bool = True) -> dict:
    """``{prefix: distance, prefix_samples_<side>: n, prefix_dim, prefix_rank_deficient}``; the distance is
    NaN (with ``prefix_error``) only when a side has too few samples for any covariance, or fewer than
    ``dim + 1`` with ``allow_rank_deficient=False``."""
    out: dict = {f"{prefix}_samples_{sides[0]}": a.num_samples, f"{prefix}_samples_{sides[1]}": b.num_samples,
                 f"{prefix}_dim": max(a.dim, b.dim)}
    out[f"{prefix}_rank_deficient"] = min(a.num_samples, b.num_samples) <= out[f"{prefix}_dim"]
    try:
        out[prefix] = frechet_distance(a.statistics(ddof, allow_rank_deficient),
                                       b.statistics(ddof, allow_rank_deficient))
    except RankDeficientError as exc:
        out[prefix] = float("nan")
        out[f"{prefix}_error"] = str(exc)
    return out
