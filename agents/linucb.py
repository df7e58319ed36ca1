"""LinUCB with disjoint arms and separate quality and cost models.

Li, Chu, Langford & Schapire (2010), "A contextual-bandit approach to personalized news article
recommendation", Algorithm 1. Per arm k, ridge statistics over the contexts x where k was observed:

    A_k = λ I + Σ x xᵀ,    b_k^q = Σ x · quality,    b_k^c = Σ x · cost
    θ_k^q = A_k⁻¹ b_k^q,   θ_k^c = A_k⁻¹ b_k^c

Quality and cost are estimated separately, so one fitted model serves every cost weight w:

    greedy utility   u_k(x) = xᵀθ_k^q − w · xᵀθ_k^c
    UCB (learning)   u_k(x) + α · sqrt(xᵀ A_k⁻¹ x)

Two ways to learn, both exact ridge regression:

* :meth:`fit` / :meth:`partial_fit` from logged outcomes. On a full-information log every arm
  observes every query, so all arms share one Gram matrix XᵀX and one solve with 2K right-hand
  sides gives every θ (one pass over the data).
* :meth:`learn` by interacting with a :class:`~envs.routing_env.RoutingEnv`: at each step only the
  chosen arm's outcome is observed; A_k⁻¹ is kept up to date with the Sherman–Morrison formula.

:meth:`train` (the entry point of every agent, :mod:`agents.base`) does one or the other, as the
task's ``learning`` says; online, it calls the callbacks of :mod:`agents.callbacks` at every step,
and a checkpoint's :meth:`state_dict` (statistics, steps, the environment's generator and the
budget's multiplier) lets a resumed run continue exactly where it stopped.

The exported policy needs only the greedy decision, so :meth:`linear_map` hands over the
(d, 2K) matrix [θ^q | θ^c]; the d × d matrices stay here.

**Token mode** (a task with ``prices``, docs/contracts.md §2.10). The same Gram matrices also
regress each arm's prompt and completion tokens, b_k^t = Σ x · tokens (t = in, out), and the
export is [θ^q | θ^in | θ^out] (d, 3K) with a head that prices them,
cost_k = (p_in,k xᵀθ_k^in + p_out,k xᵀθ_k^out) / 1e6. Ridge regression is linear in its target and
the training cost is (p_in · in + p_out · out) / 1e6 cell by cell, so at the training prices this is
xᵀθ_k^c exactly (up to rounding); other prices reprice the policy without retraining.

**Objectives beside USD** (issue 22, docs/contracts.md §2.13). Where every outcome of a full-information
training split has a latency or an energy (:meth:`data.routing_log.RoutingLog.objective_table`), the
same Gram matrices regress each, b_k^j = Σ x · cost_j, and :meth:`objective_map` hands over
θ_k^j = A_k⁻¹ b_k^j: one estimate per objective, so the exported policy scores
xᵀθ_k^q − w · xᵀθ_k^c − Σ_j w_j · xᵀθ_k^j at any weight vector it is given at inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass
from tqdm import trange

from agents.base import Agent, FeaturizedSplit, ObjectiveEstimates, State, TrainingTask, ValidationRule
from agents.callbacks import Callback, CallbackList, Outcomes
from agents.linucb_statistics import LinUCBStatistics
from data.schema import DataError
from envs.routing_env import RoutingEnv
from policies.heads import TokenUtilityHead, UtilityHead

#: The arrays of the ridge statistics: what decides, and what keep-best stores.
PARAMETERS = ("gram", "gram_inverse", "target_quality", "target_cost", "observations")
#: Rows of features widened to float64 at a time for the token targets (:func:`_cross`).
_CHUNK_ROWS = 8192


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class LinUCBConfig:
    """Hyperparameters of LinUCB."""

    alpha: float = 1.0  # width of the confidence bonus α · sqrt(xᵀA⁻¹x) used while learning online
    ridge: float = 1.0  # λ: ridge regularisation, A = λI + XᵀX


class LinUCB(Agent):
    """Disjoint LinUCB with a ``fit`` / ``partial_fit`` / ``learn`` / ``predict`` face."""

    name = "linucb"
    score_kind = "utility"
    token_mode = ("fit", "online")

    def __init__(
        self, n_models: int, dimension: int, config: LinUCBConfig | None = None, cost_weight: float = 0.0
    ) -> None:
        super().__init__(n_models, dimension, cost_weight)
        self.config = config or LinUCBConfig()
        if self.config.ridge <= 0:
            raise ValueError(f"ridge must be > 0, got {self.config.ridge}")
        self.env: RoutingEnv | None = None  # the environment of online learning, once it has started
        self._restored_env: dict[str, Any] | None = None  # a checkpoint's generator and multiplier
        self.token_prices: np.ndarray | None = None  # (K, 2) USD per 1M tokens in token mode (train sets it)
        self._tokens: np.ndarray | None = None  # (N, K, 2) the training split's token counts, learning online
        self.target_tokens: np.ndarray | None = None  # (K, d, 2) Σ x · (prompt, completion) tokens in token mode
        self.objective_names: tuple[str, ...] = ()  # the costs beside USD it estimates (train sets them)
        self._objective_values: np.ndarray | None = None  # (N, K, J) the training split's, learning online
        self.target_objectives: np.ndarray | None = None  # (K, d, J) Σ x · cost_j of each objective j
        self._reset()

    def _reset(self, solve: bool = True) -> None:
        d, k = self.dimension, self.n_models
        self.gram = np.repeat(np.eye(d)[None] * self.config.ridge, k, axis=0)  # A_k, (K, d, d)
        self.target_quality = np.zeros((k, d))  # b_k^q
        self.target_cost = np.zeros((k, d))  # b_k^c
        self.observations = np.zeros(k, dtype=np.int64)
        self.target_tokens = None  # b_k^in, b_k^out: only train() of a token-mode task fills them
        self.target_objectives = None  # b_k^j: only train() on a split with latency or energy fills them
        if solve:
            self._solve()

    def _solve(self) -> None:
        """θ = A⁻¹ b for every arm: one LU solve per distinct Gram matrix, with all targets at once.

        On a full-information log all K Gram matrices are equal: one d × d solve with the 2K
        right-hand sides [b^q | b^c] gives every θ. A⁻¹ itself is needed only for the UCB bonus
        (learning online), so it is not formed here but on first use (:attr:`gram_inverse`): an
        inverse costs about twice a solve, and ``fit`` should cost no more than the ridge solution.
        """
        self._gram_inverse: np.ndarray | None = None
        k = self.n_models
        if self._shared_gram():
            theta = np.linalg.solve(self.gram[0], np.concatenate([self.target_quality, self.target_cost]).T)
            self.theta_quality, self.theta_cost = theta[:, :k].T.copy(), theta[:, k:].T.copy()
        else:
            theta = np.linalg.solve(self.gram, np.stack([self.target_quality, self.target_cost], axis=2))
            self.theta_quality, self.theta_cost = theta[:, :, 0].copy(), theta[:, :, 1].copy()

    def _shared_gram(self) -> bool:
        """Whether all K Gram matrices are equal (every full-information fit): then one factorisation serves all."""
        return len(self.gram) > 1 and bool((self.gram == self.gram[0]).all())

    @property
    def gram_inverse(self) -> np.ndarray:
        """A_k⁻¹ (K, d, d) for the UCB bonus, formed from the Gram matrices on first use after a solve."""
        if self._gram_inverse is None:
            if self._shared_gram():
                self._gram_inverse = np.repeat(np.linalg.inv(self.gram[0])[None], self.n_models, axis=0)
            else:
                self._gram_inverse = np.linalg.inv(self.gram)
        return self._gram_inverse

    @gram_inverse.setter
    def gram_inverse(self, value: np.ndarray) -> None:
        self._gram_inverse = value

    def fit(self, features: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> LinUCB:
        """Learn from scratch from a full-information log: (N, d) features, (N, K) outcomes."""
        self._reset(solve=False)  # partial_fit solves (once, for the shared Gram matrix)
        self.steps_done = 0
        try:
            return self.partial_fit(features, quality, cost)
        except ValueError:
            self._solve()  # bad input: leave the freshly reset state consistent, as before
            raise

    def partial_fit(
        self, features: np.ndarray, quality: np.ndarray, cost: np.ndarray, actions: np.ndarray | None = None
    ) -> LinUCB:
        """Add outcomes to the sufficient statistics and re-solve.

        Full information: ``quality`` and ``cost`` are (N, K) with every cell known. Bandit
        feedback: pass ``actions`` (N,) and the logged ``quality`` and ``cost`` as (N,) arrays.
        Features may be float32 (they are widened to float64 chunk by chunk, see :func:`_moments`).
        """
        x = np.asarray(features)
        if x.ndim != 2 or x.shape[1] != self.dimension:
            raise ValueError(f"features must be (N, {self.dimension}), got {x.shape}")
        if actions is None and (np.shape(quality) != (len(x), self.n_models) or np.shape(cost) != np.shape(quality)):
            raise ValueError(f"full-information outcomes must be (N, {self.n_models})")
        statistics = LinUCBStatistics.of(x, quality, cost, actions, n_models=self.n_models)
        self.target_tokens = None  # statistics without tokens: no longer in token mode
        self.target_objectives = None  # nor with the other objectives
        self.gram += statistics.gram
        self.target_quality += statistics.target_quality
        self.target_cost += statistics.target_cost
        self.observations += statistics.observations
        self.steps_done += int(statistics.rows)
        self._solve()
        return self

    def scores(self, features: np.ndarray, cost_weight: float | np.ndarray) -> np.ndarray:
        """Greedy utility per arm, (N, K): estimated quality − w × estimated cost."""
        x = np.asarray(features, dtype=np.float64)
        weight = np.asarray(cost_weight, dtype=np.float64)
        if weight.ndim == 1:
            weight = weight[:, None]
        return x @ self.theta_quality.T - weight * (x @ self.theta_cost.T)

    def upper_confidence(self, features: np.ndarray, cost_weight: float) -> np.ndarray:
        """UCB scores, (N, K): greedy utility plus α · sqrt(xᵀ A_k⁻¹ x)."""
        x = np.asarray(features, dtype=np.float64)
        width = np.sqrt(np.maximum(np.einsum("nd,kde,ne->nk", x, self.gram_inverse, x), 0.0))
        return self.scores(x, cost_weight) + self.config.alpha * width

    def train(self, task: TrainingTask, callbacks: Sequence[Callback] = ()) -> LinUCB:
        """``fit`` on the training split, or ``learn`` online in a :class:`RoutingEnv` over it.

        Online, the environment serves the split's outcome table (on bandit feedback, the table
        estimated from it: :meth:`~agents.base.FeaturizedSplit.outcome_table`) and rewards by
        ``task.reward`` for ``task.online_steps`` episodes in all; a learner restored by
        :meth:`load_state_dict` plays only the remaining ones, from the saved generator and budget
        multiplier, so its run continues exactly the uninterrupted one.
        """
        train = task.train
        tokens = self._use_prices(task)
        objectives = self._use_objectives(task)
        if task.learning == "fit":
            if task.reward.budget is not None:
                raise DataError("a budget reward needs agent.learning=online (the multiplier is learned online)")
            self.fit(train.features, train.log.quality, train.log.cost)
            if tokens is not None:
                self.target_tokens = _cross(np.asarray(train.features), tokens)
            if objectives is not None:
                self.target_objectives = _cross(np.asarray(train.features), objectives)
            return self._price_cost()
        self._tokens, self._objective_values = tokens, objectives
        env = RoutingEnv(train.outcome_table(), train.features, task.reward)
        seed: int | None = task.seed
        if self._restored_env is not None:
            env.reset(seed=task.seed)  # builds the task; then the saved generator and multiplier replace it
            generator = np.random.default_rng()
            generator.bit_generator.state = self._restored_env["generator"]
            env.np_random = generator
            if self._restored_env["multiplier"] is not None and env.task.multiplier is not None:
                env.task.multiplier.load_state_dict(self._restored_env["multiplier"])
            seed, self._restored_env = None, None
        remaining = 0 if self.stopped_early else max(task.online_steps - self.steps_done, 0)
        self.learn(env, remaining, seed=seed, callbacks=callbacks, progress=task.progress)
        return self._price_cost()

    def _use_prices(self, task: TrainingTask) -> np.ndarray | None:
        """Enter token mode when ``task`` has prices: the training split's (N, K, 2) token counts, else None."""
        if task.prices is None:
            return None
        tokens = task.token_counts()
        self.token_prices = np.asarray(task.prices, dtype=np.float64)
        if self.target_tokens is None and task.learning == "online":  # else restored from a checkpoint
            self.target_tokens = np.zeros((self.n_models, self.dimension, 2))
        return tokens

    def _use_objectives(self, task: TrainingTask) -> np.ndarray | None:
        """The training split's (N, K, J) costs beside USD (:meth:`RoutingLog.objective_table`), else None.

        Online, the statistics start at zero unless a checkpoint restored them for the same objectives.
        """
        table = task.train.log.objective_table()
        if not table:
            self.objective_names = ()
            return None
        names = tuple(table)
        if task.learning == "online" and (self.target_objectives is None or names != self.objective_names):
            self.target_objectives = np.zeros((self.n_models, self.dimension, len(names)))
        self.objective_names = names
        return np.stack([table[name] for name in names], axis=2)

    def _price_cost(self) -> LinUCB:
        """In token mode, decide on the estimated tokens priced at the training prices, as the export does.

        θ_k^c = (p_in,k θ_k^in + p_out,k θ_k^out) / 1e6: where the log's cost is its priced tokens,
        this is the USD estimate up to rounding (ridge is linear in its target); where a row gave
        another cost, the evaluated agent still decides exactly as its exported policy.
        """
        if self.cost_mode == "tokens":
            assert self.token_prices is not None
            tokens = self.theta_tokens()
            prices = self.token_prices[:, None, :]
            self.theta_cost = (tokens * prices).sum(axis=2) / 1e6
        return self

    def learn(
        self,
        env: RoutingEnv,
        steps: int,
        seed: int | None = 0,
        callbacks: Sequence[Callback] = (),
        progress: bool = False,
    ) -> LinUCB:
        """Interact with ``env`` for ``steps`` episodes, observing only the chosen arm.

        Each step picks the UCB argmax at the env's current ``cost_weight`` (the budget's current
        multiplier λ, or the weight drawn for the episode), from the first ``dimension`` entries of
        the observation (a preference-conditioned one appends the weight feature), then updates
        that arm's A⁻¹ by Sherman–Morrison: (A + xxᵀ)⁻¹ = A⁻¹ − A⁻¹x xᵀA⁻¹ / (1 + xᵀA⁻¹x). The
        regression targets are ``info["quality"]`` and ``info["cost"]`` of the chosen arm (exact
        with full feedback, the env's dm / ips / dr estimates otherwise). The callbacks see every
        episode (``on_step``, then ``on_rollout_end``: the state is whole after each update),
        before the next query is drawn; ``seed=None`` continues the env's generator (and the
        exploration's, :meth:`_seed_exploration`).
        """
        hooks = CallbackList(callbacks)
        self.env = env
        observation, _ = env.reset(seed=seed)
        self._seed_exploration(seed)
        if observation.shape[0] < self.dimension:
            raise ValueError(f"observation has {observation.shape[0]} entries, LinUCB needs {self.dimension}")
        hooks.on_training_start(self)
        first = self.steps_done
        for step in trange(first + 1, first + steps + 1, desc="linucb learn", disable=not progress):
            reward, info = self._step(env, observation[: self.dimension].astype(np.float64))
            self.steps_done = step
            outcomes = Outcomes(np.array([reward]), np.array([info["quality"]]), np.array([info["cost"]]),
                                np.array([info["regret"]]))
            if not hooks.on_step(step, outcomes):
                self.stopped_early = True
                break
            hooks.on_rollout_end(step, {})
            observation, _ = env.reset()
        hooks.on_training_end(self)
        return self

    def _seed_exploration(self, seed: int | None) -> None:
        """Seed the exploration's own randomness (``None``: continue it); LinUCB's bonus has none."""

    def _step(self, env: RoutingEnv, x: np.ndarray) -> tuple[float, dict[str, Any]]:
        """Play the UCB argmax for context ``x`` and add its outcome to that arm's statistics."""
        arm = int(np.argmax(self.upper_confidence(x[None], env.cost_weight)[0]))
        _, reward, _, _, info = env.step(arm)
        inverse_x = self.gram_inverse[arm] @ x
        self.gram_inverse[arm] -= np.outer(inverse_x, inverse_x) / (1.0 + x @ inverse_x)
        self.gram[arm] += np.outer(x, x)
        self.target_quality[arm] += info["quality"] * x
        self.target_cost[arm] += info["cost"] * x
        if self.target_tokens is not None and self._tokens is not None:
            self.target_tokens[arm] += np.outer(x, self._tokens[info["query_index"], arm])
        if self.target_objectives is not None and self._objective_values is not None:
            self.target_objectives[arm] += np.outer(x, self._objective_values[info["query_index"], arm])
        self.theta_quality[arm] = self.gram_inverse[arm] @ self.target_quality[arm]
        self.theta_cost[arm] = self.gram_inverse[arm] @ self.target_cost[arm]
        self.observations[arm] += 1
        return reward, info

    @property
    def learned_cost_weight(self) -> float | None:
        """The environment's default weight after online learning (λ̄ under a budget); None after ``fit``."""
        return None if self.env is None else self.env.default_cost_weight

    def validation_rule(self, validation: FeaturizedSplit | None) -> ValidationRule:
        """The mean validation reward of the greedy policy at the default weight, at every checkpoint."""
        if validation is None:
            return ValidationRule()
        rows = np.arange(validation.log.n_queries)

        def reward() -> float:
            learned = self.learned_cost_weight
            weight = self.cost_weight if learned is None else learned
            actions = self.predict(validation.features, weight)
            return float(validation.log.reward(weight)[rows, actions].mean())

        return ValidationRule(reward)

    def parameters(self) -> State:
        """A copy of the ridge statistics (with the token targets in token mode); θ is re-derived on load."""
        parameters = {name: getattr(self, name).copy() for name in PARAMETERS}
        if self.target_tokens is not None:
            parameters["target_tokens"] = self.target_tokens.copy()
        if self.target_objectives is not None:
            parameters["target_objectives"] = self.target_objectives.copy()
            parameters["objective_names"] = list(self.objective_names)
        return parameters

    def load_parameters(self, parameters: State) -> None:
        """Restore :meth:`parameters`; other shapes than this agent's (models, features) are a :class:`DataError`."""
        if parameters["gram"].shape != self.gram.shape:
            raise DataError(f"the checkpoint has Gram matrices of shape {parameters['gram'].shape} "
                            f"(models, features, features), this run {self.gram.shape}")
        self.gram = np.array(parameters["gram"], dtype=np.float64)
        self.target_quality = np.array(parameters["target_quality"], dtype=np.float64)
        self.target_cost = np.array(parameters["target_cost"], dtype=np.float64)
        self.observations = np.array(parameters["observations"], dtype=np.int64)
        tokens = parameters.get("target_tokens")
        self.target_tokens = None if tokens is None else np.array(tokens, dtype=np.float64)
        objectives = parameters.get("target_objectives")
        self.target_objectives = None if objectives is None else np.array(objectives, dtype=np.float64)
        self.objective_names = tuple(parameters.get("objective_names", ()))
        self.gram_inverse = np.array(parameters["gram_inverse"], dtype=np.float64)
        self.theta_quality = np.einsum("kij,kj->ki", self.gram_inverse, self.target_quality)
        self.theta_cost = np.einsum("kij,kj->ki", self.gram_inverse, self.target_cost)

    def state_dict(self) -> State:
        """The statistics and θ, the steps learned, and the environment's generator and multiplier."""
        env = self.env
        multiplier = None if env is None or env.task.multiplier is None else env.task.multiplier.state_dict()
        return {
            "parameters": self.parameters(),
            "theta": {"quality": self.theta_quality.copy(), "cost": self.theta_cost.copy()},
            "steps_done": self.steps_done,
            "stopped_early": self.stopped_early,
            "env": None if env is None else {"generator": env.np_random.bit_generator.state, "multiplier": multiplier},
        }

    def load_state_dict(self, state: State) -> None:
        """Continue from :meth:`state_dict`: the next online :meth:`train` plays the remaining steps."""
        self.load_parameters(state["parameters"])
        # θ as it was, not re-derived: online learning updates it arm by arm, and a resumed run
        # must decide on exactly the same numbers as the uninterrupted one
        self.theta_quality = np.array(state["theta"]["quality"], dtype=np.float64)
        self.theta_cost = np.array(state["theta"]["cost"], dtype=np.float64)
        self.steps_done, self.stopped_early = int(state["steps_done"]), bool(state["stopped_early"])
        self._restored_env = state["env"]

    @property
    def cost_mode(self) -> str:
        """``"tokens"`` when the statistics regress tokens (a task with prices), else "usd"."""
        return "usd" if self.token_prices is None or self.target_tokens is None else "tokens"

    def theta_tokens(self) -> np.ndarray:
        """(K, d, 2) θ_k^in, θ_k^out = A_k⁻¹ b_k^t, solved as θ^c is (one factorisation when shared)."""
        if self.target_tokens is None:
            raise RuntimeError("LinUCB is not in token mode: train it on a task with prices")
        return self._solve_targets(self.target_tokens)

    def _solve_targets(self, targets: np.ndarray) -> np.ndarray:
        """(K, d, T) A_k⁻¹ b_k^t of the extra targets ``targets`` (K, d, T): one factorisation when shared."""
        if self._shared_gram():
            k, d, t = targets.shape
            stacked = targets.transpose(1, 0, 2).reshape(d, t * k)
            return np.linalg.solve(self.gram[0], stacked).reshape(d, k, t).transpose(1, 0, 2)
        return np.einsum("kij,kjt->kit", self.gram_inverse, targets)

    def objective_map(self) -> ObjectiveEstimates | None:
        """θ^j of every objective beside USD, as (d, J·K) columns objective by objective; None: USD only."""
        if self.target_objectives is None or not self.objective_names:
            return None
        theta = self._solve_targets(self.target_objectives)  # (K, d, J)
        return ObjectiveEstimates(self.objective_names, np.hstack([theta[:, :, j].T for j in range(theta.shape[2])]))

    def linear_map(self) -> np.ndarray:
        """[θ^q | θ^c] (d, 2K) for the utility head; in token mode [θ^q | θ^in | θ^out] (d, 3K)."""
        if self.cost_mode == "tokens":
            tokens = self.theta_tokens()
            return np.hstack([self.theta_quality.T, tokens[:, :, 0].T, tokens[:, :, 1].T])
        return np.hstack([self.theta_quality.T, self.theta_cost.T])

    def head(self) -> torch.nn.Module:
        """Estimated quality − w × estimated cost; in token mode the cost priced from estimated tokens."""
        if self.cost_mode == "tokens":
            assert self.token_prices is not None
            return TokenUtilityHead(torch.from_numpy(self.token_prices))
        return UtilityHead(self.n_models)


def _cross(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(K, d, T) Σ_rows x · targets of each arm, from ``targets`` (N, K, T): Xᵀ Y in float64, ``_CHUNK_ROWS`` rows
    widened at a time."""
    n, k, t = targets.shape
    flat = targets.reshape(n, k * t)
    total = np.zeros((features.shape[1], k * t))
    for start in range(0, n, _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        total += np.asarray(features[rows], dtype=np.float64).T @ flat[rows]
    return total.reshape(-1, k, t).transpose(1, 0, 2)


def linucb_from_statistics(
    statistics: LinUCBStatistics, config: LinUCBConfig | None = None, cost_weight: float = 0.0
) -> LinUCB:
    """A LinUCB agent solved from summed statistics: A_k = λI + Σ x xᵀ, θ = A⁻¹ b (as :meth:`LinUCB.fit`).

    Its ``steps_done`` is the rows the statistics sum over, as after :meth:`LinUCB.fit` on them.
    """
    n_models, dimension = statistics.target_quality.shape
    agent = LinUCB(n_models, dimension, config, cost_weight)
    agent.gram = agent.gram + statistics.gram  # λI + Σ x xᵀ
    agent.target_quality = statistics.target_quality.copy()
    agent.target_cost = statistics.target_cost.copy()
    agent.observations = statistics.observations.copy()
    agent.steps_done = int(statistics.rows)
    agent._solve()
    return agent
