"""CascadeEnv: both checkers pass, masks follow the calls, observations and rewards are exact by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from data.routing_log import RoutingLog
from envs.cascade_env import CascadeConfig, CascadeEnv
from envs.rewards import BudgetConfig, PreferenceConfig, RewardConfig

K, F, D = 3, 2, 4


def _log(n: int = 1, latency: bool = False) -> RoutingLog:
    rng = np.random.default_rng(0)
    quality = np.tile([0.2, 0.7, 1.0], (n, 1)) if n == 1 else rng.random((n, K))
    cost = np.tile([0.001, 0.004, 0.02], (n, 1)) if n == 1 else rng.random((n, K)) * 1e-2
    return RoutingLog(
        models=("cheap", "mid", "strong"),
        query_ids=np.array([f"q{i}" for i in range(n)], dtype=object),
        queries=[f"query {i}" for i in range(n)],
        quality=quality,
        cost=cost,
        latency_ms=np.tile([100.0, 300.0, 900.0], (n, 1)) if latency else None,
    )


def _env(
    n: int = 1, reward: RewardConfig | float = 10.0, config: CascadeConfig | None = None, latency: bool = False
) -> CascadeEnv:
    rng = np.random.default_rng(1)
    features = rng.standard_normal((n, D)).astype(np.float32)
    response_features = (np.arange(n * K * F, dtype=np.float32).reshape(n, K, F) + 1.0) / 10.0
    agreement = np.zeros((n, K, K), dtype=bool)
    agreement[:, 0, 2] = agreement[:, 2, 0] = True  # cheap and strong give the same answer
    return CascadeEnv(_log(n, latency), features, response_features, agreement, reward, config)


def test_gymnasium_checker_fixed_weight_and_preference() -> None:
    """The checker passes; its only warnings are that the features are unbounded (as for the routing env)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(_env(n=20), skip_render_check=True)
        gym_check_env(
            _env(n=20, reward=RewardConfig(preference=PreferenceConfig(low=1.0, high=1e4))), skip_render_check=True
        )
    assert all("infinity" in str(warning.message) for warning in caught), [str(w.message) for w in caught]


def test_stable_baselines3_checker() -> None:
    sb3_check_env(_env(n=20, reward=RewardConfig(preference=PreferenceConfig())), warn=True)


def test_masks_allow_each_call_once_and_stops_only_on_called_models() -> None:
    env = _env(config=CascadeConfig(max_calls=2))
    env.reset(seed=0)
    assert env.action_masks().tolist() == [True, True, True, False, False, False]
    env.step(1)
    assert env.action_masks().tolist() == [True, False, True, False, True, False]
    env.step(0)  # the second call: max_calls reached, only stops remain
    assert env.action_masks().tolist() == [False, False, False, True, True, False]
    *_, terminated, _, _ = env.step(3)
    assert terminated and not env.action_masks().any()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(3)


def test_reward_counts_every_call_by_hand() -> None:
    env = _env(reward=10.0)
    env.reset(seed=0)
    for model in (0, 2):
        _, reward, terminated, truncated, info = env.step(model)
        assert (reward, terminated, truncated, info["called"]) == (0.0, False, False, model)
    _, reward, terminated, _, info = env.step(K + 0)  # return the cheap model's answer after paying for both
    assert terminated
    assert reward == pytest.approx(0.2 - 10.0 * (0.001 + 0.02))
    assert info | {"cost": round(info["cost"], 12)} == {
        "query_index": 0,
        "cost_weight": 10.0,
        "returned": 0,
        "called": [0, 2],
        "quality": 0.2,
        "cost": 0.021,
        "calls": 2,
        "invalid": False,
    }


def test_latency_of_every_call_adds_up() -> None:
    env = _env(reward=RewardConfig(cost_weight=10.0, latency_weight=0.5), latency=True)
    env.reset(seed=0)
    env.step(0)
    env.step(1)
    _, reward, *_ = env.step(K + 1)
    assert reward == pytest.approx(0.7 - 10.0 * (0.001 + 0.004) - 0.5 * (0.1 + 0.3))


@pytest.mark.parametrize(
    ("actions", "cost"),
    [((K + 0,), 0.0), ((1, K + 0), 0.004), ((1, 1), 0.004)],
    ids=["stop-before-any-call", "return-an-uncalled-model", "call-twice"],
)
def test_an_invalid_action_ends_the_episode_with_no_answer_and_the_penalty(
    actions: tuple[int, ...], cost: float
) -> None:
    env = _env(reward=10.0, config=CascadeConfig(invalid_penalty=1.5))
    env.reset(seed=0)
    for action in actions:
        _, reward, terminated, _, info = env.step(action)
    assert terminated and info["invalid"] and info["returned"] == -1 and info["quality"] == 0.0
    assert reward == pytest.approx(-1.5 - 10.0 * cost)


def test_an_action_outside_the_space_is_an_error() -> None:
    env = _env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not in"):
        env.step(2 * K)


def test_observation_layout_fills_the_slots_of_called_models() -> None:
    env = _env(reward=RewardConfig(preference=PreferenceConfig(low=1.0, high=100.0)))
    layout = env.task.layout()
    observation, _ = env.reset(seed=0)
    assert observation.shape == (D + K + K * F + K + 1,) == env.observation_space.shape
    np.testing.assert_array_equal(observation[layout.query], env.task.routing.features[0])
    assert not observation[layout.called].any() and not observation[layout.responses].any()
    assert observation[layout.cost_weight][0] == PreferenceConfig(low=1.0, high=100.0).encode(env.cost_weight)
    env.step(2)
    observation, *_ = env.step(1)
    assert observation[layout.called].tolist() == [0.0, 1.0, 1.0]
    slots = observation[layout.responses].reshape(K, F)
    np.testing.assert_allclose(slots, [[0.0, 0.0], [0.3, 0.4], [0.5, 0.6]], rtol=1e-6)
    assert observation[layout.agreement].tolist() == [0.0, 0.0, 0.0]  # mid and strong disagree
    observation, *_ = env.step(0)
    assert observation[layout.agreement].tolist() == [0.5, 0.0, 0.5]  # cheap agrees with strong, one of two others


def test_seeded_resets_repeat_queries_and_weights() -> None:
    reward = RewardConfig(preference=PreferenceConfig())
    first, second = _env(n=30, reward=reward), _env(n=30, reward=reward)
    draws = [(first.reset(seed=7)[1]["query_index"], first.cost_weight)]
    draws += [(first.reset()[1]["query_index"], first.cost_weight) for _ in range(10)]
    again = [(second.reset(seed=7)[1]["query_index"], second.cost_weight)]
    again += [(second.reset()[1]["query_index"], second.cost_weight) for _ in range(10)]
    assert draws == again and len({row for row, _ in draws}) > 3


def test_rejects_bad_inputs() -> None:
    log = _log(n=2)
    features = np.zeros((2, D), dtype=np.float32)
    agreement = np.zeros((2, K, K), dtype=bool)
    with pytest.raises(ValueError, match="response_features must be"):
        CascadeEnv(log, features, np.zeros((2, K)), agreement)
    with pytest.raises(ValueError, match="agreement must be"):
        CascadeEnv(log, features, np.zeros((2, K, F)), agreement[:, :2])
    with pytest.raises(ValueError, match="budget"):
        CascadeEnv(log, features, np.zeros((2, K, F)), agreement, RewardConfig(budget=BudgetConfig(budget=0.01)))
    with pytest.raises(ValueError, match="max_calls"):
        CascadeConfig(max_calls=0)
