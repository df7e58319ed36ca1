"""The routing task shared by :class:`~envs.routing_env.RoutingEnv` and the batched VecEnv.

Both environments draw queries, build observations and score actions through one
:class:`RoutingTask`, vectorised over a batch of episodes (a batch of one for the Gymnasium env),
so that the two cannot disagree.

**Per-arm outcome tables.** At construction the task builds (N, K) tables of quality, cost and,
when the reward needs it, latency: every step is then a row lookup. What the tables hold is
``EnvConfig.feedback``:

* ``full``: the logged outcomes of a full-information log. Exact rewards: no bias, and no
  variance beyond the log's own noise.
* ``dm`` (bandit log): every arm's outcome imputed by the reward model
  (:class:`~envs.estimators.RewardModel`, per-arm ridge regression on the logged rounds).
  Lowest variance; biased wherever the linear model is wrong or an arm is rarely logged.
* ``ips`` (bandit log): the logged arm's outcome times its weight w = min(1/p, M), 0 for every
  other arm. Unbiased for E[outcome | x, a] (unclipped); high variance when propensities are
  small, and most steps see 0 (only a share p of a query's arms carry signal).
* ``dr`` (bandit log): DM plus the weighted residual of the logged arm,
  m̂(x, a) + w (y − m̂(x, A)) 1{a = A}. Unbiased like IPS, with IPS's variance applied to the
  residual only (Dudík, Langford & Li, 2011).

The bandit tables are :func:`~envs.estimators.counterfactual_log` with m̂ fitted on the whole
log: the one path from bandit feedback to outcome tables, which training and evaluation use too.
Rewards are linear in the outcomes, so the shaped reward of an estimated outcome is the same
estimator applied to the reward; a budget's multiplier likewise steps on the estimated cost of
the chosen arm (unbiased for ips and dr).

**Masks.** None are needed: the data layer rejects every row of a full-information query that
lacks a model (reason ``incomplete query``), so every arm of every query has an outcome.

**Observations.** The query's features as given, float32. Features from ``data.featurizer``
are already scaled (LSA components of unit RMS over the training queries, length / mean
length, ln(1 + length), a bias 1), so no further normalisation is applied. With preference
conditioning one feature f(w) ∈ [0, 1] is appended (:meth:`PreferenceConfig.encode`):
d + 1 dimensions.

**Oracle and regret** are computed on the table the task uses: exact for ``full``, estimated
(with respect to the imputed or weighted table) otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import gymnasium as gym
import numpy as np
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from data.routing_log import RoutingLog
from envs.estimators import RewardModel, RewardModelConfig, TableEstimator, counterfactual_log
from envs.rewards import CostMultiplier, RewardConfig

EnvFeedback = Literal["full"] | TableEstimator


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class EnvConfig:
    """How the environment turns a log into rewards (see the module docstring for each mode)."""

    feedback: EnvFeedback = "full"  # full: exact (full-information log); dm | ips | dr: bandit log
    max_weight: float | None = None  # ips / dr: cap M on the importance weight 1/p; None = no clipping
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)  # dm / dr: m̂


@dataclass(frozen=True)
class StepOutcome:
    """What a batch of actions got, one entry per episode."""

    reward: np.ndarray  # (n,) float64, shaped reward of the chosen arm
    quality: np.ndarray  # (n,) quality of the chosen arm (estimated unless feedback is full)
    cost: np.ndarray  # (n,) cost of the chosen arm, USD (estimated unless feedback is full)
    oracle_action: np.ndarray  # (n,) int64, best arm of the task's table (ties to the lower index)
    regret: np.ndarray  # (n,) float64, oracle's reward − this reward


class RoutingTask:
    """Queries, per-arm outcome tables, the cost-weight source and the reward shape."""

    def __init__(self, log: RoutingLog, features: np.ndarray, reward: RewardConfig, config: EnvConfig) -> None:
        features = np.asarray(features)
        if features.ndim != 2 or len(features) != log.n_queries:
            raise ValueError(
                f"{len(features)} feature rows for {log.n_queries} queries "
                f"(features must be (N, d), got shape {features.shape})"
            )
        if log.n_queries == 0:
            raise ValueError("the log has no queries")
        if not np.isfinite(features).all():
            raise ValueError("features must be finite")
        if config.feedback == "full" and log.feedback != "full":
            raise ValueError(
                "feedback 'full' needs a full-information log (every model's outcome known); "
                "use feedback dm, ips or dr with a bandit-feedback log"
            )
        if config.feedback != "full" and log.feedback != "bandit":
            raise ValueError(
                f"feedback {config.feedback!r} needs a bandit-feedback log (logged action and "
                "propensity per query); use feedback 'full' with a full-information log"
            )
        if reward.latency_weight > 0 and log.latency_ms is None:
            raise ValueError("latency_weight > 0 but the log has no latency_ms")
        self.log = log
        self.reward = reward
        self.config = config
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.n_queries, self.n_models = log.n_queries, log.n_models
        self.quality, self.cost, self.latency_ms = self._tables()
        self.multiplier: CostMultiplier | None = None
        self.restart()
        dimension = features.shape[1] + (reward.preference is not None)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(dimension,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(log.n_models)

    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(N, K) quality, cost and latency (if the reward uses it): logged, or estimated from bandit feedback."""
        log, feedback = self.log, self.config.feedback
        if feedback != "full":
            model = RewardModel(log.n_models, self.config.reward_model).fit_log(log, self.features)
            log = counterfactual_log(log, model.predict(self.features), feedback, self.config.max_weight)
        latency = log.latency_ms if self.reward.latency_weight > 0 else None
        for name, column in (("quality", log.quality), ("cost", log.cost), ("latency_ms", latency)):
            if column is not None and not np.isfinite(column).all():
                raise ValueError(f"full-information log has missing {name} values")  # estimates are finite
        return log.quality, log.cost, latency

    def restart(self) -> None:
        """Forget what the budget's multiplier learned (a seeded reset starts a fresh run)."""
        if self.reward.budget is not None:
            self.multiplier = CostMultiplier(self.reward.budget, self.reward.cost_weight)

    @property
    def cost_weight(self) -> float:
        """The weight of the next episodes: fixed, the current λ (budget), or 0 (preference: drawn)."""
        return self.reward.cost_weight if self.multiplier is None else self.multiplier.value

    @property
    def default_cost_weight(self) -> float | None:
        """The policy's default weight: fixed, or the averaged λ̄ of the budget; None with preference."""
        if self.reward.preference is not None:
            return None
        return self.reward.cost_weight if self.multiplier is None else self.multiplier.average

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n episodes: query rows drawn uniformly, and their cost weights."""
        rows = rng.integers(self.n_queries, size=n)
        if self.reward.preference is not None:
            return rows, self.reward.preference.sample(rng, n)
        return rows, np.full(n, self.cost_weight)

    def observe(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(n, D) float32 observations: features, plus f(w) with preference conditioning."""
        features = np.take(self.features, rows, axis=0)  # np.take: faster than fancy indexing
        if self.reward.preference is None:
            return features
        return np.concatenate([features, self.reward.preference.encode(weights)[:, None]], axis=1)

    def step(self, rows: np.ndarray, weights: np.ndarray, actions: np.ndarray) -> StepOutcome:
        """Score the chosen arms; with a budget, one dual update on their costs."""
        if actions.shape != rows.shape:
            raise ValueError(f"expected {len(rows)} actions, got shape {actions.shape}")
        if len(actions) and (actions.min() < 0 or actions.max() >= self.n_models):
            raise ValueError(f"actions must be model indices in [0, {self.n_models})")
        quality, cost = np.take(self.quality, rows, axis=0), np.take(self.cost, rows, axis=0)
        table = quality - weights[:, None] * cost
        if self.latency_ms is not None:
            table -= self.reward.latency_weight * np.take(self.latency_ms, rows, axis=0) / 1000.0
        index = np.arange(len(rows))
        oracle = table.argmax(axis=1)
        reward = table[index, actions]
        chosen_cost = cost[index, actions]
        if self.multiplier is not None:
            self.multiplier.update(chosen_cost)
        regret = table[index, oracle] - reward
        return StepOutcome(reward, quality[index, actions], chosen_cost, oracle, regret)
