"""LinUCB with disjoint arms and separate quality and cost models.

Li, Chu, Langford & Schapire (2010), "A contextual-bandit approach to personalized news article
recommendation", Algorithm 1. Per arm k, ridge statistics over the contexts x where k was observed:

    A_k = λ I + Σ x xᵀ,    b_k^q = Σ x · quality,    b_k^c = Σ x · cost
    θ_k^q = A_k⁻¹ b_k^q,   θ_k^c = A_k⁻¹ b_k^c

Quality and cost are estimated separately, so one fitted model serves every cost weight w:

    greedy utility   u_k(x) = xᵀθ_k^q − w · xᵀθ_k^c
    UCB (learning)   u_k(x) + α · sqrt(xᵀ A_k⁻¹ x)

Two ways to learn, both exact ridge regression:

* :meth:`fit` / :meth:`partial_fit` from logged outcomes. On a full-information log every arm
  observes every query, so all arms share one Gram matrix XᵀX and one solve with 2K right-hand
  sides gives every θ (one pass over the data).
* :meth:`learn` by interacting with a :class:`~envs.routing_env.RoutingEnv`: at each step only the
  chosen arm's outcome is observed; A_k⁻¹ is kept up to date with the Sherman–Morrison formula.

The exported policy needs only the greedy decision, so :meth:`linear_map` hands over the
(d, 2K) matrix [θ^q | θ^c]; the d × d matrices stay here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass
from tqdm import trange

from envs.routing_env import RoutingEnv
from policies.heads import UtilityHead

StepCallback = Callable[[int, float, dict[str, Any]], None]


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class LinUCBConfig:
    """Hyperparameters of LinUCB."""

    alpha: float = 1.0  # width of the confidence bonus α · sqrt(xᵀA⁻¹x) used while learning online
    ridge: float = 1.0  # λ: ridge regularisation, A = λI + XᵀX


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


class LinUCB:
    """Disjoint LinUCB with a ``fit`` / ``partial_fit`` / ``predict`` face."""

    name = "linucb"
    score_kind = "utility"

    def __init__(
        self, n_models: int, dimension: int, config: LinUCBConfig | None = None, cost_weight: float = 0.0
    ) -> None:
        self.config = config or LinUCBConfig()
        if self.config.ridge <= 0:
            raise ValueError(f"ridge must be > 0, got {self.config.ridge}")
        self.n_models = n_models
        self.dimension = dimension
        self.cost_weight = cost_weight
        self._reset()

    def _reset(self, solve: bool = True) -> None:
        d, k = self.dimension, self.n_models
        self.gram = np.repeat(np.eye(d)[None] * self.config.ridge, k, axis=0)  # A_k, (K, d, d)
        self.target_quality = np.zeros((k, d))  # b_k^q
        self.target_cost = np.zeros((k, d))  # b_k^c
        self.observations = np.zeros(k, dtype=np.int64)
        if solve:
            self._solve()

    def _solve(self) -> None:
        """θ = A⁻¹ b for every arm: one LU solve per distinct Gram matrix, with all targets at once.

        On a full-information log all K Gram matrices are equal: one d × d solve with the 2K
        right-hand sides [b^q | b^c] gives every θ. A⁻¹ itself is needed only for the UCB bonus
        (learning online), so it is not formed here but on first use (:attr:`gram_inverse`): an
        inverse costs about twice a solve, and ``fit`` should cost no more than the ridge solution.
        """
        self._gram_inverse: np.ndarray | None = None
        k = self.n_models
        if self._shared_gram():
            theta = np.linalg.solve(self.gram[0], np.concatenate([self.target_quality, self.target_cost]).T)
            self.theta_quality, self.theta_cost = theta[:, :k].T.copy(), theta[:, k:].T.copy()
        else:
            theta = np.linalg.solve(self.gram, np.stack([self.target_quality, self.target_cost], axis=2))
            self.theta_quality, self.theta_cost = theta[:, :, 0].copy(), theta[:, :, 1].copy()

    def _shared_gram(self) -> bool:
        """Whether all K Gram matrices are equal (every full-information fit): then one factorisation serves all."""
        return len(self.gram) > 1 and bool((self.gram == self.gram[0]).all())

    @property
    def gram_inverse(self) -> np.ndarray:
        """A_k⁻¹ (K, d, d) for the UCB bonus, formed from the Gram matrices on first use after a solve."""
        if self._gram_inverse is None:
            if self._shared_gram():
                self._gram_inverse = np.repeat(np.linalg.inv(self.gram[0])[None], self.n_models, axis=0)
            else:
                self._gram_inverse = np.linalg.inv(self.gram)
        return self._gram_inverse

    @gram_inverse.setter
    def gram_inverse(self, value: np.ndarray) -> None:
        self._gram_inverse = value

    def fit(self, features: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> LinUCB:
        """Learn from scratch from a full-information log: (N, d) features, (N, K) outcomes."""
        self._reset(solve=False)  # partial_fit solves (once, for the shared Gram matrix)
        try:
            return self.partial_fit(features, quality, cost)
        except ValueError:
            self._solve()  # bad input: leave the freshly reset state consistent, as before
            raise

    def partial_fit(
        self, features: np.ndarray, quality: np.ndarray, cost: np.ndarray, actions: np.ndarray | None = None
    ) -> LinUCB:
        """Add outcomes to the sufficient statistics and re-solve.

        Full information: ``quality`` and ``cost`` are (N, K) with every cell known. Bandit
        feedback: pass ``actions`` (N,) and the logged ``quality`` and ``cost`` as (N,) arrays.
        Features may be float32 (they are widened to float64 chunk by chunk, see :func:`_moments`).
        """
        x = np.asarray(features)
        if x.ndim != 2 or x.shape[1] != self.dimension:
            raise ValueError(f"features must be (N, {self.dimension}), got {x.shape}")
        if actions is None and (np.shape(quality) != (len(x), self.n_models) or np.shape(cost) != np.shape(quality)):
            raise ValueError(f"full-information outcomes must be (N, {self.n_models})")
        statistics = LinUCBStatistics.of(x, quality, cost, actions, n_models=self.n_models)
        self.gram += statistics.gram
        self.target_quality += statistics.target_quality
        self.target_cost += statistics.target_cost
        self.observations += statistics.observations
        self._solve()
        return self

    def scores(self, features: np.ndarray, cost_weight: float | np.ndarray) -> np.ndarray:
        """Greedy utility per arm, (N, K): estimated quality − w × estimated cost."""
        x = np.asarray(features, dtype=np.float64)
        weight = np.asarray(cost_weight, dtype=np.float64)
        if weight.ndim == 1:
            weight = weight[:, None]
        return x @ self.theta_quality.T - weight * (x @ self.theta_cost.T)

    def upper_confidence(self, features: np.ndarray, cost_weight: float) -> np.ndarray:
        """UCB scores, (N, K): greedy utility plus α · sqrt(xᵀ A_k⁻¹ x)."""
        x = np.asarray(features, dtype=np.float64)
        width = np.sqrt(np.maximum(np.einsum("nd,kde,ne->nk", x, self.gram_inverse, x), 0.0))
        return self.scores(x, cost_weight) + self.config.alpha * width

    def predict(self, features: np.ndarray, cost_weight: float | None = None) -> np.ndarray:
        """Greedy model index per query (ties to the lower index), at ``cost_weight`` or the default."""
        weight = self.cost_weight if cost_weight is None else cost_weight
        return np.argmax(self.scores(features, weight), axis=1)

    def learn(
        self,
        env: RoutingEnv,
        total_steps: int,
        seed: int | None = 0,
        progress: bool = False,
        callback: StepCallback | None = None,
        start_step: int = 0,
    ) -> LinUCB:
        """Interact with ``env`` for ``total_steps`` episodes, observing only the chosen arm.

        Each step picks the UCB argmax at the env's current ``cost_weight`` (the budget's current
        multiplier λ, or the weight drawn for the episode), from the first ``dimension`` entries of
        the observation (a preference-conditioned one appends the weight feature), then updates
        that arm's A⁻¹ by Sherman–Morrison: (A + xxᵀ)⁻¹ = A⁻¹ − A⁻¹x xᵀA⁻¹ / (1 + xᵀA⁻¹x). The
        regression targets are ``info["quality"]`` and ``info["cost"]`` of the chosen arm (exact
        with full feedback, the env's dm / ips / dr estimates otherwise). ``callback(step,
        reward, info)`` sees every episode's outcome (TensorBoard logging and checkpoints use it),
        after the update and before the next query is drawn. Resuming: restore the state and the
        env's generator, then call with ``seed=None`` and ``start_step`` = the steps already done.
        """
        observation, _ = env.reset(seed=seed)
        if observation.shape[0] < self.dimension:
            raise ValueError(f"observation has {observation.shape[0]} entries, LinUCB needs {self.dimension}")
        for step in trange(start_step, start_step + total_steps, desc="linucb learn", disable=not progress):
            x = observation[: self.dimension].astype(np.float64)
            arm = int(np.argmax(self.upper_confidence(x[None], env.cost_weight)[0]))
            _, reward, _, _, info = env.step(arm)
            inverse_x = self.gram_inverse[arm] @ x
            self.gram_inverse[arm] -= np.outer(inverse_x, inverse_x) / (1.0 + x @ inverse_x)
            self.gram[arm] += np.outer(x, x)
            self.target_quality[arm] += info["quality"] * x
            self.target_cost[arm] += info["cost"] * x
            self.theta_quality[arm] = self.gram_inverse[arm] @ self.target_quality[arm]
            self.theta_cost[arm] = self.gram_inverse[arm] @ self.target_cost[arm]
            self.observations[arm] += 1
            if callback is not None:
                callback(step + 1, reward, info)
            observation, _ = env.reset()
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """The learned statistics (for checkpoints); θ is re-derived on load."""
        return {
            "gram": self.gram,
            "gram_inverse": self.gram_inverse,
            "target_quality": self.target_quality,
            "target_cost": self.target_cost,
            "observations": self.observations,
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> LinUCB:
        """Restore :meth:`state_dict` (shapes must match this agent's)."""
        if state["gram"].shape != self.gram.shape:
            raise ValueError(f"checkpoint has Gram matrices {state['gram'].shape}, agent {self.gram.shape}")
        self.gram = np.array(state["gram"], dtype=np.float64)
        self.target_quality = np.array(state["target_quality"], dtype=np.float64)
        self.target_cost = np.array(state["target_cost"], dtype=np.float64)
        self.observations = np.array(state["observations"], dtype=np.int64)
        self.gram_inverse = np.array(state["gram_inverse"], dtype=np.float64)
        self.theta_quality = np.einsum("kij,kj->ki", self.gram_inverse, self.target_quality)
        self.theta_cost = np.einsum("kij,kj->ki", self.gram_inverse, self.target_cost)
        return self

    def linear_map(self) -> np.ndarray:
        """The (d, 2K) matrix [θ^q | θ^c] that the exported utility head needs."""
        return np.hstack([self.theta_quality.T, self.theta_cost.T])

    def head(self) -> torch.nn.Module:
        """Estimated quality − w × estimated cost."""
        return UtilityHead(self.n_models)


class LinUCBStatistics:
    """LinUCB's sufficient statistics over a block of logged outcomes; blocks add up exactly.

    Per arm k, in float64 and *without* the ridge λI: ``gram`` Σ x xᵀ (K, d, d), ``target_quality``
    Σ x · quality and ``target_cost`` Σ x · cost (K, d), ``observations`` (K,), and the plain sums
    ``sum_quality`` and ``sum_cost`` (K,) that the training means need (baselines, the frontier's
    cost-weight grid). Statistics are sums, so those of the blocks of a distributed dataset, added
    in any order, equal those of the whole data up to floating-point reassociation, and
    :func:`linucb_from_statistics` then yields what :meth:`LinUCB.fit` (full information) or
    :meth:`LinUCB.partial_fit` with ``actions`` (bandit feedback) yields on all of it.
    """

    __slots__ = ("gram", "observations", "sum_cost", "sum_quality", "target_cost", "target_quality")

    def __init__(
        self,
        gram: np.ndarray,
        target_quality: np.ndarray,
        target_cost: np.ndarray,
        observations: np.ndarray,
        sum_quality: np.ndarray,
        sum_cost: np.ndarray,
    ) -> None:
        k, d = target_quality.shape
        shapes = {
            "gram": (gram.shape, (k, d, d)),
            "target_cost": (target_cost.shape, (k, d)),
            "observations": (observations.shape, (k,)),
            "sum_quality": (sum_quality.shape, (k,)),
            "sum_cost": (sum_cost.shape, (k,)),
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

    @classmethod
    def zeros(cls, n_models: int, dimension: int) -> LinUCBStatistics:
        """The statistics of no data (the identity of ``+``)."""
        k, d = n_models, dimension
        return cls(np.zeros((k, d, d)), np.zeros((k, d)), np.zeros((k, d)), np.zeros(k), np.zeros(k), np.zeros(k))

    @classmethod
    def of(
        cls,
        features: np.ndarray,
        quality: np.ndarray,
        cost: np.ndarray,
        actions: np.ndarray | None = None,
        n_models: int | None = None,
    ) -> LinUCBStatistics:
        """The statistics of one block, from outcomes as :meth:`LinUCB.partial_fit` takes them.

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
            )
        chosen_arm = np.asarray(actions, dtype=np.int64)
        if n_models is None:
            raise ValueError("bandit statistics need n_models (a block may lack an arm)")
        if chosen_arm.shape != (len(x),) or q.shape != chosen_arm.shape or c.shape != chosen_arm.shape:
            raise ValueError(f"bandit outcomes and actions must be (N,) with N = {len(x)}")
        statistics = cls.zeros(n_models, x.shape[1])
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


def linucb_from_statistics(
    statistics: LinUCBStatistics, config: LinUCBConfig | None = None, cost_weight: float = 0.0
) -> LinUCB:
    """A LinUCB agent solved from summed statistics: A_k = λI + Σ x xᵀ, θ = A⁻¹ b (as :meth:`LinUCB.fit`)."""
    n_models, dimension = statistics.target_quality.shape
    agent = LinUCB(n_models, dimension, config, cost_weight)
    agent.gram = agent.gram + statistics.gram  # λI + Σ x xᵀ
    agent.target_quality = statistics.target_quality.copy()
    agent.target_cost = statistics.target_cost.copy()
    agent.observations = statistics.observations.copy()
    agent._solve()
    return agent
