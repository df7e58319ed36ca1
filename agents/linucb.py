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
        """θ = A⁻¹ b for every arm (one factorisation per distinct Gram matrix)."""
        if len(self.gram) > 1 and (self.gram == self.gram[0]).all():  # full information: one shared A
            self.gram_inverse = np.repeat(np.linalg.inv(self.gram[0])[None], self.n_models, axis=0)
        else:
            self.gram_inverse = np.linalg.inv(self.gram)
        self.theta_quality = np.einsum("kij,kj->ki", self.gram_inverse, self.target_quality)
        self.theta_cost = np.einsum("kij,kj->ki", self.gram_inverse, self.target_cost)

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
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dimension:
            raise ValueError(f"features must be (N, {self.dimension}), got {x.shape}")
        if actions is None:
            if quality.shape != (len(x), self.n_models) or cost.shape != quality.shape:
                raise ValueError(f"full-information outcomes must be (N, {self.n_models})")
            self.gram += (x.T @ x)[None]
            self.target_quality += quality.T @ x
            self.target_cost += cost.T @ x
            self.observations += len(x)
        else:
            actions = np.asarray(actions, dtype=np.int64)
            for arm in range(self.n_models):
                rows = actions == arm
                chosen = x[rows]
                self.gram[arm] += chosen.T @ chosen
                self.target_quality[arm] += quality[rows] @ chosen
                self.target_cost[arm] += cost[rows] @ chosen
                self.observations[arm] += int(rows.sum())
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
