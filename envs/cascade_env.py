"""CascadeEnv: decide after seeing answers, as a multi-step Gymnasium environment.

One episode is one query of a full-information log with responses. At each step the policy either
**calls** a model it has not called yet, and sees features of that model's logged response, or
**stops** and returns the response of a model it has called. The reward comes at the end:

    reward = quality[i, returned] − w × Σ_{called k} cost[i, k] − latency_weight × Σ_{called k} latency_ms[i, k] / 1000

Every call is paid for, also those whose answer is not returned, and calls run one after another,
so their latencies add up. The cost weight w is fixed or drawn per episode and shown to the policy
(preference conditioning), exactly as in :class:`envs.routing_env.RoutingEnv`, whose
:class:`~envs.task.RoutingTask` this environment uses for the query draws, the weights and the
outcome tables. A budget (``RewardConfig.budget``) is not supported here yet.

**Actions** (``Discrete(2K)``): ``k`` in [0, K) calls model k; ``K + j`` stops and returns the
response of model j. :meth:`CascadeEnv.action_masks` gives the valid ones (the convention of
sb3-contrib's ``MaskablePPO``): a model not yet called while fewer than ``max_calls`` calls were
made; a stop on a model already called. An **invalid action** taken anyway (a model called twice
or beyond ``max_calls``, a stop on a model not called, any stop before the first call) ends the
episode with no answer: quality 0 and reward −``invalid_penalty`` − w × Σ cost of the calls made
(and their latency), with ``info["invalid"] = True``.

**Observations** (float32, docs/contracts.md §7.3), in this order: the query's features (d); the
called mask (K, 0/1); K slots of F response features (slot k: model k's response once called, else
zeros); K agreement features (for a called model k, the share of the other called models whose
final answer equals k's; 0 while k is alone or not called); with preference conditioning, f(w)
last. :meth:`CascadeTask.layout` names these slices.

Response features and agreement are computed once per (query, model) before training
(:func:`policies.response_features.response_table`) and looked up here, so that a step is a few
numpy operations; :class:`CascadeTask` works on batches of episodes, this environment on one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from data.routing_log import RoutingLog
from envs.rewards import RewardConfig
from envs.routing_env import reward_config
from envs.task import EnvConfig, RoutingTask


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class CascadeConfig:
    """The cascade's limits: how many calls an episode may make, and the price of an invalid action."""

    max_calls: int | None = None  # calls per episode at most; None: every model (K)
    invalid_penalty: float = 1.0  # quality units lost by an invalid action (on top of quality 0)

    def __post_init__(self) -> None:
        if self.max_calls is not None and self.max_calls < 1:
            raise ValueError(f"max_calls must be >= 1 (or None for every model), got {self.max_calls}")
        if not (np.isfinite(self.invalid_penalty) and self.invalid_penalty >= 0):
            raise ValueError(f"invalid_penalty must be finite and >= 0, got {self.invalid_penalty}")


@dataclass(frozen=True)
class CascadeLayout:
    """Where each part of an observation lies (module docstring)."""

    query: slice
    called: slice
    responses: slice  # K slots of F features, model-major
    agreement: slice
    cost_weight: slice | None  # f(w), with preference conditioning only


@dataclass(frozen=True)
class CascadeOutcome:
    """What a batch of finished cascades got, one entry per episode."""

    reward: np.ndarray  # (n,) float64
    quality: np.ndarray  # (n,) quality of the returned response (0 when none was)
    cost: np.ndarray  # (n,) USD of every call made
    calls: np.ndarray  # (n,) int64 number of calls made


def cascade_cost(cost: np.ndarray, called: np.ndarray) -> np.ndarray:
    """(n,) what cascades pay: the sum of the ``cost`` (n, K) of every ``called`` (n, K) model."""
    return np.where(called, cost, 0.0).sum(axis=1)


class CascadeTask:
    """The cascade over a batch of episodes: observations, valid actions and final rewards."""

    def __init__(
        self,
        log: RoutingLog,
        features: np.ndarray,
        response_features: np.ndarray,
        agreement: np.ndarray,
        reward: RewardConfig,
        config: CascadeConfig,
    ) -> None:
        if reward.budget is not None:
            raise ValueError("the cascade environment does not support a budget yet; use a fixed weight or preference")
        self.routing = RoutingTask(log, features, reward, EnvConfig())  # checks the log, features and reward
        n, k = log.n_queries, log.n_models
        response_features = np.asarray(response_features)
        if response_features.ndim != 3 or response_features.shape[:2] != (n, k):
            raise ValueError(f"response_features must be (N, K, F) = ({n}, {k}, F), got {response_features.shape}")
        if not np.isfinite(response_features).all():
            raise ValueError("response_features must be finite")
        if np.shape(agreement) != (n, k, k):
            raise ValueError(f"agreement must be (N, K, K) = ({n}, {k}, {k}), got {np.shape(agreement)}")
        self.reward, self.config = reward, config
        self.n_models, self.n_response_features = k, response_features.shape[2]
        self.max_calls = k if config.max_calls is None else min(config.max_calls, k)
        self.response_features = np.ascontiguousarray(response_features.reshape(n, -1), dtype=np.float32)
        self.agreement = np.asarray(agreement, dtype=bool) & ~np.eye(k, dtype=bool)
        self.quality, self.cost, self.latency_ms = self.routing.quality, self.routing.cost, self.routing.latency_ms
        parts = self.layout()
        self.dimension = (parts.cost_weight or parts.agreement).stop
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(self.dimension,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2 * k)

    def layout(self) -> CascadeLayout:
        """The slices of an observation (module docstring)."""
        d, k, f = self.routing.features.shape[1], self.n_models, self.n_response_features
        responses_end = d + k + k * f
        agreement = slice(responses_end, responses_end + k)
        weight = slice(agreement.stop, agreement.stop + 1) if self.reward.preference is not None else None
        return CascadeLayout(slice(0, d), slice(d, d + k), slice(d + k, responses_end), agreement, weight)

    def observe(self, rows: np.ndarray, weights: np.ndarray, called: np.ndarray) -> np.ndarray:
        """(n, D) float32 observations of episodes on ``rows`` at ``weights`` having ``called`` (n, K) models."""
        n, k, f = len(rows), self.n_models, self.n_response_features
        seen = np.take(self.response_features, rows, axis=0).reshape(n, k, f) * called[:, :, None]
        agree = np.take(self.agreement, rows, axis=0) & called[:, :, None] & called[:, None, :]
        others = called.sum(axis=1, keepdims=True) - 1
        share = agree.sum(axis=2) / np.maximum(others, 1)
        parts = [np.take(self.routing.features, rows, axis=0), called, seen.reshape(n, k * f), share]
        if self.reward.preference is not None:
            parts.append(self.reward.preference.encode(weights)[:, None])
        return np.concatenate(parts, axis=1, dtype=np.float32)

    def valid_actions(self, called: np.ndarray) -> np.ndarray:
        """(n, 2K) bool: calls of models not yet called (below ``max_calls``), stops on called models."""
        may_call = (called.sum(axis=1, keepdims=True) < self.max_calls) & ~called
        return np.concatenate([may_call, called], axis=1)

    def finish(self, rows: np.ndarray, weights: np.ndarray, called: np.ndarray, returned: np.ndarray) -> CascadeOutcome:
        """Final rewards of episodes that called ``called`` (n, K) and return model ``returned`` (n,).

        ``returned`` is −1 for an episode that ended on an invalid action (no answer).
        """
        index = np.arange(len(rows))
        answered = returned >= 0
        quality = np.where(answered, np.take(self.quality, rows, axis=0)[index, np.maximum(returned, 0)], 0.0)
        cost = cascade_cost(np.take(self.cost, rows, axis=0), called)
        reward = quality - weights * cost - np.where(answered, 0.0, self.config.invalid_penalty)
        if self.latency_ms is not None:
            latency = cascade_cost(np.take(self.latency_ms, rows, axis=0), called)
            reward = reward - self.reward.latency_weight * latency / 1000.0
        return CascadeOutcome(reward, quality, cost, called.sum(axis=1).astype(np.int64))


@dataclass
class _Episode:
    """The current episode: its query, weight, the models called so far and whether it has ended."""

    row: int = 0
    weight: float = 0.0
    called: np.ndarray = field(default_factory=lambda: np.zeros((1, 0), dtype=bool))
    done: bool = True


class CascadeEnv(gym.Env[np.ndarray, np.int64]):
    """One query per episode; call models one by one, then return one of their responses (module docstring)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        log: RoutingLog,
        features: np.ndarray,
        response_features: np.ndarray,
        agreement: np.ndarray,
        reward: RewardConfig | float = 0.0,
        config: CascadeConfig | None = None,
    ) -> None:
        super().__init__()
        self.task = CascadeTask(
            log, features, response_features, agreement, reward_config(reward), config or CascadeConfig()
        )
        self.log = log
        self.observation_space = self.task.observation_space
        self.action_space = self.task.action_space
        self._episode = _Episode(called=np.zeros((1, log.n_models), dtype=bool))

    @property
    def query_index(self) -> int:
        """Row of the current episode's query in the log."""
        return self._episode.row

    @property
    def cost_weight(self) -> float:
        """The current episode's cost weight w."""
        return self._episode.weight

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw the next query uniformly at random, and its cost weight; nothing is called yet."""
        super().reset(seed=seed)
        rows, weights = self.task.routing.draw(self.np_random, 1)
        self._episode = _Episode(int(rows[0]), float(weights[0]), np.zeros((1, self.task.n_models), dtype=bool), False)
        return self._observe(), {"query_index": self.query_index}

    def action_masks(self) -> np.ndarray:
        """(2K,) bool: the actions valid now (module docstring); none once the episode has ended."""
        if self._episode.done:
            return np.zeros(2 * self.task.n_models, dtype=bool)
        return self.task.valid_actions(self._episode.called)[0]

    def step(self, action: np.int64 | int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Call a model (reward 0, the episode goes on) or stop and return one (the final reward)."""
        episode, k = self._episode, self.task.n_models
        if episode.done:
            raise RuntimeError("the episode has ended: call reset() first")
        chosen = int(action)
        if not 0 <= chosen < 2 * k:
            raise ValueError(f"action {chosen} is not in [0, {2 * k}): call model k < {k}, or stop on K + j")
        valid = bool(self.action_masks()[chosen])
        if valid and chosen < k:
            episode.called[0, chosen] = True
            return self._observe(), 0.0, False, False, {"query_index": episode.row, "called": chosen}
        returned = chosen - k if valid else -1
        rows, weights = np.array([episode.row]), np.array([episode.weight])
        outcome = self.task.finish(rows, weights, episode.called, np.array([returned]))
        episode.done = True
        info = {
            "query_index": episode.row,
            "cost_weight": episode.weight,
            "returned": returned,
            "called": np.flatnonzero(episode.called[0]).tolist(),
            "quality": float(outcome.quality[0]),
            "cost": float(outcome.cost[0]),
            "calls": int(outcome.calls[0]),
            "invalid": not valid,
        }
        return self._observe(), float(outcome.reward[0]), True, False, info

    def _observe(self) -> np.ndarray:
        episode = self._episode
        return self.task.observe(np.array([episode.row]), np.array([episode.weight]), episode.called)[0]
