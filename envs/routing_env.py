"""RoutingEnv: a logged full-information routing problem as a Gymnasium contextual bandit.

Each episode is one query: ``reset`` draws a query (uniformly, from the env's seeded generator)
and returns its feature vector; the action is a model index; ``step`` returns the reward of that
model on that query and ends the episode (``terminated=True``). Rewards are exact: the log holds
every model's outcome for every query.

reward = quality − cost_weight × cost        (cost in USD per query; CONTRACTS.md §2)

``info`` carries ``quality``, ``cost``, ``oracle_action`` (the best model for this query at this
weight, ties to the lower index) and ``regret`` (the oracle's reward minus this reward).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from data.routing_log import RoutingLog


class RoutingEnv(gym.Env[np.ndarray, np.int64]):
    """One query per episode; observation = its features; action = a model."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, log: RoutingLog, features: np.ndarray, cost_weight: float) -> None:
        if log.feedback != "full":
            raise ValueError("RoutingEnv needs a full-information log (every model's outcome known)")
        if len(features) != log.n_queries:
            raise ValueError(f"{len(features)} feature rows for {log.n_queries} queries")
        if not np.isfinite(cost_weight) or cost_weight < 0:
            raise ValueError(f"cost_weight must be finite and >= 0, got {cost_weight}")
        super().__init__()
        self.log = log
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.cost_weight = float(cost_weight)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(features.shape[1],), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(log.n_models)
        self._query = 0

    @property
    def query_index(self) -> int:
        """Row of the current episode's query in the log."""
        return self._query

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw the next query uniformly at random."""
        super().reset(seed=seed)
        self._query = int(self.np_random.integers(self.log.n_queries))
        return self.features[self._query].copy(), {"query_index": self._query}

    def step(self, action: np.int64 | int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Route the current query to ``action``; the episode ends with its exact reward."""
        arm = int(action)
        if not 0 <= arm < self.log.n_models:
            raise ValueError(f"action {arm} is not a model index in [0, {self.log.n_models})")
        row = self._query
        quality, cost = self.log.quality[row], self.log.cost[row]
        rewards = quality - self.cost_weight * cost
        oracle = int(np.argmax(rewards))
        info = {
            "query_index": row,
            "quality": float(quality[arm]),
            "cost": float(cost[arm]),
            "oracle_action": oracle,
            "regret": float(rewards[oracle] - rewards[arm]),
        }
        return self.features[row].copy(), float(rewards[arm]), True, False, info
