"""RoutingEnv: a logged routing problem as a Gymnasium contextual bandit.

Each episode is one query: ``reset`` draws a query (uniformly, from the env's seeded generator)
and its cost weight, and returns the observation; the action is a model index; ``step`` returns
the reward of that model on that query and ends the episode (``terminated=True``).

    reward = quality − w × cost − latency_weight × latency_ms / 1000    (cost in USD per query)

Feedback (``EnvConfig.feedback``): ``full`` gives exact rewards from a full-information log;
``dm``, ``ips`` and ``dr`` give counterfactual rewards from a bandit-feedback log (bias and
variance of each: :mod:`envs.task`). Reward shapes (fixed weight, budget multiplier, preference
conditioning): :mod:`envs.rewards`. No action masks: the data layer rejects incomplete
full-information queries, so every model has an outcome for every query.

``cost_weight`` is the current episode's w: fixed, the current multiplier λ under a budget, or
the weight drawn at ``reset`` under preference conditioning (then also the last observation
feature). ``default_cost_weight`` is what the trained policy should default to (λ̄ under a
budget).

``info`` carries ``quality``, ``cost`` (of the chosen model; estimates unless feedback is
``full``), ``cost_weight``, ``oracle_action`` (the best model of the reward table at this weight,
ties to the lower index) and ``regret`` (the oracle's reward minus this reward).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from data.routing_log import RoutingLog
from envs.rewards import RewardConfig
from envs.task import EnvConfig, RoutingTask


def reward_config(reward: RewardConfig | float) -> RewardConfig:
    """A float w is shorthand for the fixed linear shape ``RewardConfig(cost_weight=w)``."""
    return reward if isinstance(reward, RewardConfig) else RewardConfig(cost_weight=float(reward))


class RoutingEnv(gym.Env[np.ndarray, np.int64]):
    """One query per episode; observation = its features (+ f(w)); action = a model."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        log: RoutingLog,
        features: np.ndarray,
        reward: RewardConfig | float = 0.0,
        config: EnvConfig | None = None,
    ) -> None:
        super().__init__()
        self.task = RoutingTask(log, features, reward_config(reward), config or EnvConfig())
        self.log = log
        self.features = self.task.features
        self.observation_space = self.task.observation_space
        self.action_space = self.task.action_space
        self._rows = np.zeros(1, dtype=np.int64)
        self._weights = np.full(1, self.task.cost_weight)

    @property
    def query_index(self) -> int:
        """Row of the current episode's query in the log."""
        return int(self._rows[0])

    @property
    def cost_weight(self) -> float:
        """The current episode's cost weight w (before the first reset: the configured one)."""
        return float(self._weights[0])

    @property
    def default_cost_weight(self) -> float | None:
        """The trained policy's default weight (λ̄ under a budget; None under preference)."""
        return self.task.default_cost_weight

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw the next query uniformly at random, and its cost weight.

        A ``seed`` restarts the env: its generator, and a budget's multiplier (so that a seeded
        run repeats exactly); ``reset()`` without a seed just draws the next episode.
        """
        super().reset(seed=seed)
        if seed is not None:
            self.task.restart()
        self._rows, self._weights = self.task.draw(self.np_random, 1)
        return self.task.observe(self._rows, self._weights)[0], {"query_index": self.query_index}

    def step(self, action: np.int64 | int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Route the current query to ``action``; the episode ends with its reward."""
        arm = int(action)
        if not 0 <= arm < self.task.n_models:
            raise ValueError(f"action {arm} is not a model index in [0, {self.task.n_models})")
        outcome = self.task.step(self._rows, self._weights, np.array([arm]))
        info = {
            "query_index": self.query_index,
            "quality": float(outcome.quality[0]),
            "cost": float(outcome.cost[0]),
            "cost_weight": self.cost_weight,
            "oracle_action": int(outcome.oracle_action[0]),
            "regret": float(outcome.regret[0]),
        }
        observation = self.task.observe(self._rows, self._weights)[0]
        return observation, float(outcome.reward[0]), True, False, info
