"""LinUCB: exact ridge fit, online learning through the env, the fit/partial_fit/predict face."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import linear_world, synthetic_log

from agents import linucb_statistics
from agents.base import Agent, FeaturizedSplit, TrainingTask
from agents.baselines import RandomRouter, SingleModelRouter
from agents.callbacks import Callback
from agents.lints import LinTS
from agents.linucb import LinUCB, LinUCBConfig, LinUCBStatistics, linucb_from_statistics
from data.schema import DataError
from envs.rewards import BudgetConfig, RewardConfig
from envs.routing_env import RoutingEnv
from training.checkpoints import read_checkpoint, write_checkpoint


def test_fit_is_ridge_regression_per_arm() -> None:
    x, quality, cost = linear_world(600)
    agent = LinUCB(3, x.shape[1], LinUCBConfig(ridge=2.0)).fit(x, quality, cost)
    gram = x.T @ x + 2.0 * np.eye(x.shape[1])
    np.testing.assert_allclose(agent.theta_quality.T, np.linalg.solve(gram, x.T @ quality), atol=1e-10)
    np.testing.assert_allclose(agent.theta_cost.T, np.linalg.solve(gram, x.T @ cost), atol=1e-12)


def test_partial_fit_in_chunks_equals_fit() -> None:
    x, quality, cost = linear_world(600)
    whole = LinUCB(3, x.shape[1]).fit(x, quality, cost)
    chunked = LinUCB(3, x.shape[1]).partial_fit(x[:200], quality[:200], cost[:200])
    chunked.partial_fit(x[200:], quality[200:], cost[200:])
    np.testing.assert_allclose(whole.linear_map(), chunked.linear_map(), atol=1e-10)


def test_bandit_partial_fit_uses_only_the_logged_arm() -> None:
    x, quality, cost = linear_world(600)
    actions = np.arange(len(x)) % 3
    rows = np.arange(len(x))
    agent = LinUCB(3, x.shape[1]).partial_fit(x, quality[rows, actions], cost[rows, actions], actions=actions)
    arm0 = actions == 0
    expected = np.linalg.solve(x[arm0].T @ x[arm0] + np.eye(x.shape[1]), x[arm0].T @ quality[arm0, 0])
    np.testing.assert_allclose(agent.theta_quality[0], expected, atol=1e-10)
    assert agent.observations.tolist() == [200, 200, 200]


def test_one_fit_serves_every_cost_weight() -> None:
    x, quality, cost = linear_world(600)
    agent = LinUCB(3, x.shape[1]).fit(x, quality, cost)
    free, expensive = agent.predict(x, 0.0), agent.predict(x, 1e6)
    np.testing.assert_array_equal(expensive, np.argmin(x @ agent.theta_cost.T, axis=1))
    assert not np.array_equal(free, expensive)
    scores = agent.scores(x, 300.0)
    np.testing.assert_allclose(scores, x @ agent.theta_quality.T - 300.0 * x @ agent.theta_cost.T)


def test_learn_online_observes_one_arm_and_beats_random() -> None:
    """Learned online on 800 queries, scored on 800 others of the same world (never learned from)."""
    x_all, quality_all, cost_all = linear_world(1600)
    x, quality, cost = x_all[:800], quality_all[:800], cost_all[:800]
    held_x, held_quality, held_cost = x_all[800:], quality_all[800:], cost_all[800:]
    weight = 200.0
    env = RoutingEnv(synthetic_log(quality, cost), x.astype(np.float32), weight)
    agent = LinUCB(3, x.shape[1], LinUCBConfig(alpha=0.5)).learn(env, 1500, seed=0)
    assert agent.observations.sum() == 1500 and (agent.observations > 0).all()
    rewards = held_quality - weight * held_cost
    rows = np.arange(len(held_x))
    learned = rewards[rows, agent.predict(held_x, weight)].mean()
    random = rewards[rows, RandomRouter(3).predict(held_x)].mean()
    fitted = rewards[rows, LinUCB(3, x.shape[1]).fit(x, quality, cost).predict(held_x, weight)].mean()
    assert learned > random + 0.05
    assert learned > fitted - 0.02  # online learning from one arm at a time nearly matches full information


def test_learn_is_deterministic_under_seed() -> None:
    x, quality, cost = linear_world(600)
    env_a = RoutingEnv(synthetic_log(quality, cost), x.astype(np.float32), 100.0)
    env_b = RoutingEnv(synthetic_log(quality, cost), x.astype(np.float32), 100.0)
    a = LinUCB(3, x.shape[1]).learn(env_a, 300, seed=5)
    b = LinUCB(3, x.shape[1]).learn(env_b, 300, seed=5)
    np.testing.assert_array_equal(a.linear_map(), b.linear_map())


def test_baselines() -> None:
    x, quality, cost = linear_world(600)
    log = synthetic_log(quality, cost)
    assert SingleModelRouter.cheapest(log).choice(0.0) == int(np.argmin(cost.mean(axis=0)))
    best = SingleModelRouter.best(log)
    assert best.choice(0.0) == int(np.argmax(quality.mean(axis=0)))
    assert best.choice(1e9) == int(np.argmin(cost.mean(axis=0)))
    draws = RandomRouter(3, seed=1).predict(x)
    assert set(draws.tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(draws, RandomRouter(3, seed=1).predict(x))


def test_rejects_wrong_shapes() -> None:
    x, quality, cost = linear_world(600)
    with pytest.raises(ValueError, match="features"):
        LinUCB(3, 7).fit(x, quality, cost)
    with pytest.raises(ValueError, match="ridge"):
        LinUCB(3, 5, LinUCBConfig(ridge=0.0))


def test_fit_in_chunks_from_float32_is_the_float64_ridge_solution(monkeypatch: pytest.MonkeyPatch) -> None:
    """Features are widened to float64 chunk by chunk: many small chunks give the one-shot ridge fit."""
    x, quality, cost = linear_world(1000, d=6)
    x32 = x.astype(np.float32)
    x64 = x32.astype(np.float64)
    monkeypatch.setattr(linucb_statistics, "_CHUNK_BYTES", 8 * 50 * 12)  # 50 rows of [X | 3 quality | 3 cost] per chunk
    agent = LinUCB(3, 6, LinUCBConfig(ridge=0.5)).fit(x32, quality, cost)
    gram = x64.T @ x64 + 0.5 * np.eye(6)
    np.testing.assert_allclose(agent.gram[2], gram, rtol=1e-13)
    np.testing.assert_allclose(agent.theta_quality.T, np.linalg.solve(gram, x64.T @ quality), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(agent.theta_cost.T, np.linalg.solve(gram, x64.T @ cost), rtol=1e-10, atol=1e-14)
    actions = np.arange(len(x)) % 3
    rows = np.arange(len(x))
    bandit = LinUCB(3, 6).partial_fit(x32, quality[rows, actions], cost[rows, actions], actions=actions)
    arm = actions == 1
    np.testing.assert_allclose(bandit.gram[1], x64[arm].T @ x64[arm] + np.eye(6), rtol=1e-13)


def test_gram_inverse_is_formed_on_demand_and_follows_every_solve() -> None:
    """``fit`` solves for θ without inverting; A⁻¹ appears when the UCB bonus asks for it."""
    x, quality, cost = linear_world(600)
    agent = LinUCB(3, x.shape[1]).fit(x[:300], quality[:300], cost[:300])
    first = agent.gram_inverse.copy()
    np.testing.assert_allclose(first[1], np.linalg.inv(x[:300].T @ x[:300] + np.eye(x.shape[1])), rtol=1e-10)
    agent.partial_fit(x[300:], quality[300:], cost[300:])
    expected = np.linalg.inv(x.T @ x + np.eye(x.shape[1]))
    np.testing.assert_allclose(agent.gram_inverse, np.repeat(expected[None], 3, axis=0), rtol=1e-10)
    actions = np.arange(len(x)) % 3
    rows = np.arange(len(x))
    bandit = LinUCB(3, x.shape[1]).partial_fit(x, quality[rows, actions], cost[rows, actions], actions=actions)
    np.testing.assert_allclose(bandit.gram_inverse, np.linalg.inv(bandit.gram), rtol=1e-10)
    width = np.sqrt(np.einsum("nd,kde,ne->nk", x[:5], np.linalg.inv(bandit.gram), x[:5]))
    np.testing.assert_allclose(bandit.upper_confidence(x[:5], 0.0) - bandit.scores(x[:5], 0.0), width, rtol=1e-10)


def _blocks(n: int, cuts: tuple[int, ...]) -> list[slice]:
    return [slice(a, b) for a, b in itertools.pairwise([0, *cuts, n])]


def test_statistics_summed_over_blocks_equal_fit_on_all() -> None:
    x, quality, cost = linear_world(600)
    config = LinUCBConfig(ridge=2.0)
    whole = LinUCB(3, x.shape[1], config, cost_weight=50.0).fit(x, quality, cost)
    total = LinUCBStatistics.zeros(3, x.shape[1])
    for block in reversed(_blocks(len(x), (1, 150, 151, 420))):  # uneven blocks, summed out of order
        total = total + LinUCBStatistics.of(x[block], quality[block], cost[block])
    summed = linucb_from_statistics(total, config, cost_weight=50.0)
    np.testing.assert_allclose(summed.gram, whole.gram, rtol=1e-12)
    np.testing.assert_allclose(summed.linear_map(), whole.linear_map(), atol=1e-10)
    np.testing.assert_array_equal(summed.observations, whole.observations)
    assert summed.steps_done == whole.steps_done == len(x)  # the rows learned from, as fit counts them
    np.testing.assert_allclose(total.mean_quality(), quality.mean(axis=0))
    np.testing.assert_allclose(total.mean_cost(), cost.mean(axis=0))
    for weight in (0.0, 50.0, 1e4):
        np.testing.assert_array_equal(summed.predict(x, weight), whole.predict(x, weight))


def test_bandit_statistics_equal_partial_fit_with_actions() -> None:
    x, quality, cost = linear_world(600)
    actions = (np.arange(len(x)) * 7 % 5) % 3
    rows = np.arange(len(x))
    logged_q, logged_c = quality[rows, actions], cost[rows, actions]
    reference = LinUCB(3, x.shape[1]).partial_fit(x, logged_q, logged_c, actions=actions)
    total = LinUCBStatistics.of(x[:10], logged_q[:10], logged_c[:10], actions=actions[:10], n_models=3)
    total = total + LinUCBStatistics.of(x[10:], logged_q[10:], logged_c[10:], actions=actions[10:], n_models=3)
    agent = linucb_from_statistics(total)
    np.testing.assert_allclose(agent.linear_map(), reference.linear_map(), atol=1e-10)
    np.testing.assert_array_equal(agent.observations, reference.observations)
    assert agent.steps_done == reference.steps_done == len(x)
    lonely = LinUCBStatistics.of(x[:4], logged_q[:4], logged_c[:4], actions=np.zeros(4, dtype=np.int64), n_models=3)
    assert lonely.observations.tolist() == [4, 0, 0]
    assert np.isnan(lonely.mean_quality()[1])


def test_statistics_round_trip_through_arrays_and_reject_bad_shapes() -> None:
    x, quality, cost = linear_world(50)
    statistics = LinUCBStatistics.of(x, quality, cost)
    batch = statistics.as_arrays()
    assert batch["gram"].shape == (1, 3, 5, 5) and batch["gram"].dtype == np.float64
    again = LinUCBStatistics.from_arrays(batch)
    np.testing.assert_array_equal(again.target_cost, statistics.target_cost)
    with pytest.raises(ValueError, match="cannot add"):
        _ = statistics + LinUCBStatistics.zeros(3, 4)
    with pytest.raises(ValueError, match="n_models"):
        LinUCBStatistics.of(x, quality[:, 0], cost[:, 0], actions=np.zeros(50, dtype=np.int64))
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        LinUCBStatistics.of(x, quality[:10], cost[:10])


class SaveAt(Callback):
    """Writes the learner's checkpoint when its state is whole at ``step``."""

    def __init__(self, step: int, path: Path) -> None:
        super().__init__()
        self.step, self.path = step, path

    def on_training_start(self, learner: Agent) -> None:
        assert isinstance(learner, LinUCB)
        self.learner = learner

    def on_rollout_end(self, step: int, scalars: dict[str, float]) -> None:
        if step == self.step:
            write_checkpoint(self.path, {"learner": self.learner.state_dict()})
            self.theta = self.learner.theta_quality.copy(), self.learner.theta_cost.copy()


@pytest.mark.parametrize("kind", [LinUCB, LinTS])
def test_online_training_resumed_from_a_checkpoint_is_the_uninterrupted_run(kind: type[LinUCB], tmp_path: Path) -> None:
    """Statistics, θ, the environment's generator (and LinTS's draws) continue exactly; a budget's λ too."""
    x, quality, cost = linear_world(600)
    reward = RewardConfig(cost_weight=100.0, budget=BudgetConfig(budget=float(cost.mean())))
    task = TrainingTask(FeaturizedSplit(synthetic_log(quality, cost), x), reward=reward, learning="online",
                        online_steps=400, seed=3)
    saver = SaveAt(150, tmp_path / "mid.npz")
    whole = kind(3, x.shape[1]).train(task, [saver])
    resumed = kind(3, x.shape[1])
    resumed.load_state_dict(read_checkpoint(tmp_path / "mid.npz")["learner"])
    assert resumed.steps_done == 150 and resumed.observations.sum() == 150
    # θ as learned arm by arm (re-deriving it from A⁻¹ b differs in the last bits)
    np.testing.assert_array_equal(resumed.theta_quality, saver.theta[0])
    np.testing.assert_array_equal(resumed.theta_cost, saver.theta[1])
    resumed.train(task)
    assert resumed.steps_done == whole.steps_done == 400
    for name in ("gram", "gram_inverse", "target_quality", "target_cost", "theta_quality", "theta_cost"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name), err_msg=name)
    assert resumed.learned_cost_weight == whole.learned_cost_weight != 100.0  # λ̄ continued, not restarted
    fresh = kind(3, x.shape[1]).train(task)  # the same seed without the checkpoint: the same run
    np.testing.assert_array_equal(fresh.gram, whole.gram)


def test_fit_refuses_a_budget_it_cannot_learn() -> None:
    x, quality, cost = linear_world(50)
    reward = RewardConfig(budget=BudgetConfig(budget=1e-4))
    task = TrainingTask(FeaturizedSplit(synthetic_log(quality, cost), x), reward=reward)
    with pytest.raises(DataError, match="learning=online"):
        LinUCB(3, x.shape[1]).train(task)
