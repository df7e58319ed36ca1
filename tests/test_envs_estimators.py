"""Off-policy estimators: exact formulas, input checks, and coverage of the true value.

The coverage test uses a small numpy world with known expected rewards: contexts
x = (z, 1), z ~ N(0, I_3); K = 4 arms with E[y | x, a] = sigmoid(xᵀθ_a), y ~ Bernoulli. The target
policy is deterministic, π(x) = argmax_a xᵀφ_a. Its true value V = E[sigmoid(xᵀθ_π(x))] is computed
on 2,000,000 fresh contexts (Monte Carlo error ~3e-4). Each of R = 400 replicates logs 4,000
rounds with the uniform policy, and with ε-greedy (ε = 0.3) around a different greedy policy: the
reward model m̂ (per-arm linear ridge, misspecified for a sigmoid) is fitted on the first 2,000
and every estimator evaluates the other 2,000, which m̂ never saw. 95 % normal intervals are
mean ± 1.96 sd / sqrt(n) of the per-round rewards (the standard error that the per-round values
are built to give, SNIPS's by its linearisation).

Held to: IPS, SNIPS, DR and Replay, and DM with the true expected reward as its model, cover V in
>= 90 % of the replicates, with |mean bias| under 4 standard errors and a mean width under a
per-estimator bound; DM with the fitted linear m̂ is biased by m̂'s error (about −0.04 here), far
beyond its interval, which reflects sampling noise only: it covers V in under half of the replicates.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from data.routing_log import RoutingLog
from envs.estimators import (
    DirectMethod,
    DoublyRobust,
    InverseProbabilityWeighting,
    OffPolicyEstimator,
    PredictedOutcomes,
    Replay,
    RewardModel,
    RewardModelConfig,
    SelfNormalizedIPW,
    TableEstimator,
    counterfactual_log,
    estimators,
)

K, D = 4, 4
WORLD = np.random.default_rng(12345)
THETA = WORLD.normal(0.0, 1.0, size=(D, K))  # expected reward sigmoid(x θ_a)
PHI = THETA + WORLD.normal(0.0, 0.7, size=(D, K))  # the target policy's (imperfect) scores
PSI = WORLD.normal(0.0, 1.0, size=(D, K))  # the ε-greedy logging policy's greedy scores


def _contexts(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    z = rng.standard_normal((*shape, D - 1))
    return np.concatenate([z, np.ones((*shape, 1))], axis=-1)


def _expected(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(x @ THETA)))


@functools.cache
def _true_value() -> float:
    x = _contexts(np.random.default_rng(999), (2_000_000,))
    target = np.argmax(x @ PHI, axis=-1)
    return float(np.take_along_axis(_expected(x), target[:, None], axis=1).mean())


def _replicates(logging: str, replicates: int, n: int, seed: int) -> dict[str, np.ndarray]:
    """All replicates at once: contexts, logging probabilities, logged actions and rewards."""
    rng = np.random.default_rng(seed)
    x = _contexts(rng, (replicates, n))
    if logging == "uniform":
        probs = np.full((replicates, n, K), 1.0 / K)
    else:
        probs = np.full((replicates, n, K), 0.3 / K)
        np.put_along_axis(probs, np.argmax(x @ PSI, axis=-1)[..., None], 0.7 + 0.3 / K, axis=-1)
    actions = (probs.cumsum(axis=-1) < rng.random((replicates, n, 1))).sum(axis=-1)
    actions = np.minimum(actions, K - 1)
    mean = np.take_along_axis(_expected(x), actions[..., None], axis=-1)[..., 0]
    rewards = (rng.random((replicates, n)) < mean).astype(np.float64)
    propensities = np.take_along_axis(probs, actions[..., None], axis=-1)[..., 0]
    return {
        "x": x,
        "actions": actions,
        "rewards": rewards,
        "propensities": propensities,
        "target": np.argmax(x @ PHI, axis=-1),
    }


@pytest.mark.parametrize("logging", ["uniform", "eps-greedy"])
def test_intervals_cover_the_true_value(logging: str) -> None:
    replicates, n = 400, 2000
    truth = _true_value()
    data = _replicates(logging, replicates, 2 * n, seed={"uniform": 1, "eps-greedy": 2}[logging])
    fit, held = slice(0, n), slice(n, 2 * n)  # m̂ learns from the first half; the second half is evaluated
    variants: dict[str, tuple[OffPolicyEstimator, str]] = {
        "DM (true m)": (DirectMethod(), "true"),
        "DM (fitted m̂)": (DirectMethod(), "fitted"),
        "IPS": (InverseProbabilityWeighting(), "fitted"),
        "SNIPS": (SelfNormalizedIPW(), "fitted"),
        "DR": (DoublyRobust(), "fitted"),
        "Replay": (Replay(seed=0), "fitted"),
    }
    estimates = np.zeros((len(variants), replicates))
    half_widths = np.zeros((len(variants), replicates))
    for r in range(replicates):
        x = data["x"][r]
        model = RewardModel(K).fit(x[fit], data["actions"][r, fit], data["rewards"][r, fit], np.zeros(n))
        predictions = {"fitted": model.predict(x[held]).quality, "true": _expected(x[held])}
        logged = (data["actions"][r, held], data["rewards"][r, held], data["propensities"][r, held])
        for v, (estimator, model_kind) in enumerate(variants.values()):
            rounds = estimator.estimate_round_rewards(*logged, data["target"][r, held], predictions[model_kind])
            estimates[v, r] = rounds.mean()
            half_widths[v, r] = 1.96 * rounds.std(ddof=1) / np.sqrt(n)
    covered = np.abs(estimates - truth) <= half_widths
    report = {
        name: (float(estimates[v].mean() - truth), float(covered[v].mean()), float(2 * half_widths[v].mean()))
        for v, name in enumerate(variants)
    }
    standard_error = dict(zip(variants, estimates.std(axis=1, ddof=1) / np.sqrt(replicates)))
    print(f"\n{logging}: true value {truth:.4f}; (bias, coverage, mean width) {report}")
    width_bound = {
        "uniform": {"DM (true m)": 0.02, "IPS": 0.16, "SNIPS": 0.09, "DR": 0.08, "Replay": 0.09},
        "eps-greedy": {"DM (true m)": 0.02, "IPS": 0.27, "SNIPS": 0.14, "DR": 0.12, "Replay": 0.16},
    }[logging]
    for name, bound in width_bound.items():
        bias, coverage, width = report[name]
        assert coverage >= 0.90, f"{name} covers the true value in only {coverage:.1%} of replicates"
        assert abs(bias) <= 4 * standard_error[name], f"{name} mean bias {bias:+.4f} is not within 4 standard errors"
        assert width <= bound, f"{name} mean interval width {width:.3f} exceeds {bound}"
    bias, coverage, _ = report["DM (fitted m̂)"]
    assert bias < -0.02 and coverage < 0.5, f"DM with the misspecified m̂: bias {bias:+.4f}, coverage {coverage:.1%}"


def _estimate(estimator: OffPolicyEstimator, *rounds: np.ndarray) -> float:
    """The estimator's value of the target policy: the mean of its round rewards."""
    return float(estimator.estimate_round_rewards(*rounds).mean())


def _rounds(n: int = 50, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    actions = rng.integers(K, size=n)
    rewards = rng.random(n)
    propensities = rng.uniform(0.05, 1.0, size=n)
    predictions = rng.random((n, K))
    target = rng.integers(K, size=n)
    return actions, rewards, propensities, predictions, target


def test_formulas_and_deterministic_equals_one_hot() -> None:
    actions, rewards, propensities, predictions, target = _rounds()
    n = len(actions)
    match = (actions == target).astype(float)
    one_hot = np.eye(K)[target]
    expected = {
        DirectMethod(): predictions[np.arange(n), target].mean(),
        InverseProbabilityWeighting(): (match / propensities * rewards).mean(),
        SelfNormalizedIPW(): (match / propensities * rewards).sum() / (match / propensities).sum(),
        DoublyRobust(): (
            predictions[np.arange(n), target] + match / propensities * (rewards - predictions[np.arange(n), actions])
        ).mean(),
    }
    for estimator, value in expected.items():
        for policy in (target, one_hot):
            estimate = _estimate(estimator, actions, rewards, propensities, policy, predictions)
            assert estimate == pytest.approx(value)


def test_clipping_caps_the_importance_weights() -> None:
    actions, rewards, propensities, _, _ = _rounds()
    assert (1 / propensities > 4.0).any()  # the cap binds on some rounds
    clipped = _estimate(InverseProbabilityWeighting(max_weight=4.0), actions, rewards, propensities, actions)
    assert clipped == pytest.approx((np.minimum(1 / propensities, 4.0) * rewards).mean())
    assert clipped < _estimate(InverseProbabilityWeighting(), actions, rewards, propensities, actions)
    with pytest.raises(ValueError, match="max_weight"):
        InverseProbabilityWeighting(max_weight=0.0)


def test_replay_under_uniform_logging_is_plain_replay() -> None:
    actions, rewards, _, _, target = _rounds(n=400)
    uniform = np.full(len(actions), 1.0 / K)
    value = _estimate(Replay(seed=3), actions, rewards, uniform, target)
    assert value == pytest.approx(rewards[actions == target].mean())


def test_stochastic_target_ips_and_snips() -> None:
    actions, rewards, propensities, predictions, _ = _rounds()
    target = np.random.default_rng(5).dirichlet(np.ones(K), size=len(actions))
    weights = target[np.arange(len(actions)), actions] / propensities
    assert _estimate(InverseProbabilityWeighting(), actions, rewards, propensities, target) == pytest.approx(
        (weights * rewards).mean()
    )
    rounds = SelfNormalizedIPW().estimate_round_rewards(actions, rewards, propensities, target)
    assert rounds.shape == (len(actions),)
    assert rounds.mean() == pytest.approx((weights * rewards).sum() / weights.sum())
    assert _estimate(DirectMethod(), actions, rewards, propensities, target, predictions) == pytest.approx(
        (target * predictions).sum(axis=1).mean()
    )


def test_inputs_are_checked() -> None:
    actions, rewards, propensities, predictions, target = _rounds()
    with pytest.raises(ValueError, match="propensities"):
        InverseProbabilityWeighting().estimate_round_rewards(actions, rewards, np.zeros(len(actions)), target)
    with pytest.raises(ValueError, match="predictions"):
        DoublyRobust().estimate_round_rewards(actions, rewards, propensities, target)
    with pytest.raises(ValueError, match="sum to 1"):
        InverseProbabilityWeighting().estimate_round_rewards(actions, rewards, propensities, np.ones((len(actions), K)))
    with pytest.raises(ValueError, match="rewards"):
        InverseProbabilityWeighting().estimate_round_rewards(actions, rewards[:-1], propensities, target)
    with pytest.raises(ValueError, match="target actions"):
        DirectMethod().estimate_round_rewards(actions, rewards, propensities, target + K, predictions)


def test_reward_model_is_ridge_per_arm_and_fits_logs() -> None:
    rng = np.random.default_rng(0)
    n = 300
    x = _contexts(rng, (n,))
    actions = rng.integers(K, size=n)
    quality, cost = rng.random(n), rng.random(n) * 1e-3
    model = RewardModel(K, RewardModelConfig(ridge=2.0)).fit(x, actions, quality, cost)
    rows = actions == 1
    theta = np.linalg.solve(x[rows].T @ x[rows] + 2.0 * np.eye(D), x[rows].T @ quality[rows])
    np.testing.assert_allclose(model.predict(x).quality[:, 1], np.clip(x @ theta, 0, 1), atol=1e-12)
    assert model.predict(x).latency_ms is None
    full_quality = np.full((n, K), np.nan)
    full_quality[np.arange(n), actions] = quality
    full_cost = np.full((n, K), np.nan)
    full_cost[np.arange(n), actions] = cost
    log = RoutingLog(
        models=tuple("abcd"),
        query_ids=np.arange(n).astype(str).astype(object),
        queries=[""] * n,
        quality=full_quality,
        cost=full_cost,
        feedback="bandit",
        action=actions,
        propensity=np.full(n, 0.25),
    )
    from_log = RewardModel(K, RewardModelConfig(ridge=2.0)).fit_log(log, x)
    np.testing.assert_allclose(from_log.predict(x).cost, model.predict(x).cost)
    with pytest.raises(ValueError, match="ridge"):
        RewardModelConfig(ridge=0.0)


def test_counterfactual_log_is_the_estimators_per_arm() -> None:
    actions, rewards, propensities, predictions, _ = _rounds()
    n = len(actions)
    logged = np.eye(K)[actions]
    bandit = RoutingLog(
        models=tuple("abcd"),
        query_ids=np.arange(n).astype(str).astype(object),
        queries=[""] * n,
        quality=np.where(logged > 0, rewards[:, None], np.nan),
        cost=np.where(logged > 0, 1e-3 * rewards[:, None], np.nan),
        latency_ms=np.where(logged > 0, 1e3 * rewards[:, None], np.nan),
        feedback="bandit",
        action=actions,
        propensity=propensities,
    )
    weight = (1 / propensities)[:, None]
    residual = (rewards - predictions[np.arange(n), actions])[:, None]
    expected: dict[TableEstimator, np.ndarray] = {
        "dm": predictions,
        "ips": logged * weight * rewards[:, None],
        "dr": predictions + logged * weight * residual,
    }
    m_hat = PredictedOutcomes(predictions, 1e-3 * predictions, 1e3 * predictions)
    for name, table in expected.items():
        estimated = counterfactual_log(bandit, m_hat, name)
        np.testing.assert_allclose(estimated.quality, table)
        np.testing.assert_allclose(estimated.cost, 1e-3 * table)
        assert estimated.latency_ms is not None
        np.testing.assert_allclose(estimated.latency_ms, 1e3 * table)
        assert estimated.feedback == "bandit" and estimated.action is not None
        np.testing.assert_array_equal(estimated.action, actions)
    without_latency = counterfactual_log(bandit, PredictedOutcomes(predictions, predictions, None), "dm")
    assert without_latency.latency_ms is bandit.latency_ms
    clipped = counterfactual_log(bandit, m_hat, "ips", max_weight=2.0)
    np.testing.assert_allclose(clipped.quality, logged * np.minimum(weight, 2.0) * rewards[:, None])
    assert set(estimators()) == {"dm", "ips", "snips", "dr", "replay"}
    with pytest.raises(ValueError, match="no outcome table"):
        counterfactual_log(bandit, m_hat, "snips")  # type: ignore[arg-type]
