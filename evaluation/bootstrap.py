"""Bootstrap confidence intervals over queries (Efron & Tibshirani, 1993, percentile method).

Queries are resampled with replacement; every statistic of one router (or a difference between
two routers, paired: the same resamples for both) is recomputed on each resample, and the
2.5% and 97.5% quantiles of those values form the 95% interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CHUNK_VALUES = 20_000_000  # resampled values held in memory at once


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

        Resample indices are drawn in chunks from a generator seeded with ``seed``, so memory
        stays bounded for large logs and every call sees the same resamples.
        """
        values = np.asarray(values, dtype=float)
        if values.shape[-1] != self.n_queries:
            raise ValueError(f"values have {values.shape[-1]} queries, bootstrap has {self.n_queries}")
        rows = int(np.prod(values.shape[:-1], dtype=np.int64))
        chunk = max(1, _CHUNK_VALUES // max(rows * self.n_queries, 1))
        rng = np.random.default_rng(self.seed)
        out = []
        for start in range(0, self.resamples, chunk):
            size = min(chunk, self.resamples - start)
            index = rng.integers(self.n_queries, size=(size, self.n_queries))
            out.append(values[..., index].mean(axis=-1))
        return np.concatenate(out, axis=-1)


def interval(samples: np.ndarray, level: float = 0.95) -> list[float]:
    """Percentile interval [low, high] of bootstrap ``samples``."""
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(np.asarray(samples, dtype=float), [tail, 1.0 - tail])
    return [float(low), float(high)]
