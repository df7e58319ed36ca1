"""Counterfactual estimators for bandit-feedback logs, written once for training and evaluation.

A bandit-feedback log holds, per round i, the context x_i, the logged action A_i drawn by the
logging policy μ with known propensity p_i = μ(A_i | x_i), and the logged outcome y_i of that
action only. Two things are built from it:

* :class:`RewardModel`: per-arm ridge regression of the logged outcomes (quality, cost, latency)
  on the features, the m̂(x, a) of the direct method.
* Off-policy value estimators of a target policy π (deterministic: one action per round, or
  stochastic: probabilities (N, K)): :class:`DirectMethod`, :class:`InverseProbabilityWeighting`,
  :class:`SelfNormalizedIPW`, :class:`DoublyRobust` and :class:`Replay`. Each gives
  ``estimate_round_rewards`` (N,), per-round values whose mean is the estimate, so that
  evaluation can put normal or bootstrap confidence intervals around it.

:func:`estimators` is the one registry of them by short name (``dm``, ``ips``, ``snips``, ``dr``,
``replay``): the names ``EnvConfig.feedback`` and the reports use. :func:`counterfactual_log` is
the one path from a bandit-feedback log and m̂ to a full table of estimated outcomes, for the
estimators that are linear per round (``dm``, ``ips``, ``dr``): cell (i, a) is the round value of
the policy "always choose arm a". The environment's counterfactual rewards, training on a bandit
log and the evaluation of a policy on one all use it.

Only numpy, pydantic and ``data.routing_log`` are imported: no gym.

References: Dudík, Langford & Li (2011), "Doubly robust policy evaluation and learning", ICML;
Li, Chu, Langford & Wang (2011), "Unbiased offline evaluation of contextual-bandit-based news
article recommendation algorithms", WSDM; Swaminathan & Joachims (2015), "The self-normalized
estimator for counterfactual learning", NeurIPS; Horvitz & Thompson (1952).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from data.routing_log import RoutingLog

STRICT = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- reward model


@pydantic_dataclass(frozen=True, config=STRICT)
class RewardModelConfig:
    """Hyperparameters of the direct-method reward model."""

    ridge: float = 1.0  # λ of the per-arm ridge regression, θ_a = (λI + X_aᵀX_a)⁻¹ X_aᵀ y_a

    def __post_init__(self) -> None:
        if not self.ridge > 0:
            raise ValueError(f"ridge must be > 0, got {self.ridge}")


@dataclass(frozen=True)
class PredictedOutcomes:
    """m̂(x, a) for every row and arm: (N, K) each; ``latency_ms`` only if it was fitted."""

    quality: np.ndarray
    cost: np.ndarray
    latency_ms: np.ndarray | None

    def reward(self, cost_weight: float | np.ndarray, latency_weight: float = 0.0) -> np.ndarray:
        """Predicted reward (N, K): quality − w·cost − latency_weight·latency_ms/1000."""
        weight = np.asarray(cost_weight, dtype=np.float64)
        if weight.ndim == 1:
            weight = weight[:, None]
        reward = self.quality - weight * self.cost
        if latency_weight:
            if self.latency_ms is None:
                raise ValueError("latency_weight > 0 but the reward model was fitted without latency_ms")
            reward = reward - latency_weight * self.latency_ms / 1000.0
        return reward


class RewardModel:
    """Per-arm ridge regression of the logged outcomes on the features (the DM's m̂).

    For arm a, over the rounds where a was logged (X_a, outcomes y_a):

        θ_a = (λI + X_aᵀX_a)⁻¹ X_aᵀ y_a,      m̂(x, a) = xᵀθ_a

    with one column of y per outcome (quality, cost and, when given, latency_ms), all solved
    at once. No intercept is added: give a constant feature (``data.featurizer`` ends with a
    bias feature). Predictions are clipped to the outcomes' ranges (quality to [0, 1], cost and
    latency to >= 0). An arm never logged predicts 0 (ridge with no data); its DM estimate is
    then pure prior, which is the direct method's bias (Dudík et al., 2011, §2).
    """

    def __init__(self, n_models: int, config: RewardModelConfig | None = None) -> None:
        if n_models < 1:
            raise ValueError(f"n_models must be >= 1, got {n_models}")
        self.n_models = n_models
        self.config = config or RewardModelConfig()
        self.theta: np.ndarray | None = None  # (K, d, M): arm × feature × outcome column
        self.columns: tuple[str, ...] = ()

    def fit(
        self,
        features: np.ndarray,
        actions: np.ndarray,
        quality: np.ndarray,
        cost: np.ndarray,
        latency_ms: np.ndarray | None = None,
    ) -> RewardModel:
        """Fit on logged rounds: features (N, d), actions (N,), logged outcomes (N,) each."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (N, d), got shape {x.shape}")
        actions = _check_actions(actions, len(x), self.n_models)
        columns = {"quality": quality, "cost": cost}
        if latency_ms is not None:
            columns["latency_ms"] = latency_ms
        targets = np.stack([_check_vector(value, len(x), name) for name, value in columns.items()], axis=1)
        d = x.shape[1]
        self.theta = np.zeros((self.n_models, d, targets.shape[1]))
        for arm in range(self.n_models):
            rows = actions == arm
            chosen = x[rows]
            gram = chosen.T @ chosen + self.config.ridge * np.eye(d)
            self.theta[arm] = np.linalg.solve(gram, chosen.T @ targets[rows])
        self.columns = tuple(columns)
        return self

    def fit_log(self, log: RoutingLog, features: np.ndarray) -> RewardModel:
        """Fit on a bandit-feedback log's logged outcomes (latency too when the log has it)."""
        if log.n_models != self.n_models:
            raise ValueError(f"log has {log.n_models} models, the reward model {self.n_models}")
        actions, _, quality, cost = logged_outcomes(log)
        latency = None if log.latency_ms is None else log.latency_ms[np.arange(log.n_queries), actions]
        return self.fit(features, actions, quality, cost, latency)

    def predict(self, features: np.ndarray) -> PredictedOutcomes:
        """m̂(x, a) for every row and arm, clipped to the outcomes' ranges."""
        if self.theta is None:
            raise ValueError("RewardModel.predict before fit")
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.theta.shape[1]:
            raise ValueError(f"features must be (N, {self.theta.shape[1]}), got shape {x.shape}")
        predicted = np.einsum("nd,kdm->mnk", x, self.theta)
        latency = np.maximum(predicted[2], 0.0) if "latency_ms" in self.columns else None
        return PredictedOutcomes(np.clip(predicted[0], 0.0, 1.0), np.maximum(predicted[1], 0.0), latency)


# --------------------------------------------------------------------------- checks


def logged_outcomes(log: RoutingLog) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(actions, propensities, quality, cost) of the logged rounds of a bandit-feedback log."""
    if log.feedback != "bandit" or log.action is None or log.propensity is None:
        raise ValueError(
            "needs a bandit-feedback log (logged action and propensity on every row); "
            f"this log has {log.feedback} feedback"
        )
    rows = np.arange(log.n_queries)
    return log.action, log.propensity, log.quality[rows, log.action], log.cost[rows, log.action]


def _check_vector(values: np.ndarray, n: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"{name} must be ({n},), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return array


def _check_actions(actions: np.ndarray, n: int, n_models: int | None, name: str = "actions") -> np.ndarray:
    array = np.asarray(actions)
    if array.shape != (n,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be ({n},) integers, got shape {array.shape} dtype {array.dtype}")
    upper = n_models if n_models is not None else np.iinfo(np.int64).max
    if n and (array.min() < 0 or array.max() >= upper):
        raise ValueError(f"{name} must be model indices in [0, {upper})")
    return array.astype(np.int64, copy=False)


@dataclass(frozen=True)
class LoggedRounds:
    """Checked inputs of an off-policy estimate.

    ``target_logged`` is π(A_i | x_i); ``target`` is π as (N, K) probabilities, or None when π is
    deterministic and no predictions fix K (the estimators that need K then get it from
    ``predictions``).
    """

    actions: np.ndarray  # (N,) int64, logged actions A_i
    rewards: np.ndarray  # (N,) float64, logged rewards y_i
    propensities: np.ndarray  # (N,) float64 in (0, 1], μ(A_i | x_i)
    target_logged: np.ndarray  # (N,) float64, π(A_i | x_i)
    target: np.ndarray | None  # (N, K) float64 target probabilities
    predictions: np.ndarray | None  # (N, K) float64, m̂(x_i, a)


def check_rounds(
    actions: np.ndarray,
    rewards: np.ndarray,
    propensities: np.ndarray,
    target: np.ndarray,
    predictions: np.ndarray | None = None,
) -> LoggedRounds:
    """Validate estimator inputs; ``target`` is (N,) target actions or (N, K) probabilities."""
    n = len(np.asarray(actions))
    r = _check_vector(rewards, n, "rewards")
    p = _check_vector(propensities, n, "propensities")
    if n and (p.min() <= 0 or p.max() > 1):
        raise ValueError("propensities must be in (0, 1]")
    m = None
    if predictions is not None:
        m = np.asarray(predictions, dtype=np.float64)
        if m.ndim != 2 or len(m) != n or not np.isfinite(m).all():
            raise ValueError(f"predictions must be finite (N={n}, K), got shape {m.shape}")
    n_models = None if m is None else m.shape[1]
    given = np.asarray(target)
    if given.ndim == 2:
        probabilities = given.astype(np.float64)
        if len(probabilities) != n or (n_models is not None and probabilities.shape[1] != n_models):
            raise ValueError(f"target probabilities must be ({n}, {n_models or 'K'}), got {given.shape}")
        if (
            not np.isfinite(probabilities).all()
            or probabilities.min() < 0
            or not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
        ):
            raise ValueError("target probabilities must be >= 0 and sum to 1 per row")
        a = _check_actions(actions, n, probabilities.shape[1])
        return LoggedRounds(a, r, p, probabilities[np.arange(n), a], probabilities, m)
    if given.ndim != 1:
        raise ValueError(f"target must be (N,) actions or (N, K) probabilities, got shape {given.shape}")
    a = _check_actions(actions, n, n_models)
    chosen = _check_actions(given, n, n_models, "target actions")
    one_hot = None if n_models is None else np.eye(n_models)[chosen]
    return LoggedRounds(a, r, p, (chosen == a).astype(np.float64), one_hot, m)


# --------------------------------------------------------------------------- importance weights


def importance_weights(rounds: LoggedRounds, max_weight: float | None = None) -> np.ndarray:
    """Importance weights w_i = π(A_i | x_i) / μ(A_i | x_i), optionally clipped at ``max_weight``."""
    weights = rounds.target_logged / rounds.propensities
    return weights if max_weight is None else np.minimum(weights, max_weight)


def _check_max_weight(max_weight: float | None) -> None:
    if max_weight is not None and not max_weight > 0:
        raise ValueError(f"max_weight must be > 0 or None, got {max_weight}")


def _direct(rounds: LoggedRounds) -> np.ndarray:
    """Σ_a π(a | x_i) m̂(x_i, a), per round."""
    if rounds.predictions is None:
        raise ValueError("this estimator needs the reward model's predictions (N, K)")
    if rounds.target is None:  # deterministic π and no K: cannot happen once predictions fix K
        raise AssertionError("target probabilities missing")
    return np.einsum("nk,nk->n", rounds.target, rounds.predictions)


def _self_normalized(weights: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """Per-round linearisation of Σ w y / Σ w: V̂ + w_i (y_i − V̂) / w̄ (mean = V̂).

    Their sample standard error is the delta-method standard error of the ratio estimator.
    """
    total = weights.sum()
    if total <= 0:
        raise ValueError("no logged round has positive weight under the target policy")
    value = float(weights @ rewards / total)
    return value + weights * (rewards - value) / weights.mean()


# --------------------------------------------------------------------------- estimators


class OffPolicyEstimator:
    """Value of a target policy π from logged rounds: the estimate is the mean of the round rewards."""

    def estimate_round_rewards(
        self,
        actions: np.ndarray,
        rewards: np.ndarray,
        propensities: np.ndarray,
        target: np.ndarray,
        predictions: np.ndarray | None = None,
    ) -> np.ndarray:
        """Per-round values (N,) whose mean is the estimate (bootstrap or normal CIs use them)."""
        return self._round_rewards(check_rounds(actions, rewards, propensities, target, predictions))

    def _round_rewards(self, rounds: LoggedRounds) -> np.ndarray:
        raise NotImplementedError


@pydantic_dataclass(frozen=True, config=STRICT)
class DirectMethod(OffPolicyEstimator):
    """DM: V̂ = (1/n) Σ_i Σ_a π(a | x_i) m̂(x_i, a).

    Uses only the reward model, not the logged rewards. Low variance; biased whenever m̂ is
    (misspecified model, arms rarely logged), and the bias does not shrink with n
    (Dudík, Langford & Li, 2011, §2).
    """

    def _round_rewards(self, rounds: LoggedRounds) -> np.ndarray:
        return _direct(rounds)


@pydantic_dataclass(frozen=True, config=STRICT)
class InverseProbabilityWeighting(OffPolicyEstimator):
    """IPS: V̂ = (1/n) Σ_i w_i y_i, w_i = min(π(A_i | x_i) / p_i, M).

    Unbiased when every action π takes has p > 0 and no weight is clipped (Horvitz & Thompson,
    1952); variance grows with the weights, i.e. with the mismatch between π and the logging
    policy (E[w²] terms). Clipping at M trades a downward bias (for rewards >= 0) for bounded
    variance.
    """

    max_weight: float | None = None  # M: cap on the importance weight; None = no clipping

    def __post_init__(self) -> None:
        _check_max_weight(self.max_weight)

    def _round_rewards(self, rounds: LoggedRounds) -> np.ndarray:
        return importance_weights(rounds, self.max_weight) * rounds.rewards


@pydantic_dataclass(frozen=True, config=STRICT)
class SelfNormalizedIPW(OffPolicyEstimator):
    """SNIPS: V̂ = Σ_i w_i y_i / Σ_i w_i, w_i = π(A_i | x_i) / p_i.

    Biased by O(1/n) but consistent, and usually of much lower variance than IPS; invariant to
    adding a constant to every reward (Swaminathan & Joachims, 2015). Round rewards are the
    delta-method linearisation V̂ + w_i (y_i − V̂) / w̄.
    """

    def _round_rewards(self, rounds: LoggedRounds) -> np.ndarray:
        return _self_normalized(importance_weights(rounds), rounds.rewards)


@pydantic_dataclass(frozen=True, config=STRICT)
class DoublyRobust(OffPolicyEstimator):
    """DR: V̂ = (1/n) Σ_i [Σ_a π(a | x_i) m̂(x_i, a) + w_i (y_i − m̂(x_i, A_i))].

    Dudík, Langford & Li (2011). Unbiased when the propensities are exact, whatever m̂
    (the correction term removes the DM's bias); its variance is that of IPS applied to the
    residual y − m̂, so a good m̂ makes it much smaller than IPS's. Optional clipping of w at M
    (bias as for IPS, scaled by the residual).
    """

    max_weight: float | None = None  # M: cap on the importance weight; None = no clipping

    def __post_init__(self) -> None:
        _check_max_weight(self.max_weight)

    def _round_rewards(self, rounds: LoggedRounds) -> np.ndarray:
        direct = _direct(rounds)
        assert rounds.predictions is not None  # _direct checked it
        residual = rounds.rewards - rounds.predictions[np.arange(len(rounds.actions)), rounds.actions]
        return direct + importance_weights(rounds, self.max_weight) * residual


@pydantic_dataclass(frozen=True, config=STRICT)
class Replay(OffPolicyEstimator):
    """Replay (Li, Chu, Langford & Wang, 2011, WSDM), with rejection sampling for non-uniform logging.

    Round i is *accepted* with probability r_i = c · π(A_i | x_i) / p_i, where
    c = min_i p_i / π(A_i | x_i) over the rounds with π(A_i | x_i) > 0 (so every r_i <= 1), using
    uniform draws from ``seed``. Then P(accept | x) = Σ_a μ(a | x) c π(a | x) / μ(a | x) = c for
    every x, and an accepted round's action is distributed as π(· | x): accepted rounds are a
    sample of the context distribution played by π. V̂ = mean logged reward over accepted rounds.

    Under uniform logging with a deterministic π, r_i = 1{A_i = π(x_i)}: plain replay, which keeps
    the rounds where π agrees with the log (no randomness). Otherwise the acceptance rate is c,
    the smallest p/π: non-uniform logging throws most rounds away, so the variance is large.
    V̂ is a ratio (a mean over a random number of rounds): unbiased given the number accepted,
    asymptotically unbiased overall. Round rewards are the delta-method linearisation
    V̂ + a_i (y_i − V̂) / ā with a_i ∈ {0, 1} the acceptance indicator.
    """

    seed: int = 0  # seeds the uniform draws of the rejection step

    def _round_rewards(self, rounds: LoggedRounds) -> np.ndarray:
        ratio = rounds.target_logged / rounds.propensities
        if not (ratio > 0).any():
            raise ValueError("no logged round has an action the target policy takes")
        accept_probability = ratio / ratio.max()  # c π / p with c = 1 / max(π / p)
        accepted = np.random.default_rng(self.seed).random(len(ratio)) < accept_probability
        if not accepted.any():
            raise ValueError("rejection sampling accepted no logged round")
        return _self_normalized(accepted.astype(np.float64), rounds.rewards)


# --------------------------------------------------------------------------- registry and tables

EstimatorName = Literal["dm", "ips", "snips", "dr", "replay"]
#: The estimators that are linear per round: their round values for "always choose arm a" are
#: per-query estimates of arm a's outcome, so they make outcome tables (:func:`counterfactual_log`).
TableEstimator = Literal["dm", "ips", "dr"]


def estimators(max_weight: float | None = None, seed: int = 0) -> dict[EstimatorName, OffPolicyEstimator]:
    """Every estimator by its short name: the one registry.

    ``max_weight`` caps the importance weights of IPS and DR (None: no clipping); ``seed`` seeds
    Replay's rejection draws.
    """
    return {
        "dm": DirectMethod(),
        "ips": InverseProbabilityWeighting(max_weight=max_weight),
        "snips": SelfNormalizedIPW(),
        "dr": DoublyRobust(max_weight=max_weight),
        "replay": Replay(seed=seed),
    }


def counterfactual_log(
    log: RoutingLog,
    predictions: PredictedOutcomes,
    estimator: TableEstimator,
    max_weight: float | None = None,
) -> RoutingLog:
    """A bandit-feedback log as a full table of estimated outcomes (quality, cost; latency when predicted).

    Cell (i, a) is the named estimator's round value for the policy "always choose arm a":
    dm: m̂(x_i, a);  ips: w_i y_i 1{a = A_i} with w_i = min(1/p_i, M);
    dr: m̂(x_i, a) + w_i (y_i − m̂(x_i, A_i)) 1{a = A_i} (Dudík, Langford & Li, 2011).
    Each ips and dr cell is an unbiased estimate of E[y | x_i, a] (unclipped, exact p), and a
    deterministic policy's mean over its cells is exactly that estimator's value, so metrics,
    frontiers, learning and the environment's rewards run unchanged on the table. The logged
    action and propensity are kept (``feedback`` stays "bandit": no per-query oracle on it).
    Latency is estimated when ``predictions`` has it and the log has a latency column.
    """
    if estimator not in get_args(TableEstimator):
        raise ValueError(f"estimator {estimator!r} makes no outcome table; choose from {get_args(TableEstimator)}")
    if log.n_queries == 0:
        return log
    actions, propensities, quality, cost = logged_outcomes(log)
    chosen = estimators(max_weight)[estimator]

    def table(logged: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        n, k = predicted.shape
        always = (np.full(n, arm) for arm in range(k))
        return np.stack([chosen.estimate_round_rewards(actions, logged, propensities, a, predicted) for a in always], 1)

    latency = log.latency_ms
    if latency is not None and predictions.latency_ms is not None:
        latency = table(latency[np.arange(log.n_queries), actions], predictions.latency_ms)
    return replace(
        log,
        quality=table(quality, predictions.quality),
        cost=table(cost, predictions.cost),
        latency_ms=latency,
    )
