"""LinTS: Thompson sampling on LinUCB's statistics (the direct method is LinUCB's fit: tests/test_linucb.py)."""

from __future__ import annotations

import numpy as np
from conftest import linear_world, synthetic_log

from agents.baselines import RandomRouter
from agents.lints import LinTS, LinTSConfig
from agents.linucb import LinUCB
from envs.routing_env import RoutingEnv
from policies.heads import UtilityHead


def _env(x: np.ndarray, quality: np.ndarray, cost: np.ndarray, weight: float) -> RoutingEnv:
    return RoutingEnv(synthetic_log(quality, cost), x.astype(np.float32), weight)


def test_lints_learns_online_and_beats_random() -> None:
    """Learned online on 800 queries, scored on 800 others of the same world (never learned from)."""
    x_all, quality_all, cost_all = linear_world(1600)
    x, quality, cost = x_all[:800], quality_all[:800], cost_all[:800]
    held_x, held_quality, held_cost = x_all[800:], quality_all[800:], cost_all[800:]
    weight = 200.0
    agent = LinTS(3, x.shape[1], LinTSConfig(scale=0.25)).learn(_env(x, quality, cost, weight), 1500, seed=0)
    assert agent.observations.sum() == 1500 and (agent.observations > 0).all()
    rewards, rows = held_quality - weight * held_cost, np.arange(len(held_x))
    learned = rewards[rows, agent.predict(held_x, weight)].mean()
    random = rewards[rows, RandomRouter(3).predict(held_x)].mean()
    fitted = rewards[rows, LinUCB(3, x.shape[1]).fit(x, quality, cost).predict(held_x, weight)].mean()
    assert learned > random + 0.05
    assert learned > fitted - 0.02  # one arm at a time nearly matches the full-information fit
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

