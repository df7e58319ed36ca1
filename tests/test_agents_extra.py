"""LinTS (Thompson sampling on LinUCB's statistics) and the direct-method baseline."""

from __future__ import annotations

import numpy as np
from conftest import linear_world, synthetic_log

from agents.baselines import RandomRouter
from agents.direct import DirectConfig, DirectMethodRouter
from agents.lints import LinTS, LinTSConfig
from agents.linucb import LinUCB
from envs.routing_env import RoutingEnv
from policies.heads import UtilityHead


def _env(x: np.ndarray, quality: np.ndarray, cost: np.ndarray, weight: float) -> RoutingEnv:
    return RoutingEnv(synthetic_log(quality, cost), x.astype(np.float32), weight)


def test_lints_learns_online_and_beats_random() -> None:
    x, quality, cost = linear_world(800)
    weight = 200.0
    agent = LinTS(3, x.shape[1], LinTSConfig(scale=0.25)).learn(_env(x, quality, cost, weight), 1500, seed=0)
    assert agent.observations.sum() == 1500 and (agent.observations > 0).all()
    rewards, rows = quality - weight * cost, np.arange(len(x))
    learned = rewards[rows, agent.predict(x, weight)].mean()
    random = rewards[rows, RandomRouter(3).predict(x)].mean()
    fitted = rewards[rows, LinUCB(3, x.shape[1]).fit(x, quality, cost).predict(x, weight)].mean()
    assert learned > random + 0.05
    assert learned > fitted - 0.02
    assert agent.name == "lints" and agent.score_kind == "utility" and isinstance(agent.head(), UtilityHead)


def test_lints_is_deterministic_under_seed_and_samples() -> None:
    x, quality, cost = linear_world(400)

    def run(seed: int) -> np.ndarray:
        return LinTS(3, x.shape[1]).learn(_env(x, quality, cost, 100.0), 300, seed=seed).linear_map()

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))
    agent = LinTS(3, x.shape[1]).fit(x, quality, cost)
    draws = agent.upper_confidence(x[:50], 100.0)
    assert not np.allclose(draws, agent.upper_confidence(x[:50], 100.0))  # a fresh posterior draw each call
    np.testing.assert_array_equal(agent.predict(x, 100.0), agent.predict(x, 100.0))  # greedy: no sampling


def test_lints_without_scale_is_greedy() -> None:
    x, quality, cost = linear_world(200)
    agent = LinTS(3, x.shape[1], LinTSConfig(scale=0.0)).fit(x, quality, cost)
    np.testing.assert_array_equal(agent.upper_confidence(x, 50.0), agent.scores(x, 50.0))


def test_direct_method_is_per_arm_ridge() -> None:
    x, quality, cost = linear_world(800)
    agent = DirectMethodRouter(3, x.shape[1], DirectConfig(ridge=3.0)).fit(x, quality, cost)
    gram = x.T @ x + 3.0 * np.eye(x.shape[1])
    for arm in range(3):
        expected_quality = np.linalg.solve(gram, x.T @ quality[:, arm])
        np.testing.assert_allclose(agent.theta_quality[arm], expected_quality, atol=1e-10)
        expected_cost = np.linalg.solve(gram, x.T @ cost[:, arm])
        np.testing.assert_allclose(agent.theta_cost[arm], expected_cost, atol=1e-12)
    expected = np.argmax(x @ agent.theta_quality.T - 200.0 * x @ agent.theta_cost.T, axis=1)
    np.testing.assert_array_equal(agent.predict(x, 200.0), expected)
    assert agent.name == "direct" and agent.config.alpha == 0.0
