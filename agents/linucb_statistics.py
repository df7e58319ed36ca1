"""LinUCB's sufficient statistics over blocks of logged outcomes: sums that add up exactly.

Per arm, Σ x xᵀ, Σ x · quality and Σ x · cost (and counts and plain sums), computed in float64 from
one symmetric product per chunk of rows (:func:`_moments`). :meth:`agents.linucb.LinUCB.partial_fit`
adds them to its ridge statistics; ``train.py --ray`` sums them over the blocks of a distributed
log (:func:`agents.linucb.linucb_from_statistics` solves the sum).
"""

from __future__ import annotations

import numpy as np

#: Rows of [X | targets] widened to float64 at a time by :func:`_moments` (~16 MiB per chunk):
#: bounds the extra memory of a float32 log and keeps each chunk in cache-friendly BLAS calls.
_CHUNK_BYTES = 16 * 2**20


def _moments(x: np.ndarray, targets: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """XᵀX (d, d) and Xᵀ[targets] (d, T) in float64, from one symmetric product per chunk.

    Each chunk of rows is copied once into a float64 buffer Z = [X | targets] (this copy is the
    float32 → float64 widening, which a plain ``x.astype`` would do anyway, for all N rows at once)
    and ZᵀZ is one BLAS ``syrk`` (numpy uses it for ``Z.T @ Z``): XᵀX and every Xᵀy come out of
    one pass over the data, where separate ``X.T @ X`` and ``X.T @ Y`` would read X twice.
    """
    n, d = x.shape
    width = d + sum(target.shape[1] for target in targets)
    total = np.zeros((width, width))
    step = max(1, _CHUNK_BYTES // (8 * width))
    buffer = np.empty((min(step, n), width))
    for start in range(0, n, step):
        stop = min(start + step, n)
        chunk = buffer[: stop - start]
        chunk[:, :d] = x[start:stop]
        column = d
        for target in targets:
            chunk[:, column : column + target.shape[1]] = target[start:stop]
            column += target.shape[1]
        total += chunk.T @ chunk
    return total[:d, :d], total[:d, d:]


class LinUCBStatistics:
    """LinUCB's sufficient statistics over a block of logged outcomes; blocks add up exactly.

    Per arm k, in float64 and *without* the ridge λI: ``gram`` Σ x xᵀ (K, d, d), ``target_quality``
    Σ x · quality and ``target_cost`` Σ x · cost (K, d), ``observations`` (K,), and the plain sums
    ``sum_quality`` and ``sum_cost`` (K,) that the training means need (baselines, the frontier's
    cost-weight grid); ``rows`` (0-d) counts the rows of the log they sum over: what a learner
    solved from them has learned from (its ``steps_done``). Statistics are sums, so those of the
    blocks of a distributed dataset, added in any order, equal those of the whole data up to
    floating-point reassociation, and
    :func:`~agents.linucb.linucb_from_statistics` then yields what :meth:`~agents.linucb.LinUCB.fit`
    (full information) or :meth:`~agents.linucb.LinUCB.partial_fit` with ``actions`` (bandit
    feedback) yields on all of it.
    """

    __slots__ = ("gram", "observations", "rows", "sum_cost", "sum_quality", "target_cost", "target_quality")

    def __init__(
        self,
        gram: np.ndarray,
        target_quality: np.ndarray,
        target_cost: np.ndarray,
        observations: np.ndarray,
        sum_quality: np.ndarray,
        sum_cost: np.ndarray,
        rows: np.ndarray,
    ) -> None:
        k, d = target_quality.shape
        shapes = {
            "gram": (gram.shape, (k, d, d)),
            "target_cost": (target_cost.shape, (k, d)),
            "observations": (observations.shape, (k,)),
            "sum_quality": (sum_quality.shape, (k,)),
            "sum_cost": (sum_cost.shape, (k,)),
            "rows": (np.shape(rows), ()),
        }
        for name, (shape, expected) in shapes.items():
            if shape != expected:
                raise ValueError(f"LinUCBStatistics.{name} must be {expected}, got {shape}")
        self.gram = np.asarray(gram, dtype=np.float64)
        self.target_quality = np.asarray(target_quality, dtype=np.float64)
        self.target_cost = np.asarray(target_cost, dtype=np.float64)
        self.observations = np.asarray(observations, dtype=np.int64)
        self.sum_quality = np.asarray(sum_quality, dtype=np.float64)
        self.sum_cost = np.asarray(sum_cost, dtype=np.float64)
        self.rows = np.asarray(rows, dtype=np.int64)

    @classmethod
    def zeros(cls, n_models: int, dimension: int) -> LinUCBStatistics:
        """The statistics of no data (the identity of ``+``)."""
        k, d = n_models, dimension
        return cls(
            np.zeros((k, d, d)), np.zeros((k, d)), np.zeros((k, d)), np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(())
        )

    @classmethod
    def of(
        cls,
        features: np.ndarray,
        quality: np.ndarray,
        cost: np.ndarray,
        actions: np.ndarray | None = None,
        n_models: int | None = None,
    ) -> LinUCBStatistics:
        """The statistics of one block, from outcomes as :meth:`~agents.linucb.LinUCB.partial_fit` takes them.

        Full information (``actions`` None): (N, d) features, (N, K) ``quality`` and ``cost``;
        every arm sees every row. Bandit feedback: ``actions`` (N,) with the (N,) logged ``quality``
        and ``cost``, and ``n_models`` (a block need not hold every arm); only the logged arm sees
        a row.
        """
        x = np.asarray(features)  # float32 is widened chunk by chunk (see _moments)
        q = np.asarray(quality, dtype=np.float64)
        c = np.asarray(cost, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (N, d), got {x.shape}")
        if actions is None:
            if q.ndim != 2 or q.shape[0] != len(x) or c.shape != q.shape:
                raise ValueError(f"full-information outcomes must be (N, K) with N = {len(x)}, got {q.shape}")
            k = q.shape[1]
            gram, cross = _moments(x, (q, c))
            ones = np.ones(len(x))  # column sums as BLAS products: several times faster than .sum(axis=0)
            return cls(
                np.repeat(gram[None], k, axis=0),
                cross[:, :k].T,
                cross[:, k:].T,
                np.full(k, len(x), dtype=np.int64),
                ones @ q,
                ones @ c,
                np.asarray(len(x)),
            )
        chosen_arm = np.asarray(actions, dtype=np.int64)
        if n_models is None:
            raise ValueError("bandit statistics need n_models (a block may lack an arm)")
        if chosen_arm.shape != (len(x),) or q.shape != chosen_arm.shape or c.shape != chosen_arm.shape:
            raise ValueError(f"bandit outcomes and actions must be (N,) with N = {len(x)}")
        statistics = cls.zeros(n_models, x.shape[1])
        statistics.rows = np.asarray(len(x), dtype=np.int64)
        for arm in range(n_models):
            rows = np.flatnonzero(chosen_arm == arm)
            gram, cross = _moments(x[rows], (q[rows, None], c[rows, None]))
            statistics.gram[arm] = gram
            statistics.target_quality[arm], statistics.target_cost[arm] = cross[:, 0], cross[:, 1]
            statistics.observations[arm] = len(rows)
            statistics.sum_quality[arm] = q[rows].sum()
            statistics.sum_cost[arm] = c[rows].sum()
        return statistics

    def __add__(self, other: LinUCBStatistics) -> LinUCBStatistics:
        """The statistics of both blocks together."""
        if other.gram.shape != self.gram.shape:
            raise ValueError(f"cannot add statistics of shapes {self.gram.shape} and {other.gram.shape}")
        return LinUCBStatistics(
            self.gram + other.gram,
            self.target_quality + other.target_quality,
            self.target_cost + other.target_cost,
            self.observations + other.observations,
            self.sum_quality + other.sum_quality,
            self.sum_cost + other.sum_cost,
            self.rows + other.rows,
        )

    def mean_quality(self) -> np.ndarray:
        """Mean observed quality per arm (NaN for an arm without observations)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sum_quality / self.observations

    def mean_cost(self) -> np.ndarray:
        """Mean observed cost per arm, USD per query (NaN for an arm without observations)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sum_cost / self.observations

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The fields as a one-row batch of arrays (what a Ray Data ``map_batches`` function returns)."""
        return {name: getattr(self, name)[None] for name in self.__slots__}

    @classmethod
    def from_arrays(cls, batch: dict[str, np.ndarray], row: int = 0) -> LinUCBStatistics:
        """One row of :meth:`as_arrays`-shaped batch columns."""
        fields = {name: np.asarray(batch[name][row]) for name in cls.__slots__}
        return cls(**fields)
