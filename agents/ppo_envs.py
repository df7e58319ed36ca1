"""The wrappers of :class:`~envs.vec_env.RoutingVecEnv` that PPO trains on (:mod:`agents.ppo`).

* :class:`CounterfactualReward`: measures (a) and (b), the per-query baseline and the reward
  scale per cost weight, on a full-information log.
* :class:`MultiplierObservation`: under a budget, the multiplier λ as the weight feature f(λ).
* :class:`StandardisedObservation`: measure (e), observations standardised with fixed statistics.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from envs.rewards import CostMultiplier, PreferenceConfig
from envs.vec_env import RoutingVecEnv


class CounterfactualReward(VecEnvWrapper):
    """Reward transformation of a full-information RoutingVecEnv: (r − b(x, w)) / s(w).

    b(x, w) = mean over arms of quality − w · cost of the episode's query (if ``baseline``);
    s(w) = sqrt(mean(Q̃²) − 2w mean(Q̃C̃) + w² mean(C̃²)) over the training tables centred per
    query (if ``normalise``). The raw outcomes stay on the wrapped env's ``last_*`` arrays.
    """

    def __init__(self, venv: RoutingVecEnv, baseline: bool, normalise: bool) -> None:
        super().__init__(venv)
        self.routing = venv
        self.baseline, self.normalise = baseline, normalise
        quality, cost = venv.task.quality, venv.task.cost
        centred_quality = quality - quality.mean(axis=1, keepdims=True)
        centred_cost = cost - cost.mean(axis=1, keepdims=True)
        self._moments = (float(np.mean(centred_quality**2)), float(np.mean(centred_quality * centred_cost)),
                         float(np.mean(centred_cost**2)))

    def scale(self, weights: np.ndarray) -> np.ndarray:
        """s(w): the root-mean-square arm-centred reward of the training queries at each weight."""
        quality_square, cross, cost_square = self._moments
        variance = quality_square - 2.0 * weights * cross + weights**2 * cost_square
        return np.sqrt(np.maximum(variance, 1e-12))

    def reset(self) -> VecEnvObs:
        """The wrapped env's reset."""
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        """Step the wrapped env and transform the rewards of the batch it just scored."""
        observations, reward, dones, infos = self.venv.step_wait()
        env = self.routing
        rows, weights = env.last_rows, env.last_cost_weight
        shaped = reward.astype(np.float64)
        if self.baseline:
            table = env.task.quality[rows] - weights[:, None] * env.task.cost[rows]
            shaped = shaped - table.mean(axis=1)
        if self.normalise:
            shaped = shaped / self.scale(weights)
        return observations, shaped.astype(np.float32), dones, infos


class MultiplierObservation(VecEnvWrapper):
    """Budget mode: append f(λ) of the batch's multiplier to the features, as preference conditioning does.

    Every episode of a batch is drawn at the same λ (the multiplier's value when it was drawn),
    so the actor is conditioned on the weight its reward uses. The wrapper owns the multiplier:
    a seeded reset of the env would start a fresh one, so every reset puts this one back (a
    resumed run continues its λ).
    """

    def __init__(self, venv: CounterfactualReward, preference: PreferenceConfig, multiplier: CostMultiplier) -> None:
        dimension = venv.routing.task.features.shape[1] + 1
        space = gym.spaces.Box(-np.inf, np.inf, shape=(dimension,), dtype=np.float32)
        super().__init__(venv, observation_space=space)
        self.routing = venv.routing
        self.preference = preference
        self.multiplier = multiplier

    def _with_weight(self, observations: VecEnvObs) -> np.ndarray:
        assert isinstance(observations, np.ndarray)  # a Box observation space
        encoded = self.preference.encode(np.full(len(observations), self.multiplier.value))
        return np.concatenate([observations, encoded[:, None]], axis=1)

    def reset(self) -> VecEnvObs:
        """The wrapped env's first observations, with f(λ); this wrapper's multiplier stays the env's."""
        observations = self.venv.reset()
        self.routing.task.multiplier = self.multiplier
        return self._with_weight(observations)

    def step_wait(self) -> VecEnvStepReturn:
        """The wrapped env's step; the next observations carry f(λ) after this batch's dual update."""
        observations, reward, dones, infos = self.venv.step_wait()
        return self._with_weight(observations), reward, dones, infos


class StandardisedObservation(VecEnvWrapper):
    """(e): observations (o − mean) / scale with fixed statistics."""

    def __init__(self, venv: CounterfactualReward | MultiplierObservation, mean: np.ndarray,
                 scale: np.ndarray) -> None:
        super().__init__(venv)
        self.routing = venv.routing
        self.mean, self.scale = mean.astype(np.float32), scale.astype(np.float32)

    def reset(self) -> VecEnvObs:
        """The wrapped env's first observations, standardised."""
        observations = self.venv.reset()
        assert isinstance(observations, np.ndarray)  # a Box observation space
        return (observations - self.mean) / self.scale

    def step_wait(self) -> VecEnvStepReturn:
        """The wrapped env's step, its observations standardised."""
        observations, reward, dones, infos = self.venv.step_wait()
        assert isinstance(observations, np.ndarray)
        return (observations - self.mean) / self.scale, reward, dones, infos
