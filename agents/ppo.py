"""PPO (stable-baselines3) on the batched routing environment, conditioned on the cost weight.

Schulman, Wolski, Dhariwal, Radford & Klimov (2017), "Proximal policy optimization algorithms",
arXiv:1707.06347, as implemented by stable-baselines3 (Raffin et al., 2021, JMLR 22(268)).

**Preference conditioning.** Every episode draws a cost weight w from a
:class:`~envs.rewards.PreferenceConfig` (0 with probability ``zero_share``, else log-uniform on
[low, high]) and appends f(w) = log1p(w / low) / log1p(high / low) to the query's features, so one
actor π(k | x, f(w)) serves every trade-off (Abels et al., 2019, "Dynamic weights in
multi-objective deep reinforcement learning", ICML). The reward is r_k = quality_k − w · cost_k.
The range [low, high] is the training data's own unless ``preference`` is set: the span of the
single models' break-even weights with a decade beyond each end
(:meth:`~envs.rewards.PreferenceConfig.spanning`, the span the evaluation's frontier sweeps), so
that a log whose costs are 100× smaller trains on weights 100× larger without a hand setting,
and a quarter of the episodes have w = 0 (:data:`DERIVED_ZERO_SHARE`).

**Episodes are one step long** (a contextual bandit), so the discount γ and GAE's λ never act: every
step is terminal and the advantage is r − V(x, w). They are left at SB3's defaults, not configuration.

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
    evaluations without improvement (:meth:`PPORouter.validation_rule`, applied by
    :class:`~agents.callbacks.KeepBest`). The criterion is the mean over the sweep of the share of
    the gap between random routing and the per-query oracle that the policy closes (1 = oracle),
        g(w) = (U_π(w) − U_random(w)) / (U_oracle(w) − U_random(w)),   U = mean validation utility.
    (The best single model is a worse reference: at large w it is almost the oracle, and the
    ratio explodes.)
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

**Callbacks.** SB3's own callback mechanics drive the loop; one SB3 callback relays them to the
callbacks of :mod:`agents.callbacks`: ``on_step`` after every batch of ``n_envs`` episodes (its
raw outcomes), ``on_rollout_end`` once a rollout's update is done (a checkpoint then holds every
rollout counted in its steps), with that update's losses (SB3's ``train/...``) renamed to
``losses/...`` (CleanRL's tags). SB3's own TensorBoard writer is not used, so a run has one
event file.

**Checkpoints.** :meth:`PPORouter.state_dict` is SB3's zip (parameters and optimiser state) as
bytes, with the progress, the observation statistics, the weights trained on and the budget's λ;
:meth:`PPORouter.train` after :meth:`PPORouter.load_state_dict` continues up to ``total_steps``
(the query stream restarts from a seed derived from the steps done: a resumed run has the
uninterrupted run's number of steps, not its parameters).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from agents.base import Agent, FeaturizedSplit, State, TrainingTask, ValidationRule
from agents.callbacks import Callback, CallbackList, Outcomes
from agents.ppo_envs import (
    CounterfactualReward,
    MultiplierObservation,
    StandardisedObservation,
    actor_critic_kwargs,
    fold_actor,
)
from data.schema import DataError
from envs.rewards import BudgetConfig, CostMultiplier, PreferenceConfig, RewardConfig
from envs.vec_env import RoutingVecEnv
from policies.heads import MlpLogitHead

ObservedEnv = CounterfactualReward | MultiplierObservation | StandardisedObservation

#: Share of w = 0 episodes when the weights come from the data; with 0.1 the dearest model's probability
#: collapsed in some RouterBench folds, never to be chosen again, not even at w = 0.
DERIVED_ZERO_SHARE = 0.25


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
    # w per episode; None: [low, high] from the training data (PreferenceConfig.spanning), zero_share 0.25
    preference: PreferenceConfig | None = None
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


def oracle_gap_shares(quality: np.ndarray, cost: np.ndarray, weights: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Each query's part of the criterion of (c), whose mean over queries it is: the mean over the sweep of
    (u_n(π(n), w) − ū_n(w)) / (U_oracle(w) − U_random(w)), u = quality − w · cost, ū_n its mean over models."""
    rows = np.arange(len(quality))
    shares = np.zeros(len(quality))
    for weight, chosen in zip(weights, actions):
        utility = quality - weight * cost
        gap = max(utility.max(axis=1).mean() - utility.mean(), 1e-12)
        shares += (utility[rows, chosen] - utility.mean(axis=1)) / gap
    return shares / len(weights)


class _Relay(BaseCallback):
    """SB3's callback hooks relayed to routerl's callbacks (:mod:`agents.callbacks`).

    ``on_step`` after every batch of episodes; ``on_rollout_end`` once a rollout has been learned
    from, which SB3 marks by the next rollout's start (or the end of training): its update done,
    the state is whole, and SB3's logger holds that update's losses.
    """

    def __init__(self, callbacks: CallbackList, env: RoutingVecEnv, router: PPORouter) -> None:
        super().__init__()
        self.callbacks, self.env, self.router = callbacks, env, router
        self.learned_step = router.steps_done  # the step up to which rollouts have been learned from

    def _on_step(self) -> bool:
        env = self.env
        outcomes = Outcomes(env.last_reward, env.last_quality, env.last_cost, env.last_regret)
        if self.callbacks.on_step(self.num_timesteps, outcomes):
            return True
        self.router.stopped_early = True
        return False

    def _on_rollout_start(self) -> None:
        self._rollout_learned()

    def _on_training_end(self) -> None:
        if not self.router.stopped_early:
            self._rollout_learned()

    def _rollout_learned(self) -> None:
        if self.num_timesteps == self.learned_step:
            return
        self.learned_step = self.router.steps_done = self.num_timesteps
        losses = {f"losses/{key.removeprefix('train/')}": float(value)
                  for key, value in self.model.logger.name_to_value.items() if key.startswith("train/")}
        self.callbacks.on_rollout_end(self.num_timesteps, losses)


class PPORouter(Agent):
    """Preference-conditioned PPO with the Agent face (train / scores / predict / linear_map / head)."""

    name = "ppo"
    score_kind = "logit"
    stops_early = True

    def __init__(self, n_models: int, dimension: int, config: PPOConfig | None = None,
                 cost_weight: float = 0.0) -> None:
        super().__init__(n_models, dimension, cost_weight)  # cost_weight: λ̄ after training under a budget
        self.config = config or PPOConfig()
        self._preference = self.config.preference  # resolved from the training data by train() when None
        self.budget: BudgetConfig | None = None  # the task's budget, once training has started
        self.multiplier: CostMultiplier | None = None  # the budget's λ, once training has started
        self.model: PPO | None = None
        self._mean = np.zeros(dimension + 1)  # (e) observation statistics, identity until fitted
        self._scale = np.ones(dimension + 1)
        self._mean_cost = np.full(n_models, np.nan)  # USD per model on the training split: the head's costs
        self._exported: tuple[np.ndarray, MlpLogitHead] | None = None
        self._candidate: tuple[State, tuple[np.ndarray, MlpLogitHead]] | None = None  # the last parameters()

    @property
    def preference(self) -> PreferenceConfig:
        """The weights trained on: ``config.preference``, or the one :meth:`train` derived from its data."""
        if self._preference is None:
            raise RuntimeError("PPORouter's cost-weight range comes from its training data: call train() first")
        return self._preference

    @property
    def cost_weight_range(self) -> list[float]:
        """[0, high]: the weights trained on; the head clamps others into it (metadata's range)."""
        return [0.0, float(self.preference.high)]

    @property
    def learned_cost_weight(self) -> float | None:
        """λ̄, the averaged budget multiplier, after training under a budget; None otherwise."""
        return None if self.multiplier is None else self.cost_weight

    def evaluation_weights(self) -> np.ndarray:
        """The validation sweep of (c): 0, then ``eval_weights`` log-spaced in [low, high]."""
        preference = self.preference
        spaced = np.geomspace(preference.low, preference.high, self.config.eval_weights)
        return np.concatenate([[0.0], spaced])

    def _standardisation(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(e): mean and standard deviation of the features and of f(w) (a seeded sample of w)."""
        preference = self.preference
        encoded = preference.encode(preference.sample(np.random.default_rng(self.config.seed), 100_000))
        observations = np.concatenate([features.mean(axis=0), [encoded.mean()]])
        spread = np.concatenate([features.std(axis=0), [encoded.std()]])
        constant = spread < 1e-6  # e.g. the bias feature: left as it is
        return np.where(constant, 0.0, observations), np.where(constant, 1.0, spread)

    def _environment(self, quality: np.ndarray, cost: np.ndarray, features: np.ndarray) -> ObservedEnv:
        log = FeaturizedSplit.of(features, quality, cost).log
        if self.budget is None:
            reward = RewardConfig(preference=self.preference)
        else:  # the initial λ is the configured cost weight (clamped into the trained range)
            reward = RewardConfig(cost_weight=min(self.cost_weight, self.preference.high), budget=self.budget)
        seed = self.config.seed + self.steps_done
        env = RoutingVecEnv(log, features, self.config.n_envs, reward, seed=seed)
        counterfactual = CounterfactualReward(env, self.config.per_query_baseline, self.config.normalise_rewards)
        shaped: CounterfactualReward | MultiplierObservation = counterfactual
        if self.budget is not None:
            if self.multiplier is None:
                self.multiplier = env.task.multiplier
            assert self.multiplier is not None  # a budget reward has one
            env.task.multiplier = self.multiplier  # resumed: continue the restored λ
            shaped = MultiplierObservation(counterfactual, self.preference, self.multiplier)
        if not self.config.standardise_observations:
            return shaped
        if self.model is None:
            self._mean, self._scale = self._standardisation(features)
        return StandardisedObservation(shaped, self._mean, self._scale)

    def _new_model(self, env: ObservedEnv) -> PPO:
        config = self.config
        policy_kwargs = actor_critic_kwargs(tuple(config.hidden), config.activation, config.weight_decay)
        return PPO("MlpPolicy", env, learning_rate=config.learning_rate, n_steps=config.n_steps,
                   batch_size=config.batch_size, n_epochs=config.n_epochs, clip_range=config.clip_range,
                   ent_coef=config.ent_coef, vf_coef=config.vf_coef, max_grad_norm=config.max_grad_norm,
                   policy_kwargs=policy_kwargs, seed=config.seed, device=config.device, verbose=0)

    def fit(self, features: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> PPORouter:
        """:meth:`train` on a full-information table, without validation or callbacks."""
        return self.train(TrainingTask(FeaturizedSplit.of(features, quality, cost)))

    def train(self, task: TrainingTask, callbacks: Sequence[Callback] = ()) -> PPORouter:
        """Train on the task's full-information training split until ``total_steps`` or a callback stops it.

        The reward is drawn per episode from the preference, or, when ``task.reward`` has a budget,
        the budget's multiplier. A fresh agent trains from step 0; one restored by
        :meth:`load_state_dict` continues from its checkpoint (with the same budget). The agent
        then decides with its final parameters, unless a callback (keep-best) restores others.
        """
        x = np.asarray(task.train.features, dtype=np.float32)
        quality, cost = task.train.log.quality, task.train.log.cost
        if x.ndim != 2 or x.shape[1] != self.dimension:
            raise ValueError(f"features must be (N, {self.dimension}), got {x.shape}")
        if np.shape(quality) != (len(x), self.n_models) or np.shape(cost) != np.shape(quality):
            raise ValueError(f"full-information quality and cost must be (N, {self.n_models})")
        if self.model is not None and task.reward.budget != self.budget:
            raise DataError(f"cannot resume: the checkpoint was written with reward.budget "
                            f"{_plain(_budget(self.budget))}, this run has {_plain(_budget(task.reward.budget))}")
        self.budget = task.reward.budget
        self._mean_cost = np.nanmean(cost, axis=0)
        if self._preference is None:
            means = np.nanmean(quality, axis=0), np.nanmean(cost, axis=0)
            self._preference = PreferenceConfig.spanning(*means, zero_share=DERIVED_ZERO_SHARE)
        env = self._environment(quality, cost, x)
        if self.model is None:
            self.model = self._new_model(env)
        else:  # seed before set_env: the new env has its own seed, and a seeded reset would restart λ
            self.model.set_random_seed(self.config.seed + self.steps_done)
            self.model.set_env(env)
        hooks = CallbackList(callbacks)
        hooks.on_training_start(self)
        remaining = self.config.total_steps - self.steps_done
        if remaining > 0 and not self.stopped_early:
            threads = torch.get_num_threads()
            torch.set_num_threads(self.config.threads)
            try:
                self.model.learn(remaining, callback=_Relay(hooks, env.routing, self), reset_num_timesteps=False)
            finally:
                torch.set_num_threads(threads)
        self.steps_done = self.model.num_timesteps
        if self.multiplier is not None:
            self.cost_weight = self.multiplier.average  # λ̄: the budget's cost weight, the policy's default
        self._exported = self._export_state(self._policy_state())
        hooks.on_training_end(self)
        return self

    def validation_rule(self, validation: FeaturizedSplit | None) -> ValidationRule:
        """(c): the oracle gap closed over the validation sweep, every ``eval_every`` steps, with ``patience``.

        None under a budget: λ moves while training, so the last parameters are kept.
        """
        if validation is None or self.budget is not None:
            return ValidationRule()
        quality, cost = np.asarray(validation.log.quality), np.asarray(validation.log.cost)
        features, weights = np.asarray(validation.features), self.evaluation_weights()

        def evaluate() -> float:
            linear_map, head = self._export_state(self._policy_state())
            actions = np.stack([self._argmax(features, linear_map, head, w) for w in weights])
            return float(oracle_gap_shares(quality, cost, weights, actions).mean())

        return ValidationRule(evaluate, self.config.eval_every, self.config.patience)

    def validation_shares(self, validation: FeaturizedSplit) -> np.ndarray:
        """Per validation query, its share of the kept parameters' validation score (:func:`oracle_gap_shares`)."""
        weights = self.evaluation_weights()
        actions = np.stack([self.predict(np.asarray(validation.features), float(w)) for w in weights])
        return oracle_gap_shares(np.asarray(validation.log.quality), np.asarray(validation.log.cost), weights, actions)

    def _policy_state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the current actor-critic parameters (whatever device trains them)."""
        if self.model is None:
            raise RuntimeError("PPORouter has no parameters yet: call train() or load_state_dict() first")
        return {key: value.detach().to("cpu", copy=True) for key, value in self.model.policy.state_dict().items()}

    def parameters(self) -> State:
        """A CPU copy of the actor-critic parameters, as arrays; their exported form is derived at once.

        Restoring this candidate (:meth:`load_parameters`, keep-best's last act) reuses that form.
        Deriving it builds torch modules, whose initialisation draws from torch's global generator,
        which also samples PPO's actions: when candidates are taken is part of what a seeded run
        repeats, and it is here, as it was before keep-best became a callback.
        """
        state = self._policy_state()
        parameters = {key: value.numpy() for key, value in state.items()}
        self._candidate = (parameters, self._export_state(state))
        return parameters

    def load_parameters(self, parameters: State) -> None:
        """Decide (and go on training) with ``parameters`` from :meth:`parameters`."""
        assert self.model is not None
        state = {key: torch.from_numpy(np.asarray(value)) for key, value in parameters.items()}
        self.model.policy.load_state_dict(state)
        candidate = self._candidate
        if candidate is not None and candidate[0] is parameters:
            self._exported = candidate[1]
        else:
            self._exported = self._export_state(state)

    def state_dict(self) -> State:
        """SB3's zip as bytes, the progress, the observation statistics, the weights trained on, the budget's λ."""
        if self.model is None:
            raise RuntimeError("nothing to save: the agent has not been trained")
        archive = io.BytesIO()
        self.model.save(archive)
        return {
            "model": np.frombuffer(archive.getvalue(), dtype=np.uint8),
            "steps_done": self.model.num_timesteps,
            "stopped_early": self.stopped_early,
            "observation_mean": self._mean.copy(),
            "observation_scale": self._scale.copy(),
            "config": asdict(self.config),
            "preference": asdict(self.preference),
            "budget": _budget(self.budget),
            "multiplier": None if self.multiplier is None else self.multiplier.state_dict(),
        }

    def load_state_dict(self, state: State) -> None:
        """Continue from :meth:`state_dict`; other ``agent.ppo`` settings are a :class:`DataError` naming them."""
        saved, current = _plain(state["config"]), _plain(asdict(self.config))
        changed = [f"{key} {saved.get(key)!r} → {value!r}" for key, value in current.items() if saved.get(key) != value]
        if changed:
            raise DataError(f"the checkpoint was written with other agent.ppo settings: {', '.join(changed)}")
        self.model = PPO.load(io.BytesIO(np.asarray(state["model"]).tobytes()), device=self.config.device)
        self.steps_done, self.stopped_early = int(state["steps_done"]), bool(state["stopped_early"])
        self._preference = PreferenceConfig(**state["preference"])
        self._mean = np.asarray(state["observation_mean"], dtype=np.float64)
        self._scale = np.asarray(state["observation_scale"], dtype=np.float64)
        self.budget = None if state["budget"] is None else BudgetConfig(**state["budget"])
        self.multiplier = None
        if self.budget is not None and state["multiplier"] is not None:
            self.multiplier = CostMultiplier(self.budget)
            self.multiplier.load_state_dict(state["multiplier"])
            self.cost_weight = self.multiplier.average
        self._exported = self._export_state(self._policy_state())

    def predict_current(self, features: np.ndarray, cost_weight: float) -> np.ndarray:
        """Greedy model index per query of the parameters being trained (``predict`` uses those kept).

        For monitoring from a callback, e.g. time to reach a validation reward.
        """
        return self._argmax(features, *self._export_state(self._policy_state()), cost_weight)

    def _export_state(self, state: dict[str, torch.Tensor]) -> tuple[np.ndarray, MlpLogitHead]:
        """(linear map, head) of an actor's parameters (:func:`fold_actor`)."""
        return fold_actor(state, len(self.config.hidden), self.config.activation, self._mean, self._scale,
                          self.preference, self._mean_cost)

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
            raise RuntimeError("PPORouter is not trained: call train() or load_state_dict() first")
        return self._exported

    def scores(self, features: np.ndarray, cost_weight: float) -> np.ndarray:
        """(N, K) actor logits of the exported parameters at ``cost_weight`` (clamped into [0, high])."""
        return self._logits(features, *self._fitted(), cost_weight)

    def linear_map(self) -> np.ndarray:
        """(d, hidden): the actor's first layer on the features (the f(w) column stays in the head)."""
        return self._fitted()[0]

    def head(self) -> torch.nn.Module:
        """:class:`~policies.heads.MlpLogitHead` of the exported parameters."""
        return self._fitted()[1]


def _budget(budget: BudgetConfig | None) -> dict[str, Any] | None:
    """A budget's settings as a dict (None without a budget), for the checkpoint and its messages."""
    return None if budget is None else asdict(budget)


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists), to compare a checkpoint's settings."""
    return json.loads(json.dumps(value))
