"""The wrappers of :class:`~envs.vec_env.RoutingVecEnv` that PPO trains on (:mod:`agents.ppo`).

* :class:`CounterfactualReward`: measures (a) and (b), the per-query baseline and the reward
  scale per cost weight, on a full-information log.
* :class:`MultiplierObservation`: under a budget, the multiplier λ as the weight feature f(λ).
* :class:`StandardisedObservation`: measure (e), observations standardised with fixed statistics.
* :class:`RewardScale`: s(w) of measure (b), shared with the cascade's PPO (:mod:`agents.cascade_ppo`).
* :func:`fold_actor`: the trained actor with (e) folded in, as the exported policy's linear map and head.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from envs.rewards import CostMultiplier, PreferenceConfig
from envs.vec_env import RoutingVecEnv
from policies.heads import MlpLogitHead

#: The actor's and critic's hidden activations, by ``activation`` setting.
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


class RewardScale:
    """s(w) = sqrt(mean(Q̃²) − 2w mean(Q̃C̃) + w² mean(C̃²)): the root-mean-square arm-centred reward at w.

    Q̃, C̃ are the (N, K) quality and cost tables centred per query; the moments are taken once, so
    s(w) is exact and closed form for any weight (measure (b) of :mod:`agents.ppo`).
    """

    def __init__(self, quality: np.ndarray, cost: np.ndarray) -> None:
        centred_quality = quality - quality.mean(axis=1, keepdims=True)
        centred_cost = cost - cost.mean(axis=1, keepdims=True)
        self._moments = (float(np.mean(centred_quality**2)), float(np.mean(centred_quality * centred_cost)),
                         float(np.mean(centred_cost**2)))

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """s(w) at each weight (never below 1e-6)."""
        quality_square, cross, cost_square = self._moments
        variance = quality_square - 2.0 * weights * cross + weights**2 * cost_square
        return np.sqrt(np.maximum(variance, 1e-12))


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
        self.scale = RewardScale(venv.task.quality, venv.task.cost)  # s(w) of the training queries

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


def fold_actor(state: dict[str, torch.Tensor], hidden_layers: int, activation: str, mean: np.ndarray,
               scale: np.ndarray, preference: PreferenceConfig,
               mean_cost: np.ndarray) -> tuple[np.ndarray, MlpLogitHead]:
    """(linear map, head) of an SB3 actor (its ``policy_net`` layers, then ``action_net``) on [x, f(w)].

    The actor saw (o − mean) / scale, o = [x, f(w)] (f(w) last); (e) is folded into its first layer,
    W' = W / s and b' = b − W' m. The columns of x become the linear map (dim x, hidden); f(w)'s
    column, b' and the other layers make the :class:`~policies.heads.MlpLogitHead`, whose costs are
    ``mean_cost`` (K,): :class:`StandardisedObservation` undone inside the exported policy. Shared by
    :mod:`agents.ppo` and the cascade's PPO (:mod:`agents.cascade_ppo`).
    """
    hidden = [f"mlp_extractor.policy_net.{2 * i}" for i in range(hidden_layers)]
    layers = [(state[f"{name}.weight"], state[f"{name}.bias"]) for name in hidden]
    layers.append((state["action_net.weight"], state["action_net.bias"]))
    weight, bias = layers[0]
    first_weight = weight.to(torch.float64) / torch.from_numpy(scale).to(torch.float64)
    first_bias = bias.to(torch.float64) - first_weight @ torch.from_numpy(mean).to(torch.float64)
    rest = []
    for weight, bias in layers[1:]:
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=torch.float64)
        linear.load_state_dict({"weight": weight.to(torch.float64), "bias": bias.to(torch.float64)})
        rest.append(linear)
    dimension = len(mean) - 1
    head = MlpLogitHead(first_weight[:, dimension], first_bias, rest, activation, preference.low, preference.high,
                        torch.from_numpy(np.asarray(mean_cost, dtype=np.float64)))
    return first_weight[:, :dimension].T.numpy().copy(), head


def actor_critic_kwargs(hidden: tuple[int, ...], activation: str, weight_decay: float) -> dict[str, object]:
    """SB3's ``policy_kwargs`` of both PPO agents: separate actor and critic MLPs of ``hidden`` units,
    ``activation`` ("tanh" or "relu"), AdamW with decoupled ``weight_decay`` (Loshchilov & Hutter, 2019)."""
    return {
        "net_arch": {"pi": list(hidden), "vf": list(hidden)},
        "activation_fn": ACTIVATIONS[activation],
        "optimizer_class": torch.optim.AdamW,
        "optimizer_kwargs": {"weight_decay": weight_decay, "eps": 1e-5},
    }
