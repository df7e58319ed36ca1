"""RoutingEnv and RoutingVecEnv: checkers for every feedback mode and reward shape, exact and
counterfactual rewards, preference conditioning, determinism, the budget multiplier with LinUCB,
and a short PPO run on the VecEnv."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from agents.callbacks import Callback, Outcomes
from agents.linucb import LinUCB, LinUCBConfig
from data.routing_log import RoutingLog
from envs.estimators import RewardModel
from envs.rewards import BudgetConfig, PreferenceConfig, RewardConfig
from envs.routing_env import RoutingEnv
from envs.task import EnvConfig, EnvFeedback
from envs.vec_env import RoutingVecEnv

N, K, D = 60, 3, 4
SHAPES = {
    "fixed": RewardConfig(cost_weight=200.0),
    "latency": RewardConfig(cost_weight=200.0, latency_weight=0.05),
    "budget": RewardConfig(budget=BudgetConfig(budget=4e-4)),
    "preference": RewardConfig(preference=PreferenceConfig(low=1.0, high=1000.0, zero_share=0.2)),
}
FEEDBACKS: list[EnvFeedback] = ["full", "dm", "ips", "dr"]


def _log(bandit: bool, seed: int = 0) -> RoutingLog:
    """N queries × K models with latency; a bandit log keeps one logged cell per query."""
    rng = np.random.default_rng(seed)
    quality, cost = rng.random((N, K)), rng.random((N, K)) * 1e-3
    latency = rng.uniform(100, 3000, size=(N, K))
    log = RoutingLog(
        models=tuple(f"m{i}" for i in range(K)),
        query_ids=np.arange(N).astype(str).astype(object),
        queries=[f"q{i}" for i in range(N)],
        quality=quality,
        cost=cost,
        latency_ms=latency,
    )
    if not bandit:
        return log
    probs = rng.dirichlet(np.ones(K) * 2, size=N)
    action = (probs.cumsum(axis=1) < rng.random((N, 1))).sum(axis=1).clip(0, K - 1)
    mask = np.eye(K, dtype=bool)[action]
    return RoutingLog(
        models=log.models,
        query_ids=log.query_ids,
        queries=log.queries,
        quality=np.where(mask, quality, np.nan),
        cost=np.where(mask, cost, np.nan),
        latency_ms=np.where(mask, latency, np.nan),
        feedback="bandit",
        action=action,
        propensity=probs[np.arange(N), action],
    )


def _features(seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((N, D)).astype(np.float32)
    x[:, -1] = 1.0
    return x


def _env(feedback: EnvFeedback = "full", shape: str = "fixed", **config: float) -> RoutingEnv:
    return RoutingEnv(_log(feedback != "full"), _features(), SHAPES[shape], EnvConfig(feedback=feedback, **config))


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("feedback", FEEDBACKS)
def test_checkers_pass(feedback: EnvFeedback, shape: str) -> None:
    env = _env(feedback, shape)
    assert env.observation_space.shape == (D + (shape == "preference"),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unbounded Box observations are intended
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(_env(feedback, shape), warn=True)


def test_full_information_rewards_are_exact_with_latency() -> None:
    env = _env("full", "latency")
    log = env.log
    for arm in range(K):
        _, info = env.reset(seed=5)
        row = info["query_index"]
        _, reward, terminated, _, info = env.step(arm)
        assert terminated
        expected = log.quality[row] - 200.0 * log.cost[row] - 0.05 * log.latency_ms[row] / 1000.0
        assert reward == pytest.approx(expected[arm], abs=1e-12)
        assert info["quality"] == log.quality[row, arm] and info["cost"] == log.cost[row, arm]
        assert info["oracle_action"] == int(np.argmax(expected))
        assert info["regret"] == pytest.approx(expected.max() - expected[arm])


def _step_all_arms(env: RoutingEnv, seed: int) -> tuple[int, np.ndarray]:
    rewards = []
    for arm in range(K):
        _, info = env.reset(seed=seed)
        rewards.append(env.step(arm)[1])
    return info["query_index"], np.array(rewards)


def test_bandit_feedback_rewards() -> None:
    log, x = _log(True), _features()
    rows = np.arange(N)
    logged_reward = log.quality[rows, log.action] - 200.0 * log.cost[rows, log.action]
    predicted = RewardModel(K).fit_log(log, x).predict(x).reward(200.0)
    for seed in range(5):
        row, ips = _step_all_arms(_env("ips"), seed)
        logged = log.action[row]
        expected = np.zeros(K)
        expected[logged] = logged_reward[row] / log.propensity[row]
        np.testing.assert_allclose(ips, expected, atol=1e-9)
        _, dm = _step_all_arms(_env("dm"), seed)
        np.testing.assert_allclose(dm, predicted[row], atol=1e-9)
        _, dr = _step_all_arms(_env("dr"), seed)
        correction = np.zeros(K)
        correction[logged] = (logged_reward[row] - predicted[row, logged]) / log.propensity[row]
        np.testing.assert_allclose(dr, predicted[row] + correction, atol=1e-9)


def test_ips_clipping_is_applied() -> None:
    log = _log(True)
    logged_quality = log.quality[np.arange(N), log.action]
    clipped = np.abs(_env("ips", max_weight=2.0).task.quality).sum(axis=1) / logged_quality
    unclipped = np.abs(_env("ips").task.quality).sum(axis=1) / logged_quality
    np.testing.assert_allclose(unclipped, 1 / log.propensity)
    assert unclipped.max() > 2.0  # the cap binds on some queries
    np.testing.assert_allclose(clipped, np.minimum(1 / log.propensity, 2.0))


def test_preference_conditioning() -> None:
    env = _env("full", "preference")
    preference = SHAPES["preference"].preference
    weights = []
    for episode in range(300):
        observation, info = env.reset(seed=episode)
        weight = env.cost_weight
        weights.append(weight)
        assert observation[-1] == pytest.approx(float(preference.encode(weight)))
        np.testing.assert_array_equal(observation[:D], env.features[info["query_index"]])
        _, reward, _, _, step_info = env.step(0)
        row = info["query_index"]
        assert reward == pytest.approx(env.log.quality[row, 0] - weight * env.log.cost[row, 0])
        assert step_info["cost_weight"] == weight
    weights = np.array(weights)
    assert 0.1 < (weights == 0).mean() < 0.3
    positive = weights[weights > 0]
    assert positive.min() >= 1.0 and positive.max() <= 1000.0
    assert np.median(np.log(positive)) == pytest.approx(np.log(1000.0) / 2, abs=0.6)  # log-uniform
    assert preference.encode(0.0) == 0.0 and preference.encode(1000.0) == pytest.approx(1.0)
    assert env.default_cost_weight is None


def test_bad_configurations_are_rejected() -> None:
    full, bandit, x = _log(False), _log(True), _features()
    with pytest.raises(ValueError, match="full-information"):
        RoutingEnv(bandit, x, 1.0)
    with pytest.raises(ValueError, match="bandit-feedback"):
        RoutingEnv(full, x, 1.0, EnvConfig(feedback="dr"))
    no_latency = RoutingLog(
        models=full.models,
        query_ids=full.query_ids,
        queries=full.queries,
        quality=full.quality,
        cost=full.cost,
    )
    with pytest.raises(ValueError, match="latency_ms"):
        RoutingEnv(no_latency, x, RewardConfig(latency_weight=0.1))
    with pytest.raises(ValueError, match="exclude"):
        RewardConfig(budget=BudgetConfig(budget=1e-3), preference=PreferenceConfig())
    with pytest.raises(ValueError, match="budget"):
        BudgetConfig(budget=0.0)
    with pytest.raises(ValueError, match="low"):
        PreferenceConfig(low=10.0, high=1.0)
    with pytest.raises(ValueError):
        EnvConfig(feedback="bogus")  # type: ignore[arg-type]


def _trajectory(env: RoutingEnv, seed: int, steps: int = 40) -> list[tuple]:
    actions = np.random.default_rng(0).integers(K, size=steps)
    observation, _ = env.reset(seed=seed)
    out = []
    for action in actions:
        reward = env.step(action)[1]
        out.append((observation.tobytes(), reward, env.cost_weight))
        observation, _ = env.reset()
    return out


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("feedback", FEEDBACKS)
def test_seeded_envs_repeat(feedback: EnvFeedback, shape: str) -> None:
    first = _trajectory(_env(feedback, shape), seed=7)
    env = _env(feedback, shape)
    assert _trajectory(env, seed=7) == first
    assert _trajectory(env, seed=7) == first  # a seeded reset restarts the multiplier too
    assert _trajectory(env, seed=8) != first


def test_budget_multiplier_moves_toward_the_budget() -> None:
    env = _env("full", "budget")
    _trajectory(env, seed=0, steps=200)
    multiplier = env.task.multiplier
    assert multiplier is not None and multiplier.steps == 200
    assert env.cost_weight == multiplier.value > 0  # actions at random overspend 4e-4 USD
    assert env.default_cost_weight == multiplier.average


def test_linucb_with_budget_ends_at_the_budget_on_held_out_queries() -> None:
    """Online LinUCB under a budget: the greedy policy at the final λ̄ spends B ± 5 % on test.

    Synthetic full-information data (data.synth, 5 models, graded quality = expected quality),
    text features; 20,000 training queries (so that learning mostly sees fresh queries, as
    the held-out test does), 20,000 test queries, 20,000 online steps, α = 0.05,
    B = cheapest + 0.15 × (dearest − cheapest) of the models' mean training costs: a budget that
    binds the learned policy (λ̄ > 0). At 0.2 it does not: with so little exploration the agent
    never learns that the dearest model is the best, its greedy choice at λ → 0 spends 18% less
    than that B, and λ̄ falls to ~4 without reaching it.
    """
    from data.featurizer import FeaturizerConfig, TextFeaturizer
    from data.synth import SynthConfig, generate

    synth = generate(SynthConfig(queries=40_000, models=5, seed=1))
    log = synth.routing_log(expected=True)
    train, test = log.subset(np.arange(20_000)), log.subset(np.arange(20_000, 40_000))
    featurizer = TextFeaturizer(FeaturizerConfig(components=16, fit_sample=3000)).fit(train.queries)
    train_x, test_x = featurizer.transform(train.queries), featurizer.transform(test.queries)
    mean_cost = train.cost.mean(axis=0)
    budget = mean_cost.min() + 0.15 * (mean_cost.max() - mean_cost.min())
    env = RoutingEnv(train, train_x, RewardConfig(budget=BudgetConfig(budget=budget)))
    weights: list[float] = []

    class EpisodeWeights(Callback):
        def on_step(self, step: int, outcomes: Outcomes) -> bool:
            weights.append(env.cost_weight)  # the weight the episode just played was drawn at
            return True

    agent = LinUCB(5, featurizer.dimension, LinUCBConfig(alpha=0.05)).learn(
        env, 20_000, seed=0, callbacks=[EpisodeWeights()]
    )
    assert len(set(weights)) > 1000  # the agent acted at the current λ, which moved every step
    final = env.default_cost_weight
    assert final is not None and final > 0
    spent = test.cost[np.arange(test.n_queries), agent.predict(test_x, final)].mean()
    assert abs(spent - budget) <= 0.05 * budget, f"test cost {spent:.3e} vs budget {budget:.3e}"


def test_linucb_reads_only_its_dimension_from_preference_observations() -> None:
    env = _env("full", "preference")
    agent = LinUCB(K, D, LinUCBConfig(alpha=0.5)).learn(env, 300, seed=0)
    assert agent.observations.sum() == 300


# --------------------------------------------------------------------------- VecEnv


def _vec(
    feedback: EnvFeedback = "full", shape: str = "fixed", num_envs: int = 16, seed: int | None = 3
) -> RoutingVecEnv:
    return RoutingVecEnv(
        _log(feedback != "full"),
        _features(),
        num_envs,
        SHAPES[shape],
        EnvConfig(feedback=feedback),
        seed=seed,
    )


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("feedback", FEEDBACKS)
def test_vec_env_shapes_dtypes_and_determinism(feedback: EnvFeedback, shape: str) -> None:
    def run(env: RoutingVecEnv) -> list[bytes]:
        env.seed(11)
        out = [env.reset().tobytes()]
        for _ in range(5):
            observations, rewards, dones, infos = env.step(np.arange(16) % K)
            assert observations.shape == (16, *env.observation_space.shape)
            assert observations.dtype == np.float32 and rewards.dtype == np.float32
            assert rewards.shape == (16,) and dones.all() and len(infos) == 16
            assert env.observation_space.contains(observations[0])
            out += [observations.tobytes(), rewards.tobytes()]
        return out

    env = _vec(feedback, shape)
    first = run(env)
    assert run(env) == first and run(_vec(feedback, shape, seed=None)) == first


def test_vec_env_matches_the_single_env() -> None:
    env = _vec("full", "latency")
    env.reset()
    rows, weights = env._rows.copy(), env._weights.copy()
    actions = np.arange(16) % K
    _, rewards, _, _ = env.step(actions)
    log = env.task.log
    expected = (
        log.quality[rows, actions] - weights * log.cost[rows, actions] - 0.05 * log.latency_ms[rows, actions] / 1000.0
    )
    np.testing.assert_allclose(rewards, expected.astype(np.float32))
    np.testing.assert_array_equal(env.last_rows, rows)
    np.testing.assert_array_equal(env.last_quality, log.quality[rows, actions])
    np.testing.assert_array_equal(env.last_cost, log.cost[rows, actions])
    assert (env.last_regret >= -1e-12).all() and env.last_oracle_action.shape == (16,)


def test_vec_env_attribute_interface() -> None:
    env = _vec("full", "budget", num_envs=4)
    assert env.get_attr("cost_weight") == [0.0] * 4
    assert env.get_attr("num_envs", indices=[1, 2]) == [4, 4]
    env.set_attr("marker", 5)
    assert env.get_attr("marker", indices=0) == [5]
    assert env.env_method("reset")[0].shape == (4, D)
    assert env.env_is_wrapped(object) == [False] * 4  # type: ignore[arg-type]
    env.reset()
    env.step(np.zeros(4, dtype=np.int64))
    assert env.cost_weight == env.task.multiplier.value and env.default_cost_weight is not None


def test_stable_baselines3_ppo_updates_on_the_vec_env() -> None:
    """SB3's PPO collects rollouts from the vectorised env and updates its network on them (that
    PPO learns to route is tests/test_ppo.py's)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    env = VecMonitor(_vec("dr", "preference", num_envs=32))
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=8,
        batch_size=64,
        n_epochs=1,
        seed=0,
        policy_kwargs={"net_arch": [16]},
        device="cpu",
    )
    initial = [parameter.detach().clone() for parameter in model.policy.parameters()]
    model.learn(512)
    assert model.num_timesteps >= 512
    assert any(not torch.equal(a, b.detach()) for a, b in zip(initial, model.policy.parameters()))
    actions, _ = model.predict(env.reset(), deterministic=True)
    assert actions.shape == (32,)
