"""RoutingVecEnv: N routing episodes stepped at once with numpy, as a stable-baselines3 VecEnv.

Same task as :class:`~envs.routing_env.RoutingEnv` (one :class:`~envs.task.RoutingTask`: same
feedback modes, reward shapes and observations), but one ``step`` scores a whole batch of
queries with array operations instead of N Python env objects.

Auto-reset semantics: every episode is one step, so ``dones`` is all True on every step and the
returned observations are already the next, freshly drawn queries. No ``terminal_observation``
is put in ``infos``: SB3's on-policy and off-policy algorithms read it only when
``TimeLimit.truncated`` is set (to bootstrap a cut episode), and these episodes terminate,
they are never truncated. ``infos`` are empty dicts (the interface needs one per env; SB3
wrappers such as VecMonitor write into them); the batch outcome of the last step is kept as
arrays for callbacks: ``last_reward``, ``last_quality``, ``last_cost``, ``last_regret``,
``last_oracle_action``, ``last_actions``, ``last_rows`` and ``last_cost_weight``.

The N "sub-environments" are one shared object: ``get_attr`` returns its attribute once per
index, ``set_attr`` sets it on the shared object (all indices), ``env_method`` calls the method
once and returns its result once per index.

Under a budget the multiplier takes one dual step per batch on the batch's costs (see
:class:`~envs.rewards.BudgetConfig`); every episode of a batch is drawn at the same λ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from data.routing_log import RoutingLog
from envs.rewards import RewardConfig
from envs.routing_env import reward_config
from envs.task import EnvConfig, RoutingTask


class SharedVecEnv(VecEnv):
    """What a vectorised env whose episodes all live in one batched object gives SB3 alike.

    There is one environment, stepped for ``num_envs`` episodes at once: an attribute is the same for
    every index, nothing is wrapped, nothing renders. :class:`RoutingVecEnv` and
    :class:`envs.cascade_vec_env.CascadeVecEnv` define the stepping and ``env_method``.
    """

    def close(self) -> None:
        """Nothing to release."""

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The shared environment's attribute, once per index."""
        return [getattr(self, attr_name)] * len(list(self._get_indices(indices)))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set the attribute on the shared environment (it applies to every index)."""
        setattr(self, attr_name, value)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """No gym wrappers: False for every index."""
        return [False] * len(list(self._get_indices(indices)))

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Nothing to render."""
        return [None] * self.num_envs


class RoutingVecEnv(SharedVecEnv):
    """``num_envs`` one-step routing episodes per step, drawn from one seeded generator."""

    def __init__(
        self,
        log: RoutingLog,
        features: np.ndarray,
        num_envs: int,
        reward: RewardConfig | float = 0.0,
        config: EnvConfig | None = None,
        seed: int | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.task = RoutingTask(log, features, reward_config(reward), config or EnvConfig())
        self.render_mode = None
        super().__init__(num_envs, self.task.observation_space, self.task.action_space)
        self._rng = np.random.default_rng(seed)
        self._rows, self._weights = self.task.draw(self._rng, num_envs)
        self._actions = np.zeros(num_envs, dtype=np.int64)
        self.last_rows = self._rows
        self.last_actions = self._actions
        self.last_cost_weight = self._weights
        self.last_reward = np.zeros(num_envs)
        self.last_quality = np.zeros(num_envs)
        self.last_cost = np.zeros(num_envs)
        self.last_regret = np.zeros(num_envs)
        self.last_oracle_action = np.zeros(num_envs, dtype=np.int64)

    @property
    def cost_weight(self) -> float:
        """The weight of the next batch: fixed, or the current λ (budget); 0 under preference."""
        return self.task.cost_weight

    @property
    def default_cost_weight(self) -> float | None:
        """The trained policy's default weight (λ̄ under a budget; None under preference)."""
        return self.task.default_cost_weight

    def reset(self) -> VecEnvObs:
        """Draw a new batch of queries.

        A seed given by :meth:`seed` restarts the env (generator, and a budget's multiplier), as
        a seeded reset of RoutingEnv does; otherwise the generator's stream continues.
        """
        if self._seeds[0] is not None:
            self._rng = np.random.default_rng(self._seeds[0])
            self.task.restart()
        self._reset_seeds()
        self._reset_options()
        self._rows, self._weights = self.task.draw(self._rng, self.num_envs)
        return self.task.observe(self._rows, self._weights)

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the batch of actions (one model index per env)."""
        self._actions = np.asarray(actions).reshape(self.num_envs).astype(np.int64, copy=False)

    def step_wait(self) -> VecEnvStepReturn:
        """Score the batch, keep its outcome as ``last_*`` arrays, and draw the next queries."""
        outcome = self.task.step(self._rows, self._weights, self._actions)
        self.last_rows, self.last_actions, self.last_cost_weight = self._rows, self._actions, self._weights
        self.last_reward, self.last_quality, self.last_cost = outcome.reward, outcome.quality, outcome.cost
        self.last_regret, self.last_oracle_action = outcome.regret, outcome.oracle_action
        self._rows, self._weights = self.task.draw(self._rng, self.num_envs)
        observations = self.task.observe(self._rows, self._weights)
        dones = np.ones(self.num_envs, dtype=bool)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        return observations, outcome.reward.astype(np.float32), dones, infos

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call the shared environment's method once; its result, once per index."""
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result] * len(list(self._get_indices(indices)))
