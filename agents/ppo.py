"""PPO (stable-baselines3) on the batched routing environment, conditioned on the cost weight.

Schulman, Wolski, Dhariwal, Radford & Klimov (2017), "Proximal policy optimization algorithms",
arXiv:1707.06347, as implemented by stable-baselines3 (Raffin et al., 2021, JMLR 22(268)).

**Preference conditioning.** Every episode draws a cost weight w from a
:class:`~envs.rewards.PreferenceConfig` (0 with probability ``zero_share``, else log-uniform on
[low, high]) and appends f(w) = log1p(w / low) / log1p(high / low) to the query's features, so one
actor π(k | x, f(w)) serves every trade-off (Abels et al., 2019, "Dynamic weights in
multi-objective deep reinforcement learning", ICML). The reward is r_k = quality_k − w · cost_k.

**Episodes are one step long** (a contextual bandit), so the discount γ and GAE's λ never act:
every step is terminal and the advantage is r − V(x, w). They are left at SB3's defaults and are
not configuration.

Routing logs are small and their 0/1 rewards noisy, so plain PPO barely beats the best single
model. Four practitioners' measures, each a switch of :class:`PPOConfig`:

(a) **Per-query baseline** (``per_query_baseline``). A full-information log knows every arm's
    reward, so the agent trains on r_k − r̄(x, w), r̄ = mean over arms of the query's rewards at
    the episode's weight. The baseline does not depend on the action, so the policy gradient's
    expectation is unchanged while the query-to-query variance (easy queries all arms answer,
    hard ones none does) is removed (Williams, 1992; Greensmith, Bartlett & Baxter, 2004).
(b) **Reward scale per cost weight** (``normalise_rewards``). The arms' rewards differ by
    Δquality − w · Δcost, so episodes with large w would dominate the value loss and every
    minibatch. Rewards are divided by s(w), the root-mean-square over the training queries and
    arms of the arm-centred reward at that weight. With Q̃, C̃ the per-query centred quality and
    cost tables, s(w)² = mean(Q̃²) − 2w · mean(Q̃ C̃) + w² · mean(C̃²): exact, closed form, and
    constant for a given w, so the best action at every (x, w) is unchanged.
(c) **Early stopping on validation** (``eval_every``, ``patience``). Every ``eval_every`` steps
    the greedy policy is scored on validation features over a sweep of cost weights; the best
    parameters are kept and exported (``best_step``), and training stops after ``patience``
    evaluations without improvement. The default criterion needs no evaluation package:
    the mean over the sweep of the share of the gap between routing at random and the
    per-query oracle that the policy closes (comparable across weights, 1 = oracle),
        g(w) = (U_π(w) − U_random(w)) / (U_oracle(w) − U_random(w)),   U = mean validation utility.
    (The best single model is a worse reference: at large w it is almost the oracle, and the
    ratio explodes.)
    A caller may pass its own ``validation_score(weights, actions)`` (e.g. the frontier's AIQ).
(d) **A small, regularised network** (``hidden``, ``weight_decay``): one hidden layer, AdamW's
    decoupled weight decay (Loshchilov & Hutter, 2019) through SB3's ``optimizer_kwargs``.
(e) **Standardised observations** (``standardise_observations``): the network sees
    (o − m) / s, m and s the training features' mean and standard deviation and those of f(w)
    under the preference distribution (a seeded sample), fixed for the run. f(w) ∈ [0, 1] is
    otherwise small beside features of magnitude ~5 (ln length), and Adam's steps move its
    column too slowly: without (e) the policy hardly reacts to w. The affine map is folded into
    the exported first layer: W' = W / s, b' = b − W (m / s).

**Budget** (``budget``, a :class:`~envs.rewards.BudgetConfig`). Instead of drawing w, the
environment learns it: w = λ_t, the Lagrange multiplier of E[cost] <= B, updated by projected
dual ascent on the costs of the actions PPO plays (the budget reward of
:class:`~envs.rewards.RewardConfig`). The actor still sees f(λ_t) as its last feature, so the
exported policy keeps the same head and cost-weight input, and its default cost weight is the
averaged multiplier λ̄ (``cost_weight`` after :meth:`PPORouter.fit`). The multiplier's state is
part of the checkpoint. Policy entropy makes the played actions spend a little more (or less)
than the greedy policy does at the same λ; a small ``ent_coef`` keeps that gap small.

**Export.** The actor's logits are ``head(features @ linear_map(), w)``: ``linear_map`` is the
first layer's text part (d, hidden), :class:`~policies.heads.MlpLogitHead` adds the weight
column × f(w) and the bias and applies the remaining layers; ``scores`` uses that same head,
so the exported policy decides exactly as the agent (``score_kind`` "logit").

**Logging.** SB3 records its losses as ``train/...``; the per-rollout ``callback(step,
scalars)`` receives them renamed to ``losses/...`` (CleanRL's tags), with the rollout's raw
outcomes as ``charts/train_reward``, ``charts/train_quality``, ``charts/train_cost``,
``charts/train_regret`` and the latest validation score as ``charts/validation_score``. SB3's
own TensorBoard writer is not used, so a run has one event file.

**Checkpoints** are SB3's zip (parameters and optimiser state) plus two entries SB3 ignores:
``routerl.json`` (progress, early-stopping state) and ``routerl_best.pt`` (the best parameters),
written to a temporary file and renamed into place. :meth:`PPORouter.load` restores all of it;
:meth:`PPORouter.fit` then continues up to ``total_steps`` (the environment's query stream
restarts from a seed derived from the steps done, so a resumed run is not bit-identical to
an uninterrupted one).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, field
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from data.routing_log import RoutingLog
from envs.rewards import BudgetConfig, CostMultiplier, PreferenceConfig, RewardConfig
from envs.vec_env import RoutingVecEnv
from policies.heads import MlpLogitHead

RolloutCallback = Callable[[int, dict[str, float]], None]
ValidationScore = Callable[[np.ndarray, np.ndarray], float]  # (weights (W,), actions (W, N)) -> score

PROGRESS_ENTRY = "routerl.json"
BEST_ENTRY = "routerl_best.pt"
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class PPOConfig:
    """Hyperparameters of the preference-conditioned PPO router (see the module docstring)."""

    total_steps: int = 409_600  # episodes (queries routed) to train for, at most; a multiple of n_envs × n_steps
    n_envs: int = 64  # episodes stepped at once by the RoutingVecEnv
    n_steps: int = 16  # steps per env per rollout: a rollout holds n_envs × n_steps episodes
    batch_size: int = 256  # minibatch size of the PPO update
    n_epochs: int = 4  # passes over each rollout
    learning_rate: float = 1e-3  # AdamW step size
    clip_range: float = 0.2  # ε of the clipped surrogate objective
    ent_coef: float = 0.003  # entropy bonus coefficient (exploration)
    vf_coef: float = 0.5  # value-loss coefficient
    max_grad_norm: float = 0.5  # gradient clipping
    hidden: tuple[int, ...] = (256,)  # hidden layer sizes of the actor (and, separately, of the critic)
    activation: Literal["tanh", "relu"] = "relu"  # hidden activation (relu beat tanh on RouterBench)
    weight_decay: float = 1e-3  # AdamW decoupled weight decay (d)
    per_query_baseline: bool = True  # (a) train on r − mean over arms of the query's rewards at w
    normalise_rewards: bool = True  # (b) divide rewards by s(w), the arm-reward spread at w
    standardise_observations: bool = True  # (e) feed the network (o − mean) / std (folded into the export)
    eval_every: int = 10_000  # (c) steps between validation evaluations (needs validation data)
    patience: int = 20  # (c) evaluations without improvement before stopping (0 = never stop early)
    eval_weights: int = 12  # (c) validation sweep: w = 0 and this many log-spaced weights in [low, high]
    preference: PreferenceConfig = field(
        default_factory=lambda: PreferenceConfig(low=1.0, high=100_000.0, zero_share=0.1))  # w per episode
    seed: int = 0  # seeds the network, the sampling of actions and the environment
    threads: int = 1  # torch CPU threads while fitting (such small networks run fastest on one)
    device: str = "cpu"  # torch device of the networks while fitting ("cpu", "cuda", "cuda:1", ...); export is CPU

    def __post_init__(self) -> None:
        for name in ("total_steps", "n_envs", "n_steps", "batch_size", "n_epochs", "eval_every",
                     "eval_weights", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.total_steps % (self.n_envs * self.n_steps):
            raise ValueError(f"total_steps ({self.total_steps}) must be a multiple of n_envs × n_steps "
                             f"({self.n_envs * self.n_steps}): PPO trains in whole rollouts")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must list at least one layer size >= 1, got {self.hidden}")


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


class ValidationStopping(BaseCallback):
    """(c): every ``eval_every`` steps score the current greedy policy; keep the best; stop when stale."""

    def __init__(self, router: PPORouter, evaluate: Callable[[], float]) -> None:
        super().__init__()
        self.router = router
        self.evaluate = evaluate
        self.next_evaluation = router.steps_done + router.config.eval_every
        self.last_score: float | None = None

    def _on_step(self) -> bool:
        router, config = self.router, self.router.config
        if self.num_timesteps < self.next_evaluation:
            return True
        self.next_evaluation += config.eval_every
        self.last_score = self.evaluate()
        if self.last_score > router.best_score:
            router.remember_best(self.last_score, self.num_timesteps)
        elif config.patience and self.num_timesteps - router.best_step >= config.patience * config.eval_every:
            router.stopped_early = True
            return False
        return True


class RolloutReport(BaseCallback):
    """Per rollout: SB3's losses as ``losses/...`` and the raw outcomes as ``charts/train_...``."""

    def __init__(self, env: RoutingVecEnv, report: RolloutCallback,
                 stopping: ValidationStopping | None) -> None:
        super().__init__()
        self.env = env
        self.report = report
        self.stopping = stopping
        self._sums: dict[str, float] = {}
        self._count = 0

    def _on_step(self) -> bool:
        for key in ("reward", "quality", "cost", "regret"):
            self._sums[key] = self._sums.get(key, 0.0) + float(getattr(self.env, f"last_{key}").sum())
        self._count += self.env.num_envs
        return True

    def _on_rollout_end(self) -> None:
        scalars = {f"losses/{key.removeprefix('train/')}": float(value)
                   for key, value in self.model.logger.name_to_value.items() if key.startswith("train/")}
        scalars |= {f"charts/train_{key}": total / self._count for key, total in self._sums.items()}
        if self.stopping is not None and self.stopping.last_score is not None:
            scalars["charts/validation_score"] = self.stopping.last_score
        self.report(self.num_timesteps, scalars)
        self._sums.clear()
        self._count = 0


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


def oracle_gap_closed(quality: np.ndarray, cost: np.ndarray) -> ValidationScore:
    """The default criterion of (c): mean over the sweep of (U_π − U_random) / (U_oracle − U_random)."""
    rows = np.arange(len(quality))

    def score(weights: np.ndarray, actions: np.ndarray) -> float:
        shares = []
        for weight, chosen in zip(weights, actions):
            utility = quality - weight * cost
            random, oracle = utility.mean(), utility.max(axis=1).mean()
            gap = max(oracle - random, 1e-12)
            shares.append((utility[rows, chosen].mean() - random) / gap)
        return float(np.mean(shares))

    return score


class PPORouter:
    """Preference-conditioned PPO with the Agent face (fit / scores / predict / linear_map / head)."""

    name = "ppo"
    score_kind = "logit"

    def __init__(self, config: PPOConfig | None, n_models: int, dimension: int,
                 cost_weight: float = 0.0, budget: BudgetConfig | None = None) -> None:
        self.config = config or PPOConfig()
        self.n_models = n_models
        self.dimension = dimension
        self.cost_weight = cost_weight  # the default of predict(features) without a weight; λ̄ under a budget
        self.budget = budget  # learn w as the multiplier of a mean-cost budget instead of drawing it
        self.multiplier: CostMultiplier | None = None  # the budget's λ, once fitting has started
        self.model: PPO | None = None
        self.steps_done = 0  # episodes trained on so far
        self.best_step = 0  # the step the exported (best) parameters come from
        self.best_score = -np.inf  # their validation score (-inf: no validation yet)
        self.stopped_early = False
        self._best_state: dict[str, torch.Tensor] | None = None
        self._mean = np.zeros(dimension + 1)  # (e) observation statistics, identity until fitted
        self._scale = np.ones(dimension + 1)
        self._exported: tuple[np.ndarray, MlpLogitHead] | None = None

    @property
    def cost_weight_range(self) -> list[float]:
        """[0, high]: the weights trained on; the head clamps others into it (metadata's range)."""
        return [0.0, float(self.config.preference.high)]

    def evaluation_weights(self) -> np.ndarray:
        """The validation sweep of (c): 0, then ``eval_weights`` log-spaced in [low, high]."""
        preference = self.config.preference
        spaced = np.geomspace(preference.low, preference.high, self.config.eval_weights)
        return np.concatenate([[0.0], spaced])

    def _standardisation(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(e): mean and standard deviation of the features and of f(w) (a seeded sample of w)."""
        preference = self.config.preference
        encoded = preference.encode(preference.sample(np.random.default_rng(self.config.seed), 100_000))
        observations = np.concatenate([features.mean(axis=0), [encoded.mean()]])
        spread = np.concatenate([features.std(axis=0), [encoded.std()]])
        constant = spread < 1e-6  # e.g. the bias feature: left as it is
        return np.where(constant, 0.0, observations), np.where(constant, 1.0, spread)

    def _environment(self, quality: np.ndarray, cost: np.ndarray,
                     features: np.ndarray) -> CounterfactualReward | MultiplierObservation | StandardisedObservation:
        n = len(features)
        log = RoutingLog(models=tuple(str(k) for k in range(self.n_models)),
                         query_ids=np.array([str(i) for i in range(n)], dtype=object),
                         queries=[""] * n, quality=np.asarray(quality, dtype=np.float64),
                         cost=np.asarray(cost, dtype=np.float64))
        if self.budget is None:
            reward = RewardConfig(preference=self.config.preference)
        else:  # the initial λ is the configured cost weight (clamped into the trained range)
            reward = RewardConfig(cost_weight=min(self.cost_weight, self.config.preference.high), budget=self.budget)
        seed = self.config.seed + self.steps_done
        env = RoutingVecEnv(log, features, self.config.n_envs, reward, seed=seed)
        counterfactual = CounterfactualReward(env, self.config.per_query_baseline, self.config.normalise_rewards)
        shaped: CounterfactualReward | MultiplierObservation = counterfactual
        if self.budget is not None:
            if self.multiplier is None:
                self.multiplier = env.task.multiplier
            assert self.multiplier is not None  # a budget reward has one
            env.task.multiplier = self.multiplier  # resumed: continue the restored λ
            shaped = MultiplierObservation(counterfactual, self.config.preference, self.multiplier)
        if not self.config.standardise_observations:
            return shaped
        if self.model is None:
            self._mean, self._scale = self._standardisation(features)
        return StandardisedObservation(shaped, self._mean, self._scale)

    def _new_model(self, env: CounterfactualReward | MultiplierObservation | StandardisedObservation) -> PPO:
        config = self.config
        policy_kwargs = {
            "net_arch": {"pi": list(config.hidden), "vf": list(config.hidden)},
            "activation_fn": ACTIVATIONS[config.activation],
            "optimizer_class": torch.optim.AdamW,
            "optimizer_kwargs": {"weight_decay": config.weight_decay, "eps": 1e-5},
        }
        return PPO("MlpPolicy", env, learning_rate=config.learning_rate, n_steps=config.n_steps,
                   batch_size=config.batch_size, n_epochs=config.n_epochs, clip_range=config.clip_range,
                   ent_coef=config.ent_coef, vf_coef=config.vf_coef, max_grad_norm=config.max_grad_norm,
                   policy_kwargs=policy_kwargs, seed=config.seed, device=config.device, verbose=0)

    def fit(self, features: np.ndarray, quality: np.ndarray, cost: np.ndarray,
            val_features: np.ndarray | None = None, val_quality: np.ndarray | None = None,
            val_cost: np.ndarray | None = None, callback: RolloutCallback | None = None,
            validation_score: ValidationScore | None = None) -> PPORouter:
        """Train on a full-information log until ``total_steps`` or early stopping.

        ``features`` (N, d), ``quality`` and ``cost`` (N, K). With validation data (features and,
        for the default criterion, its quality and cost) the best validation parameters are kept
        (c); ``validation_score(weights, actions)`` replaces the default criterion. ``callback``
        is called after every rollout (see the module docstring). A fresh agent trains from
        step 0; one restored by :meth:`load` continues from its checkpoint.
        """
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dimension:
            raise ValueError(f"features must be (N, {self.dimension}), got {x.shape}")
        if np.shape(quality) != (len(x), self.n_models) or np.shape(cost) != np.shape(quality):
            raise ValueError(f"full-information quality and cost must be (N, {self.n_models})")
        env = self._environment(quality, cost, x)
        if self.model is None:
            self.model = self._new_model(env)
        else:  # seed before set_env: the new env has its own seed, and a seeded reset would restart λ
            self.model.set_random_seed(self.config.seed + self.steps_done)
            self.model.set_env(env)
        callbacks: list[BaseCallback] = []
        stopping = None
        if val_features is not None and self.budget is None:  # under a budget λ moves: keep the last parameters
            if validation_score is None:
                if val_quality is None or val_cost is None:
                    raise ValueError("validation needs val_quality and val_cost, or a validation_score")
                validation_score = oracle_gap_closed(np.asarray(val_quality), np.asarray(val_cost))
            stopping = ValidationStopping(self, self._validation(np.asarray(val_features), validation_score))
            callbacks.append(stopping)
        if callback is not None:
            callbacks.append(RolloutReport(env.routing, callback, stopping))
        remaining = self.config.total_steps - self.steps_done
        if remaining > 0 and not self.stopped_early:
            threads = torch.get_num_threads()
            torch.set_num_threads(self.config.threads)
            try:
                self.model.learn(remaining, callback=CallbackList(callbacks), reset_num_timesteps=False)
            finally:
                torch.set_num_threads(threads)
        self.steps_done = self.model.num_timesteps
        if self.multiplier is not None:
            self.cost_weight = self.multiplier.average  # λ̄: the budget's cost weight, the policy's default
        if stopping is None:
            self.remember_best(self.best_score, self.steps_done)
        elif not self.stopped_early and (self._best_state is None or self.best_step < self.steps_done):
            final = stopping.evaluate()  # the parameters trained since the last evaluation
            if final > self.best_score:
                self.remember_best(final, self.steps_done)
        assert self._best_state is not None
        self.model.policy.load_state_dict(self._best_state)
        return self

    def _validation(self, features: np.ndarray, score: ValidationScore) -> Callable[[], float]:
        weights = self.evaluation_weights()

        def evaluate() -> float:
            assert self.model is not None
            linear_map, head = self._export_state(self._policy_state())
            actions = np.stack([self._argmax(features, linear_map, head, w) for w in weights])
            return float(score(weights, actions))

        return evaluate

    def remember_best(self, score: float, step: int) -> None:
        """Keep the current parameters as the ones to export."""
        assert self.model is not None
        self.best_score, self.best_step = score, step
        self._best_state = self._policy_state()
        self._exported = self._export_state(self._best_state)

    def _policy_state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the current actor-critic parameters (whatever device trains them)."""
        assert self.model is not None
        return {key: value.detach().to("cpu", copy=True) for key, value in self.model.policy.state_dict().items()}

    def predict_current(self, features: np.ndarray, cost_weight: float) -> np.ndarray:
        """Greedy model index per query of the parameters being trained (``predict`` uses the best kept).

        For monitoring from a ``fit`` callback, e.g. time to reach a validation reward.
        """
        if self.model is None:
            raise RuntimeError("PPORouter has no parameters yet: call fit() or load() first")
        return self._argmax(features, *self._export_state(self._policy_state()), cost_weight)

    def _export_state(self, state: dict[str, torch.Tensor]) -> tuple[np.ndarray, MlpLogitHead]:
        """(linear map, head) of an actor's parameters: SB3's policy_net layers, then action_net."""
        hidden = [f"mlp_extractor.policy_net.{2 * i}" for i in range(len(self.config.hidden))]
        layers = [(state[f"{name}.weight"], state[f"{name}.bias"]) for name in hidden]
        layers.append((state["action_net.weight"], state["action_net.bias"]))
        weight, bias = layers[0]
        scale = torch.from_numpy(self._scale).to(torch.float64)
        first_weight = weight.to(torch.float64) / scale  # (e) folded: W' = W / s, b' = b − W (m / s)
        first_bias = bias.to(torch.float64) - first_weight @ torch.from_numpy(self._mean).to(torch.float64)
        rest = []
        for weight, bias in layers[1:]:
            linear = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=torch.float64)
            linear.load_state_dict({"weight": weight.to(torch.float64), "bias": bias.to(torch.float64)})
            rest.append(linear)
        preference = self.config.preference
        head = MlpLogitHead(first_weight[:, self.dimension], first_bias, rest, self.config.activation,
                            preference.low, preference.high)
        linear_map = first_weight[:, : self.dimension].T.numpy().copy()
        return linear_map, head

    @staticmethod
    def _logits(features: np.ndarray, linear_map: np.ndarray, head: MlpLogitHead,
                cost_weight: float) -> np.ndarray:
        z = torch.from_numpy(np.asarray(features, dtype=np.float64) @ linear_map)
        with torch.no_grad():
            return head(z, float(cost_weight)).numpy()

    def _argmax(self, features: np.ndarray, linear_map: np.ndarray, head: MlpLogitHead,
                cost_weight: float) -> np.ndarray:
        return np.argmax(self._logits(features, linear_map, head, cost_weight), axis=1)

    def _fitted(self) -> tuple[np.ndarray, MlpLogitHead]:
        if self._exported is None:
            raise RuntimeError("PPORouter is not fitted: call fit() or load() first")
        return self._exported

    def scores(self, features: np.ndarray, cost_weight: float) -> np.ndarray:
        """(N, K) actor logits of the exported parameters at ``cost_weight`` (clamped into [0, high])."""
        return self._logits(features, *self._fitted(), cost_weight)

    def predict(self, features: np.ndarray, cost_weight: float | None = None) -> np.ndarray:
        """Greedy model index per query (ties to the lower index), at ``cost_weight`` or the default."""
        weight = self.cost_weight if cost_weight is None else cost_weight
        return self._argmax(features, *self._fitted(), weight)

    def linear_map(self) -> np.ndarray:
        """(d, hidden): the actor's first layer on the features (the f(w) column stays in the head)."""
        return self._fitted()[0]

    def head(self) -> torch.nn.Module:
        """:class:`~policies.heads.MlpLogitHead` of the exported parameters."""
        return self._fitted()[1]

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint atomically: SB3's zip plus the progress and the best parameters.

        Before the first validation evaluation the "best" parameters are the current ones.
        """
        if self.model is None:
            raise RuntimeError("nothing to save: the agent has not been fitted")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".checkpoint-", suffix=".zip", dir=path.parent)
        os.close(handle)
        try:
            self.model.save(temporary)
            progress = {"steps_done": self.model.num_timesteps, "best_step": self.best_step,
                        "best_score": self.best_score, "stopped_early": self.stopped_early,
                        "observation_mean": self._mean.tolist(), "observation_scale": self._scale.tolist(),
                        "config": asdict(self.config),
                        "budget": None if self.budget is None else asdict(self.budget),
                        "multiplier": None if self.multiplier is None else self.multiplier.state_dict()}
            best = io.BytesIO()
            torch.save(self._policy_state() if self._best_state is None else self._best_state, best)
            with zipfile.ZipFile(temporary, "a") as archive:
                archive.writestr(PROGRESS_ENTRY, json.dumps(progress, allow_nan=True))
                archive.writestr(BEST_ENTRY, best.getvalue())
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        return path

    def load(self, path: str | Path) -> PPORouter:
        """Restore a checkpoint written by :meth:`save` (same configuration required)."""
        with zipfile.ZipFile(path) as archive:
            progress = json.loads(archive.read(PROGRESS_ENTRY))
            best_state = torch.load(io.BytesIO(archive.read(BEST_ENTRY)), weights_only=True)
        if progress["config"] != json.loads(json.dumps(asdict(self.config))):
            raise ValueError(f"{path}: checkpoint was written with another PPOConfig")
        if progress.get("budget") != (None if self.budget is None else json.loads(json.dumps(asdict(self.budget)))):
            raise ValueError(f"{path}: checkpoint was written with another budget")
        if self.budget is not None and progress.get("multiplier") is not None:
            self.multiplier = CostMultiplier(self.budget)
            self.multiplier.load_state_dict(progress["multiplier"])
            self.cost_weight = self.multiplier.average
        self.model = PPO.load(path, device=self.config.device)
        self.steps_done, self.best_step = progress["steps_done"], progress["best_step"]
        self.best_score, self.stopped_early = progress["best_score"], progress["stopped_early"]
        self._mean = np.asarray(progress["observation_mean"], dtype=np.float64)
        self._scale = np.asarray(progress["observation_scale"], dtype=np.float64)
        self._best_state = best_state
        self._exported = self._export_state(best_state)
        return self
