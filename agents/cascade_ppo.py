"""A learned cascade: MaskablePPO (sb3-contrib) on the batched cascade environment, conditioned on the cost weight.

Schulman et al. (2017), "Proximal policy optimization algorithms", arXiv:1707.06347, with invalid
actions masked out of the policy's distribution (Huang & Ontañón, 2022, "A closer look at invalid
action masking in policy gradient algorithms", FLAIRS), as sb3-contrib's ``MaskablePPO`` does.

An episode is one query of the training split (:class:`envs.cascade_vec_env.CascadeVecEnv`): the
actor calls models one after another, sees features of each answer and their agreement, and stops
by returning one of them; the final reward is that answer's quality minus w × the cost of every
call (docs/contracts.md §7.3). The actor can always stop after one call, so it can imitate any
router that decides before generation; it escalates only where a call's answer says it pays.

What it shares with the one-step router of :mod:`agents.ppo`, and what it adds:

* **Preference conditioning.** w is drawn per episode from a :class:`~envs.rewards.PreferenceConfig`
  and f(w) is the observation's last feature, so one actor serves every trade-off; unless
  ``preference`` is set, [low, high] is the training data's own
  (:meth:`~envs.rewards.PreferenceConfig.spanning`, w = 0 a quarter of the time:
  :data:`agents.ppo.DERIVED_ZERO_SHARE`).
* **(a) per-query baseline, (b) reward scale per weight**, on the final reward only (every
  intermediate reward is 0): (r − b(x, w)) / s(w), b the mean over models of the query's one-call
  utility quality − w · cost. Both are constant within an episode (one final reward, the same x and
  w throughout), so the best policy at each (x, w) is unchanged. s(w) is the one-step router's
  spread by default (:class:`agents.ppo_envs.RewardScale`, ``reward_scale: spread``), or
  :class:`StakesScale` (``stakes``): each model's shortfall against the query's best call, capped
  at one quality unit. The spread grows as w × the dearest model's cost, so at large w it shrinks
  the choice between cheap actions (stop, or escalate to a mid-priced model) until PPO does not
  learn it; the stakes keep it, but leave the rewards of absurd calls at large w huge, which on
  RouterBench (costs spanning 100×, weights up to ~9e4) cost AIQ. BENCHMARKS.md has both measured;
  ``tests/test_cascade_ppo.py`` shows the synthetic case that needs ``stakes``.
* **(c) early stopping on validation.** Every ``eval_every`` steps the greedy masked policy
  (:meth:`CascadePPO.decide`) runs on the validation queries over a sweep of weights; the score is
  the mean over the sweep of the share of the gap between one random call and the per-query
  oracle (one call of the query's best model, which is also the best cascade) that it closes,
  (U_π(w) − U_random(w)) / (U_oracle(w) − U_random(w)). The best parameters are kept; a phase of
  training stops after ``patience`` evaluations without improvement.
* **(d) a small regularised network** (``hidden``, AdamW's ``weight_decay``).
* **(e) standardised observations**, with fixed statistics: the mean and standard deviation of
  the observations a uniformly random masked policy visits (a seeded sample of
  :data:`STANDARDISATION_SAMPLES`), with f(w)'s standardised value multiplied by ``weight_gain``
  (Adam's steps on the weight's pathway grow with its input's scale: with ``stakes``, a gain of 4
  lets the actor tell apart nearby weights where the best escalation changes); all folded into the
  exported first layer (:func:`agents.ppo_envs.fold_actor`).
* **(f) a stop prior** (``stop_prior``): the stop logits start ln(K − 1) above the calls', so the
  untrained actor stops after a call about as often as it escalates (with K − 1 calls left and one
  stop, it would otherwise escalate almost always, and every early episode would pay for them).
* **(g) a warm start as a router** (``warm_start_steps``): the first steps allow one call per
  query, which is the pre-generation routing problem; escalation is then allowed, from the best
  parameters of that phase. Keep-best may keep the router (the report's ``max_calls`` says so).

Episodes last several steps, so unlike the one-step router's, γ and GAE's λ act: γ = 1 (the cost of
every call is in the one final reward) and λ = 1 (Monte Carlo advantages: the value of a state in
the middle of a cascade is hard to learn, and λ = 0.95 lost 0.04 AIQ on RouterBench).

**Deciding.** :meth:`CascadePPO.decide` runs the greedy masked rule on a batch of queries: at each
step the argmax of the actor's logits over the valid actions, until a stop. The actor is exported
as ``head(x @ linear_map[:d] + s @ linear_map[d:], w)``, x the query features, s the cascade's
state (called models, response slots, agreement) and :class:`~policies.heads.MlpLogitHead` the
rest, which is what :class:`policies.cascade_policy.CascadePolicy` computes from text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass
from sb3_contrib import MaskablePPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from agents.ppo import DERIVED_ZERO_SHARE
from agents.ppo_envs import RewardScale, actor_critic_kwargs, fold_actor
from envs.cascade_env import CascadeConfig, CascadeTask, cascade_cost
from envs.cascade_vec_env import CascadeData, CascadeVecEnv
from envs.rewards import PreferenceConfig, RewardConfig
from policies.heads import MlpLogitHead

#: Observations of a uniformly random masked policy that give the standardisation statistics of (e).
STANDARDISATION_SAMPLES = 16_384
#: Points of f(w) in [0, 1] on which :class:`StakesScale` tabulates s(w).
STAKES_GRID = 257


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class CascadePPOConfig:
    """Hyperparameters of the preference-conditioned cascade PPO (see the module docstring)."""

    total_steps: int = 262_144  # environment steps (calls and stops) at most; a multiple of n_envs × n_steps
    n_envs: int = 64  # episodes stepped at once by the CascadeVecEnv
    n_steps: int = 32  # steps per env per rollout: a rollout holds n_envs × n_steps steps
    batch_size: int = 512  # minibatch size of the PPO update
    n_epochs: int = 4  # passes over each rollout
    learning_rate: float = 1e-3  # AdamW step size
    gamma: float = 1.0  # discount: 1, every call's cost is in the final reward
    gae_lambda: float = 1.0  # GAE's λ: 1, Monte Carlo advantages (the value of a state mid-cascade is hard to learn)
    clip_range: float = 0.2  # ε of the clipped surrogate objective
    ent_coef: float = 0.003  # entropy bonus coefficient (exploration)
    vf_coef: float = 0.5  # value-loss coefficient
    max_grad_norm: float = 0.5  # gradient clipping
    hidden: tuple[int, ...] = (128,)  # hidden layer sizes of the actor (and, separately, of the critic)
    activation: Literal["tanh", "relu"] = "relu"  # hidden activation
    weight_decay: float = 1e-3  # (d) AdamW decoupled weight decay
    per_query_baseline: bool = True  # (a) final reward minus the query's mean one-call utility at w
    normalise_rewards: bool = True  # (b) final reward divided by a scale s(w) of what is at stake at w
    reward_scale: Literal["spread", "stakes"] = "spread"  # (b) s(w): agents.ppo's arm spread, or capped shortfalls
    standardise_observations: bool = True  # (e) feed the network (o − mean) / std (folded into the export)
    weight_gain: float = 1.0  # (e) the standardised f(w) is multiplied by this (> 0): larger steps on w's pathway
    stop_prior: bool = True  # (f) the untrained actor stops after a call as often as it escalates
    warm_start_steps: int = 131_072  # (g) first steps with one call per query (routing), then escalation; 0: none
    eval_every: int = 8_192  # (c) steps between validation evaluations (with validation data)
    patience: int = 10  # (c) evaluations without improvement before stopping (0: never stop early)
    eval_weights: int = 12  # (c) validation sweep: w = 0 and this many log-spaced weights in [low, high]
    # w per episode; None: [low, high] from the training data (PreferenceConfig.spanning), zero_share 0.25
    preference: PreferenceConfig | None = None
    # calls per query at most (2: an answer, then one escalation, as FrugalGPT's and AutoMix's cascades), penalty
    cascade: CascadeConfig = field(default_factory=lambda: CascadeConfig(max_calls=2))
    seed: int = 0  # seeds the network, the sampling of actions, the environment and the statistics of (e)
    threads: int = 1  # torch CPU threads while training (such small networks run fastest on one)
    device: str = "cpu"  # torch device of the networks while training; deciding and export are CPU

    def __post_init__(self) -> None:
        for name in ("total_steps", "n_envs", "n_steps", "batch_size", "n_epochs", "eval_every", "eval_weights",
                     "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("total_steps", "warm_start_steps"):
            if getattr(self, name) % (self.n_envs * self.n_steps):
                raise ValueError(f"{name} ({getattr(self, name)}) must be a multiple of n_envs × n_steps "
                                 f"({self.n_envs * self.n_steps}): PPO trains in whole rollouts")
        if not 0 <= self.warm_start_steps < self.total_steps:
            raise ValueError(f"warm_start_steps must be in [0, total_steps), got {self.warm_start_steps}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"gamma and gae_lambda must be in [0, 1], got {self.gamma} and {self.gae_lambda}")
        if not self.weight_gain > 0:
            raise ValueError(f"weight_gain must be > 0, got {self.weight_gain}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must list at least one layer size >= 1, got {self.hidden}")


@dataclass(frozen=True)
class CascadeDecisions:
    """What the greedy cascade did on a batch of N queries at one cost weight."""

    calls: np.ndarray  # (N, max_calls) int64: the models called, in call order, −1 after the last
    called: np.ndarray  # (N, K) bool: the models called
    returned: np.ndarray  # (N,) int64: the model whose answer was returned

    @property
    def n_calls(self) -> np.ndarray:
        """(N,) calls made per query."""
        return self.called.sum(axis=1)


class StakesScale:
    """(b) s(w) = sqrt(mean over queries and models of min(u*(x, w) − u_k(x, w), 1)²), u_k = quality − w · cost.

    u* is the query's best one-call utility, so u* − u_k is what calling model k alone would lose
    against the best call; capped at one quality unit, a far too dear model (whose loss grows as
    w × its cost) does not swamp the scale, and the choices between the cheaper models keep
    their weight at every w. Tabulated once on :data:`STAKES_GRID` points evenly spaced in
    f(w) ∈ [0, 1] and interpolated (any positive function of w leaves the best policy unchanged).
    """

    def __init__(self, quality: np.ndarray, cost: np.ndarray, preference: PreferenceConfig) -> None:
        self.preference = preference
        self.grid = np.linspace(0.0, 1.0, STAKES_GRID)
        weights = preference.low * np.expm1(self.grid * np.log1p(preference.high / preference.low))  # f⁻¹
        values = []
        for weight in weights.tolist():
            utility = quality - weight * cost
            shortfall = np.minimum(utility.max(axis=1, keepdims=True) - utility, 1.0)
            values.append(np.sqrt(np.mean(shortfall**2)))
        self.values = np.maximum(np.array(values), 1e-6)

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """s(w) at each weight (weights above ``high`` take s(high))."""
        encoded = self.preference.encode(np.minimum(weights, self.preference.high)).astype(np.float64)
        return np.interp(encoded, self.grid, self.values)


class CascadeShaping(VecEnvWrapper):
    """(a), (b) on the final rewards and (e) on the observations of a :class:`CascadeVecEnv` (module docstring)."""

    def __init__(self, venv: CascadeVecEnv, baseline: bool, scale: Callable[[np.ndarray], np.ndarray] | None,
                 mean: np.ndarray, spread: np.ndarray) -> None:
        """``scale``: s(w) of (b), None for none; observations become (o − ``mean``) / ``spread``."""
        super().__init__(venv)
        self.cascade = venv
        self.baseline, self.scale = baseline, scale
        self.mean, self.spread = mean.astype(np.float32), spread.astype(np.float32)

    def reset(self) -> VecEnvObs:
        """The wrapped env's first observations, standardised."""
        observations = self.venv.reset()
        assert isinstance(observations, np.ndarray)  # a Box observation space
        return (observations - self.mean) / self.spread

    def step_wait(self) -> VecEnvStepReturn:
        """The wrapped env's step: final rewards shaped, observations standardised."""
        observations, reward, dones, infos = self.venv.step_wait()
        assert isinstance(observations, np.ndarray)
        env, shaped = self.cascade, reward.astype(np.float64)
        finished = env.last_finished
        rows, weights = env.last_rows[finished], env.last_cost_weight[finished]
        if self.baseline:
            utility = env.task.quality[rows] - weights[:, None] * env.task.cost[rows]
            shaped[finished] -= utility.mean(axis=1)
        if self.scale is not None:
            shaped[finished] /= self.scale(weights)
        return (observations - self.mean) / self.spread, shaped.astype(np.float32), dones, infos


class _KeepBest(BaseCallback):
    """(c): score the greedy policy every ``eval_every`` steps, keep the best parameters (and the call limit they
    were scored with), stop a phase after ``patience`` evaluations without progress in it."""

    def __init__(self, agent: CascadePPO, validation: CascadeData) -> None:
        super().__init__()
        self.agent, self.validation = agent, validation
        self.every, self.patience = agent.config.eval_every, agent.config.patience
        self.next_evaluation = self.every
        self.progress_step = 0  # the step of the last improvement, or of the phase's start
        self.best: tuple[float, int, dict[str, torch.Tensor], int] | None = None  # score, step, parameters, limit

    def _evaluate(self) -> bool:
        """Score the current parameters; True when they are the best so far (and kept)."""
        score, step = self.agent.validation_score(self.validation), self.num_timesteps
        self.agent.history.append((step, score))
        if self.best is None or score > self.best[0]:
            self.best = (score, step, self.agent.policy_state(), self.agent.max_calls)
            self.progress_step = step
            return True
        return False

    def _on_training_start(self) -> None:
        self.progress_step = self.num_timesteps

    def _on_step(self) -> bool:
        if self.num_timesteps < self.next_evaluation:
            return True
        self.next_evaluation += self.every
        if self._evaluate() or not self.patience:
            return True
        if self.num_timesteps - self.progress_step < self.patience * self.every:
            return True
        self.agent.stopped_early = True
        return False

    def _on_training_end(self) -> None:
        """Score the phase's last parameters if they are new; restore the best (a next phase starts from them)."""
        history = self.agent.history
        if not self.agent.stopped_early and (not history or history[-1][0] != self.num_timesteps):
            self._evaluate()
        assert self.best is not None and self.agent.model is not None
        _, self.agent.best_step, parameters, self.agent.max_calls = self.best
        self.agent.model.policy.load_state_dict(parameters)


class CascadePPO:
    """The learned cascade: train on :class:`CascadeData`, decide greedily, export the actor (module docstring)."""

    name = "cascade_ppo"

    def __init__(self, config: CascadePPOConfig | None = None) -> None:
        self.config = config or CascadePPOConfig()
        self.model: MaskablePPO | None = None
        self.preference: PreferenceConfig | None = self.config.preference  # resolved by train() when None
        self.mean = np.zeros(0)  # (e) observation statistics, set by train()
        self.scale = np.ones(0)
        self.mean_cost = np.zeros(0)  # USD per model on the training split: the head's costs
        self.query_dimension = 0  # d: the query features' columns
        self.max_calls = 0  # calls per query at most (the configured limit, at most K), set by train()
        self.history: list[tuple[int, float]] = []  # (c): (step, validation score) of every evaluation
        self.best_step: int | None = None  # the step of the parameters kept (None without validation)
        self.stopped_early = False
        self.steps_done = 0

    @property
    def cost_weight_range(self) -> list[float]:
        """[0, high]: the weights trained on; the head clamps others into it."""
        return [0.0, float(self._preference().high)]

    def _preference(self) -> PreferenceConfig:
        if self.preference is None:
            raise RuntimeError("CascadePPO's cost-weight range comes from its training data: call train() first")
        return self.preference

    def task(self, data: CascadeData) -> CascadeTask:
        """The preference-conditioned cascade task of ``data``, with the agent's limit of calls."""
        if self.max_calls < 1:
            raise RuntimeError("CascadePPO decides after training: call train() first")
        limit = CascadeConfig(max_calls=self.max_calls, invalid_penalty=self.config.cascade.invalid_penalty)
        return data.task(RewardConfig(preference=self._preference()), limit)

    def _standardisation(self, task: CascadeTask) -> tuple[np.ndarray, np.ndarray]:
        """(e): mean and standard deviation of the observations a uniformly random masked policy visits."""
        env = CascadeVecEnv(task, self.config.n_envs, seed=self.config.seed)
        rng = np.random.default_rng(self.config.seed)
        observations = [np.asarray(env.reset())]
        while sum(len(batch) for batch in observations) < STANDARDISATION_SAMPLES:
            keys = np.where(env.action_masks(), rng.random((env.num_envs, 2 * task.n_models)), -1.0)
            observations.append(np.asarray(env.step(keys.argmax(axis=1))[0]))
        sample = np.concatenate(observations).astype(np.float64)
        mean, spread = sample.mean(axis=0), sample.std(axis=0)
        constant = spread < 1e-6  # e.g. the bias feature: left as it is
        spread = np.where(constant, 1.0, spread)
        spread[-1] /= self.config.weight_gain  # f(w) is last
        return np.where(constant, 0.0, mean), spread

    def _scale(self, task: CascadeTask) -> Callable[[np.ndarray], np.ndarray] | None:
        """(b)'s s(w) on the training queries, or None."""
        if not self.config.normalise_rewards:
            return None
        if self.config.reward_scale == "spread":
            return RewardScale(task.quality, task.cost)
        return StakesScale(task.quality, task.cost, self._preference())

    def _new_model(self, env: CascadeShaping) -> MaskablePPO:
        config = self.config
        policy_kwargs = actor_critic_kwargs(tuple(config.hidden), config.activation, config.weight_decay)
        model = MaskablePPO("MlpPolicy", env, learning_rate=config.learning_rate, n_steps=config.n_steps,
                            batch_size=config.batch_size, n_epochs=config.n_epochs, gamma=config.gamma,
                            gae_lambda=config.gae_lambda, clip_range=config.clip_range, ent_coef=config.ent_coef,
                            vf_coef=config.vf_coef, max_grad_norm=config.max_grad_norm, policy_kwargs=policy_kwargs,
                            seed=config.seed, device=config.device, verbose=0)
        if config.stop_prior:
            k = env.cascade.task.n_models
            action_net = model.policy.action_net
            assert isinstance(action_net, torch.nn.Linear)
            with torch.no_grad():
                action_net.bias[k:] += float(np.log(max(k - 1, 1)))
        return model

    def train(self, train: CascadeData, validation: CascadeData | None = None) -> CascadePPO:
        """Train on ``train`` for ``total_steps`` (one call per query for the first ``warm_start_steps``, (g)),
        or until early stopping on ``validation`` (c), which also picks the parameters kept; without
        validation the last parameters are kept."""
        config, log = self.config, train.log
        self.query_dimension, self.mean_cost = train.features.shape[1], log.cost.mean(axis=0)
        if self.preference is None:
            means = log.quality.mean(axis=0), log.cost.mean(axis=0)
            self.preference = PreferenceConfig.spanning(*means, zero_share=DERIVED_ZERO_SHARE)
        self.max_calls = min(config.cascade.max_calls or log.n_models, log.n_models)
        full = self.task(train)
        if config.standardise_observations:
            self.mean, self.scale = self._standardisation(full)
        else:
            self.mean, self.scale = np.zeros(full.dimension), np.ones(full.dimension)
        scale = self._scale(full)
        phases = [(1, config.warm_start_steps)] if config.warm_start_steps else []
        phases.append((self.max_calls, config.total_steps - config.warm_start_steps))
        callback = None if validation is None else _KeepBest(self, validation)
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            for phase, (limit, steps) in enumerate(phases):
                self.max_calls = limit
                env = CascadeShaping(CascadeVecEnv(self.task(train), config.n_envs, seed=config.seed + phase),
                                     config.per_query_baseline, scale, self.mean, self.scale)
                if self.model is None:
                    self.model = self._new_model(env)
                else:
                    self.model.set_env(env)
                self.stopped_early = False
                self.model.learn(steps, callback=callback, reset_num_timesteps=False)
        finally:
            torch.set_num_threads(threads)
        assert self.model is not None
        self.steps_done = self.model.num_timesteps
        return self

    def policy_state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the current actor-critic parameters."""
        if self.model is None:
            raise RuntimeError("CascadePPO has no parameters yet: call train() first")
        return {key: value.detach().to("cpu", copy=True) for key, value in self.model.policy.state_dict().items()}

    def exported(self) -> tuple[np.ndarray, MlpLogitHead]:
        """(linear map (D − 1, hidden), head): the actor with (e) folded in (module docstring).

        The linear map's first d rows multiply the query features, the others the cascade's state
        (called, responses, agreement: docs/contracts.md §7.3); f(w) is the head's.
        """
        return fold_actor(self.policy_state(), len(self.config.hidden), self.config.activation, self.mean,
                          self.scale, self._preference(), self.mean_cost)

    def decide(self, data: CascadeData, cost_weight: float) -> CascadeDecisions:
        """The greedy masked cascade on every query of ``data`` at ``cost_weight`` (module docstring)."""
        task, (linear_map, head) = self.task(data), self.exported()
        n, k, d = data.log.n_queries, data.log.n_models, self.query_dimension
        layout = task.layout()
        state = slice(layout.called.start, layout.agreement.stop)
        query = np.asarray(data.features, dtype=np.float64) @ linear_map[:d]
        weights = np.full(n, float(cost_weight))
        calls = np.full((n, task.max_calls), -1, dtype=np.int64)
        called, returned = np.zeros((n, k), dtype=bool), np.full(n, -1, dtype=np.int64)
        active = np.arange(n)
        for step in range(task.max_calls + 1):
            if not len(active):
                break
            observed = task.observe(active, weights[active], called[active])[:, state].astype(np.float64)
            with torch.no_grad():
                logits = head(torch.from_numpy(query[active] + observed @ linear_map[d:]), float(cost_weight)).numpy()
            action = np.where(task.valid_actions(called[active]), logits, -np.inf).argmax(axis=1)
            calling = action < k
            called[active[calling], action[calling]] = True
            if step < task.max_calls:
                calls[active[calling], step] = action[calling]
            returned[active[~calling]] = action[~calling] - k
            active = active[calling]
        return CascadeDecisions(calls, called, returned)

    def validation_score(self, validation: CascadeData) -> float:
        """(c): the mean over the sweep of the gap between one random call and the oracle that is closed."""
        preference, log = self._preference(), validation.log
        weights = np.concatenate([[0.0], np.geomspace(preference.low, preference.high, self.config.eval_weights)])
        rows, shares = np.arange(log.n_queries), []
        for weight in weights.tolist():
            decisions = self.decide(validation, weight)
            utility = log.quality - weight * log.cost
            cascade = log.quality[rows, decisions.returned] - weight * cascade_cost(log.cost, decisions.called)
            random, oracle = utility.mean(), utility.max(axis=1).mean()
            shares.append((cascade.mean() - random) / max(oracle - random, 1e-12))
        return float(np.mean(shares))
