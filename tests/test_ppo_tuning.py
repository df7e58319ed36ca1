"""PPO's settings tuned on validation within a time budget (training/ppo_tuning.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import training.ppo_tuning as ppo_tuning
from agents.base import FeaturizedSplit
from agents.ppo import PPOConfig
from envs.rewards import BudgetConfig, RewardConfig
from training.config import AgentConfig, RunConfig
from training.ppo_tuning import Axis, tune_ppo

#: A few rollouts of a small network: enough to learn a one-feature rule, in about a second.
TINY = PPOConfig(total_steps=2048, n_envs=16, n_steps=16, batch_size=64, eval_every=512, patience=0, hidden=(16,))
#: A learning rate too small to learn anything in 2,048 episodes, and one that learns the rule.
FROZEN, LEARNING = 1e-6, 3e-3
GRID = (Axis("learning_rate", (FROZEN, LEARNING)), Axis("ent_coef", (0.0, 0.003)))


def _sign_world(n: int, rng: np.random.Generator) -> FeaturizedSplit:
    """Two models at the same cost: model 0 answers the queries whose first feature is positive, model 1 the others."""
    x = np.hstack([rng.standard_normal((n, 2)), np.ones((n, 1))])
    quality = np.stack([x[:, 0] > 0, x[:, 0] <= 0], axis=1).astype(float)
    return FeaturizedSplit.of(x, quality, np.full((n, 2), 1e-4))


def _config(ppo: PPOConfig, reward: RewardConfig | None = None) -> RunConfig:
    return RunConfig(agent=AgentConfig(kind="ppo", ppo=ppo), reward=reward or RewardConfig(cost_weight=30.0))


@pytest.fixture(scope="module")
def splits() -> tuple[FeaturizedSplit, FeaturizedSplit]:
    rng = np.random.default_rng(0)
    return _sign_world(400, rng), _sign_world(200, rng)


@pytest.fixture(scope="module")
def tuned(splits: tuple[FeaturizedSplit, FeaturizedSplit]) -> tuple[PPOConfig, dict[str, Any]]:
    """The search from a configuration that cannot learn (its learning rate is ``FROZEN``)."""
    return tune_ppo(_config(replace(TINY, learning_rate=FROZEN)), *splits, 600.0, grid=GRID)


def test_tuning_picks_the_learning_rate_that_learns(tuned: tuple[PPOConfig, dict[str, Any]]) -> None:
    chosen, report = tuned
    assert chosen.learning_rate == LEARNING
    scores = {trial["settings"]["learning_rate"]: trial["score"] for trial in report["trials"][:2]}
    assert scores[LEARNING] > 0.8 > scores[FROZEN] + 0.4  # the oracle gap closed on validation
    learned = report["trials"][1]
    assert learned["accepted"] and learned["improvement"] > 5 * learned["standard_error"]
    assert report["chosen"] == {"learning_rate": LEARNING, "ent_coef": chosen.ent_coef}
    assert chosen.total_steps == TINY.total_steps and report["steps_per_candidate"] == TINY.total_steps


def test_tuning_is_deterministic_for_a_seed(splits: tuple[FeaturizedSplit, FeaturizedSplit],
                                            tuned: tuple[PPOConfig, dict[str, Any]]) -> None:
    chosen, report = tuned
    again, again_report = tune_ppo(_config(replace(TINY, learning_rate=FROZEN)), *splits,
                                   600.0, grid=GRID)
    assert again == chosen
    strip = [{key: value for key, value in trial.items() if key != "seconds"} for trial in report["trials"]]
    assert len(strip) == 3  # the given configuration, the other learning rate, the other entropy coefficient
    assert [{key: value for key, value in trial.items() if key != "seconds"}
            for trial in again_report["trials"]] == strip


def test_tuning_starts_no_candidate_once_its_seconds_are_spent(monkeypatch: pytest.MonkeyPatch,
                                                              splits: tuple[FeaturizedSplit, FeaturizedSplit]) -> None:
    """Each candidate takes 10 s of a fake clock: a 25 s budget starts three of the five, in the search's order."""
    now = [0.0]
    scores = {0.001: 0.5, 0.0003: 0.4, 0.003: 0.6}  # by learning rate; the entropy axis is not reached

    def trial(config: RunConfig, candidate: PPOConfig, train: FeaturizedSplit,
              validation: FeaturizedSplit) -> tuple[np.ndarray, int | None, int]:
        now[0] += 10.0
        return np.full(validation.log.n_queries, scores[candidate.learning_rate]), None, candidate.total_steps

    monkeypatch.setattr(ppo_tuning, "_trial", trial)
    grid = (Axis("learning_rate", (3e-4, 1e-3, 3e-3)), Axis("ent_coef", (0.003, 0.01, 0.03)))
    chosen, report = tune_ppo(_config(TINY), *splits, 25.0, grid=grid, clock=lambda: now[0])
    assert [trial["settings"]["learning_rate"] for trial in report["trials"]] == [1e-3, 3e-4, 3e-3]
    assert report["not_reached"] == 2 and report["seconds_used"] == 30.0
    assert chosen.learning_rate == 3e-3 and chosen.ent_coef == TINY.ent_coef
    nothing, empty = tune_ppo(_config(TINY), *splits, 0.0, grid=grid, clock=lambda: now[0])
    assert nothing == TINY and empty["trials"] == [] and empty["not_reached"] == 5


def test_tuning_under_a_budget_keeps_the_given_settings(splits: tuple[FeaturizedSplit, FeaturizedSplit]) -> None:
    reward = RewardConfig(cost_weight=30.0, budget=BudgetConfig(budget=1e-4))
    given = PPOConfig(total_steps=2048, n_envs=16, n_steps=16)  # early stopping's settings unread under a budget
    chosen, report = tune_ppo(_config(given, reward), *splits, 600.0, grid=GRID)
    assert chosen == given and report["trials"] == [] and "reward.budget" in report["skipped"]


def test_tuning_keeps_the_given_settings_unless_the_gain_exceeds_two_standard_errors(
        monkeypatch: pytest.MonkeyPatch, splits: tuple[FeaturizedSplit, FeaturizedSplit]) -> None:
    """Per-query shares spread by 0.3 (standard error 0.021 over 200 queries): 3e-4 gains 0.03, 3e-3 gains 0.1."""
    noise = np.random.default_rng(1).normal(0.0, 0.3, splits[1].log.n_queries)
    noise -= noise.mean()
    shares = {1e-3: np.full(len(noise), 0.5), 3e-4: 0.53 + noise, 3e-3: 0.6 + noise}

    def trial(config: RunConfig, candidate: PPOConfig, train: FeaturizedSplit,
              validation: FeaturizedSplit) -> tuple[np.ndarray, int | None, int]:
        return shares[candidate.learning_rate], None, candidate.total_steps

    monkeypatch.setattr(ppo_tuning, "_trial", trial)
    noisy = (Axis("learning_rate", (3e-4, 1e-3)),)
    chosen, report = tune_ppo(_config(TINY), *splits, 600.0, grid=noisy)
    assert chosen == TINY and [trial["accepted"] for trial in report["trials"]] == [True, False]
    assert report["trials"][1]["score"] > report["trials"][0]["score"]  # higher, but within two standard errors
    clear = (Axis("learning_rate", (3e-4, 1e-3, 3e-3)),)
    chosen, report = tune_ppo(_config(TINY), *splits, 600.0, grid=clear)
    assert chosen.learning_rate == 3e-3 and [trial["accepted"] for trial in report["trials"]] == [True, False, True]
