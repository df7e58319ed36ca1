"""CascadeVecEnv: many cascade episodes stepped at once with numpy, as a stable-baselines3 VecEnv.

The same task as :class:`~envs.cascade_env.CascadeEnv` (one :class:`~envs.cascade_env.CascadeTask`:
the same observations, masks and final rewards, docs/contracts.md §7.3), but one ``step`` moves
``num_envs`` episodes with array operations, as :class:`~envs.vec_env.RoutingVecEnv` does for the
one-step routing task. What it adds is the bookkeeping of episodes of different lengths:

* **Auto-reset.** An episode ends when it stops (or takes an invalid action); its ``done`` is True,
  its reward the final one, and the observation returned in its place is already the first of a
  freshly drawn query (the VecEnv convention). Every other episode gets reward 0 and goes on. No
  ``terminal_observation`` is put in ``infos``: SB3 reads it only for an episode cut by a time
  limit (``TimeLimit.truncated``), and a cascade never is (after ``max_calls`` calls only stops
  are valid), so it terminates.
* **Masks.** :meth:`CascadeVecEnv.action_masks` is the (num_envs, 2K) mask of the current
  episodes. sb3-contrib's ``MaskablePPO`` asks a VecEnv for it through
  ``env_method("action_masks")`` and stacks the list it gets back
  (``sb3_contrib.common.maskable.utils.get_action_masks``), so :meth:`CascadeVecEnv.env_method`
  hands that method's batch back one row per index.

The ``num_envs`` "sub-environments" are one shared object: ``get_attr`` returns its attribute once
per index and ``set_attr`` sets it once; ``env_method`` calls a method once and returns its result
once per index (``action_masks``: its row per index). The outcome of the last step is kept as
arrays for callbacks and reward wrappers: ``last_rows`` and ``last_cost_weight`` (the queries and
weights the step acted on), ``last_finished`` (which of them ended), ``last_reward`` (0 where
they go on), and, for the finished ones only, ``last_quality``, ``last_cost``, ``last_calls`` and
``last_invalid``.

:class:`CascadeData` is what a cascade learns from: a log, its query features and its response
table, from which each reward setting builds its task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from data.routing_log import RoutingLog
from envs.cascade_env import CascadeConfig, CascadeTask
from envs.rewards import RewardConfig
from envs.vec_env import SharedVecEnv

#: Methods whose result is a batch, one row per episode, that ``env_method`` hands back row by row.
BATCHED_METHODS = frozenset({"action_masks"})


@dataclass(frozen=True)
class CascadeData:
    """A full-information log with responses as a cascade sees it: N queries, K models, F response features."""

    log: RoutingLog
    features: np.ndarray  # (N, d) query features
    response_features: np.ndarray  # (N, K, F) of :func:`policies.response_features.response_table`
    agreement: np.ndarray  # (N, K, K) bool: models j and k gave the same final answer

    def task(self, reward: RewardConfig, config: CascadeConfig) -> CascadeTask:
        """The cascade task of these queries under ``reward`` (it checks every array's shape)."""
        return CascadeTask(self.log, self.features, self.response_features, self.agreement, reward, config)

    def subset(self, index: np.ndarray) -> CascadeData:
        """The data of the queries at ``index``."""
        return CascadeData(
            self.log.subset(index), self.features[index], self.response_features[index], self.agreement[index]
        )


class CascadeVecEnv(SharedVecEnv):
    """``num_envs`` cascade episodes per step, their queries and weights drawn from one seeded generator."""

    def __init__(self, task: CascadeTask, num_envs: int, seed: int | None = None) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.task = task
        self.render_mode = None
        super().__init__(num_envs, task.observation_space, task.action_space)
        self._rng = np.random.default_rng(seed)
        self._rows, self._weights = task.routing.draw(self._rng, num_envs)
        self._called = np.zeros((num_envs, task.n_models), dtype=bool)
        self._actions = np.zeros(num_envs, dtype=np.int64)
        self.last_rows, self.last_cost_weight = self._rows.copy(), self._weights.copy()
        self.last_finished = np.zeros(num_envs, dtype=bool)
        self.last_reward = np.zeros(num_envs)
        self.last_quality, self.last_cost = np.zeros(0), np.zeros(0)
        self.last_calls = np.zeros(0, dtype=np.int64)
        self.last_invalid = np.zeros(0, dtype=bool)

    def reset(self) -> VecEnvObs:
        """Draw a new query for every episode, nothing called yet.

        A seed given by :meth:`seed` restarts the generator, as a seeded reset of CascadeEnv does;
        otherwise its stream continues.
        """
        if self._seeds[0] is not None:
            self._rng = np.random.default_rng(self._seeds[0])
        self._reset_seeds()
        self._reset_options()
        self._rows, self._weights = self.task.routing.draw(self._rng, self.num_envs)
        self._called[:] = False
        return self.task.observe(self._rows, self._weights, self._called)

    def action_masks(self) -> np.ndarray:
        """(num_envs, 2K) bool: the valid actions of each current episode (docs/contracts.md §7.3)."""
        return self.task.valid_actions(self._called)

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the batch of actions (one per episode: call model k < K, or stop on K + j)."""
        actions = np.asarray(actions).reshape(self.num_envs).astype(np.int64, copy=False)
        if actions.min() < 0 or actions.max() >= 2 * self.task.n_models:
            raise ValueError(f"actions must be in [0, {2 * self.task.n_models}): call model k, or stop on K + j")
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Apply the calls, score the stops (and invalid actions), and start new episodes where one ended."""
        task, actions, k = self.task, self._actions, self.task.n_models
        episodes = np.arange(self.num_envs)
        valid = task.valid_actions(self._called)[episodes, actions]
        calls = valid & (actions < k)
        self._called[episodes[calls], actions[calls]] = True
        finished = ~calls
        returned = np.where(valid, actions - k, -1)[finished]
        outcome = task.finish(self._rows[finished], self._weights[finished], self._called[finished], returned)
        reward = np.zeros(self.num_envs)
        reward[finished] = outcome.reward
        self.last_rows, self.last_cost_weight, self.last_finished = self._rows.copy(), self._weights.copy(), finished
        self.last_reward, self.last_quality, self.last_cost = reward, outcome.quality, outcome.cost
        self.last_calls, self.last_invalid = outcome.calls, ~valid[finished]
        self._rows[finished], self._weights[finished] = task.routing.draw(self._rng, int(finished.sum()))
        self._called[finished] = False
        observations = task.observe(self._rows, self._weights, self._called)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        return observations, reward.astype(np.float32), finished.copy(), infos

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call the shared environment's method once; its result once per index, or, for a batched
        method (:data:`BATCHED_METHODS`), the row of each index."""
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        chosen = list(self._get_indices(indices))
        if method_name in BATCHED_METHODS:
            return [result[index] for index in chosen]
        return [result] * len(chosen)
