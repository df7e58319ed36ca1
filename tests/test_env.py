"""RoutingEnv: both environment checkers pass and rewards are exact."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from data.routing_log import RoutingLog
from envs.routing_env import RoutingEnv


def _log(n: int = 20, k: int = 3, seed: int = 0) -> RoutingLog:
    rng = np.random.default_rng(seed)
    return RoutingLog(
        models=tuple(f"m{i}" for i in range(k)),
        query_ids=np.array([f"q{i}" for i in range(n)], dtype=object),
        queries=[f"query {i}" for i in range(n)],
        quality=rng.random((n, k)),
        cost=rng.random((n, k)) * 1e-3,
    )


def _env(weight: float = 100.0) -> RoutingEnv:
    log = _log()
    features = np.random.default_rng(1).standard_normal((log.n_queries, 4)).astype(np.float32)
    return RoutingEnv(log, features, weight)


def test_gymnasium_checker() -> None:
    gym_check_env(_env(), skip_render_check=True)


def test_stable_baselines3_checker() -> None:
    sb3_check_env(_env(), warn=True)


def test_rewards_are_exact_and_info_complete() -> None:
    env = _env(weight=250.0)
    observation, info = env.reset(seed=3)
    row = info["query_index"]
    np.testing.assert_array_equal(observation, env.features[row])
    for arm in range(env.log.n_models):
        env.reset(seed=3)
        _, reward, terminated, truncated, info = env.step(arm)
        assert reward == env.log.quality[row, arm] - 250.0 * env.log.cost[row, arm]
        assert terminated and not truncated
        assert info["quality"] == env.log.quality[row, arm] and info["cost"] == env.log.cost[row, arm]
        best = env.log.quality[row] - 250.0 * env.log.cost[row]
        assert info["oracle_action"] == int(np.argmax(best))
        assert info["regret"] == pytest.approx(best.max() - reward)


def test_seeded_resets_repeat() -> None:
    first, second = _env(), _env()
    draws = [first.reset(seed=7)[1]["query_index"]] + [first.reset()[1]["query_index"] for _ in range(20)]
    again = [second.reset(seed=7)[1]["query_index"]] + [second.reset()[1]["query_index"] for _ in range(20)]
    assert draws == again and len(set(draws)) > 5


def test_rejects_bad_inputs() -> None:
    log = _log()
    with pytest.raises(ValueError, match="feature rows"):
        RoutingEnv(log, np.zeros((3, 2), dtype=np.float32), 1.0)
    with pytest.raises(ValueError, match="cost_weight"):
        RoutingEnv(log, np.zeros((log.n_queries, 2), dtype=np.float32), -1.0)
    env = _env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(99)
