"""Bootstrap confidence intervals over queries (Efron & Tibshirani, 1993).

Queries are resampled with replacement; every statistic of one router (or a difference between
two routers, paired: the same resamples for both) is recomputed on each resample. The 95%
interval is the bias-corrected and accelerated (BCa) percentile interval of those values
(Efron, 1987; Efron & Tibshirani, 1993, §14.3):

    z0 = Φ⁻¹(share of the resampled values below the estimate)
    α_low, α_high = Φ(z0 + (z0 + z) / (1 − a (z0 + z)))   for z = Φ⁻¹(0.025), Φ⁻¹(0.975)
    interval = the α_low and α_high quantiles of the resampled values

``z0`` corrects a median bias of the resamples, ``a`` (the acceleration) their skewness. For a
mean, ``a = Σ u³ / (6 (Σ u²)^{3/2})`` with ``u_i = x_i − x̄`` (the jackknife influence values of a
mean, Efron & Tibshirani eq. 14.15): :meth:`Bootstrap.mean_intervals`. For the frontier's AIQ
and differences of AIQ, ``a = 0`` (the bias-corrected "BC" interval): :func:`interval`.

Why not the plain percentile interval (the 2.5% and 97.5% quantiles): AIQ is the area under
the upper hull of noisy operating points, which lies above the truth on average (a maximum of
noisy values), and the hulls of the resamples lie further above. On 400 synthetic replicates
(tests/test_coverage.py) the percentile interval covered the true AIQ in 91.25% of them and
lay above it 16 times as often as below (8.25% against 0.5% of the replicates); the BC interval
covers 94.25% (3.75% and 2.0%). For means (quality, cost, the off-policy estimates) z0 is about 0 and the
two agree within noise (93-95%), except that ``a`` moves the interval of a skewed
importance-weighted mean towards its long tail (IPS under ε-greedy logging: 95.75% instead of
93%, 6.25% of misses on one side).

No bootstrap interval reaches its nominal coverage when a few rounds carry large importance
weights: with ε-greedy logging at ε = 0.2 over five models (weight 25 on about 7 matched
rounds in 1,000), SNIPS and DR covered only 80-89% whatever the variant (percentile, BCa,
resampling SNIPS's ratio), since in 29% of the samples none of those rounds fails and the
sample's spread misses theirs. tests/test_coverage.py holds every interval to its coverage of
the synthetic generator's known truth where the weights are moderate (at most 10).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri
from threadpoolctl import threadpool_limits

_CHUNK_COUNTS = 4_000_000  # (resample, query) counts held in memory at once


@dataclass(frozen=True)
class Bootstrap:
    """Seeded resamples of ``n_queries``; the same object gives the same (paired) resamples."""

    n_queries: int
    resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_queries < 1 or self.resamples < 1:
            raise ValueError("bootstrap needs at least one query and one resample")

    def means(self, values: np.ndarray) -> np.ndarray:
        """Means of ``values`` (..., N) over each resample: shape (..., B).

        A resample's mean is Σ_i count_i · x_i / N, with count_i how often query i was drawn:
        one matrix product per chunk of resamples (memory stays bounded for large logs), on one
        BLAS thread: these short products gain nothing from OpenBLAS's threads on a small shared
        machine, and one thread sums in the same order everywhere.
        """
        values = np.asarray(values, dtype=float)
        if values.shape[-1] != self.n_queries:
            raise ValueError(f"values have {values.shape[-1]} queries, bootstrap has {self.n_queries}")
        rows = values.reshape(-1, self.n_queries)
        with threadpool_limits(limits=1, user_api="blas"):
            sums = np.concatenate([rows @ counts.T for counts in self._counts()], axis=-1)
        return (sums / self.n_queries).reshape(*values.shape[:-1], self.resamples)

    def mean_intervals(self, values: np.ndarray, level: float = 0.95) -> np.ndarray:
        """BCa intervals of the means of ``values`` (..., N): shape (..., 2), [low, high] per row."""
        values = np.asarray(values, dtype=float)
        samples = self.means(values).reshape(-1, self.resamples)
        rows = values.reshape(-1, self.n_queries)
        bounds = [
            interval(resampled, float(row.mean()), level, _mean_acceleration(row))
            for resampled, row in zip(samples, rows)
        ]
        return np.array(bounds, dtype=float).reshape(*values.shape[:-1], 2)

    def _counts(self) -> Iterator[np.ndarray]:
        """How often each query is drawn in each resample, (resamples in the chunk, N), chunk by chunk.

        The draws come from one generator seeded with ``seed``, in the same order whatever is
        resampled, so every call sees the same resamples.
        """
        rng = np.random.default_rng(self.seed)
        chunk = max(1, _CHUNK_COUNTS // self.n_queries)
        for start in range(0, self.resamples, chunk):
            size = min(chunk, self.resamples - start)
            index = rng.integers(self.n_queries, size=(size, self.n_queries))
            index += np.arange(size)[:, None] * self.n_queries  # one bin range per resample
            counts = np.bincount(index.ravel(), minlength=size * self.n_queries)
            yield counts.reshape(size, self.n_queries).astype(float)


def interval(samples: np.ndarray, estimate: float, level: float = 0.95, acceleration: float = 0.0) -> list[float]:
    """BCa interval [low, high] from bootstrap ``samples`` of a statistic whose value is ``estimate``.

    ``acceleration`` 0 gives the bias-corrected (BC) percentile interval. The share of samples
    below the estimate counts ties as half, and is kept within half a sample of 0 and 1 so that
    z0 stays finite.
    """
    samples = np.asarray(samples, dtype=float)
    count = len(samples)
    below = (np.count_nonzero(samples < estimate) + 0.5 * np.count_nonzero(samples == estimate)) / count
    z0 = ndtri(np.clip(below, 0.5 / count, 1.0 - 0.5 / count))
    z = ndtri(np.array([(1.0 - level) / 2.0, (1.0 + level) / 2.0]))
    levels = ndtr(z0 + (z0 + z) / (1.0 - acceleration * (z0 + z)))
    low, high = np.quantile(samples, levels)
    return [float(low), float(high)]


def _mean_acceleration(values: np.ndarray) -> float:
    """BCa acceleration of a mean: Σ u³ / (6 (Σ u²)^{3/2}), u = values − their mean (0 if constant)."""
    deviations = values - values.mean()
    spread = float(np.sum(deviations**2))
    return float(np.sum(deviations**3)) / (6.0 * spread**1.5) if spread > 0 else 0.0
