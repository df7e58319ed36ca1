"""PPO router: learns, one preference-conditioned model serves every weight, exports exactly, resumes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from agents.baselines import RandomRouter, SingleModelRouter
from agents.ppo import PPOConfig, PPORouter
from data.featurizer import FeaturizerConfig, TextFeaturizer
from data.routing_log import RoutingLog
from data.synth import SynthConfig, generate
from envs.rewards import BudgetConfig, PreferenceConfig
from policies.export import PolicyMetadata, build_text_policy, save_policy

WEIGHTS = (100.0, 1000.0, 4000.0)  # where the synthetic models' trade-offs lie
CONFIG = PPOConfig(total_steps=81_920, eval_every=10_000, patience=4,
                   preference=PreferenceConfig(low=10.0, high=10_000.0, zero_share=0.1))

FRESH_PROCESS = r"""
import json, sys
import torch
policy = torch.jit.load(sys.argv[1])
request = json.load(open(sys.argv[2], encoding="utf-8"))
print(json.dumps({str(w): policy.route(request["queries"], w) for w in request["weights"]}))
"""


@dataclass(frozen=True)
class World:
    """A synthetic full-information log split in train / validation / test, with text features."""

    featurizer: TextFeaturizer
    parts: dict[str, tuple[RoutingLog, np.ndarray]]


@pytest.fixture(scope="module")
def world() -> World:
    synth = generate(SynthConfig(queries=3000, models=5, seed=0))
    log = RoutingLog(models=tuple(synth.model_names), query_ids=np.array(synth.query_ids, dtype=object),
                     queries=synth.queries, quality=synth.expected_quality, cost=synth.cost)
    index = {"train": np.arange(0, 1800), "validation": np.arange(1800, 2100), "test": np.arange(2100, 3000)}
    train = log.subset(index["train"])
    featurizer = TextFeaturizer(FeaturizerConfig(components=8)).fit(train.queries)
    parts = {name: (log.subset(rows), featurizer.transform(log.subset(rows).queries))
             for name, rows in index.items()}
    return World(featurizer, parts)


def _fit(world: World, config: PPOConfig = CONFIG, callback=None) -> PPORouter:  # type: ignore[no-untyped-def]
    (train, x), (validation, val_x) = world.parts["train"], world.parts["validation"]
    return PPORouter(config, train.n_models, x.shape[1]).fit(
        x, train.quality, train.cost, val_x, validation.quality, validation.cost, callback=callback)


@pytest.fixture(scope="module")
def agent(world: World) -> PPORouter:
    return _fit(world)


def test_learns_to_beat_random_and_the_best_single_model(world: World, agent: PPORouter) -> None:
    train, _ = world.parts["train"]
    test, x = world.parts["test"]
    rows = np.arange(test.n_queries)
    for weight in WEIGHTS:
        reward = test.quality - weight * test.cost
        learned = reward[rows, agent.predict(x, weight)].mean()
        random = reward[rows, RandomRouter(test.n_models).predict(x)].mean()
        single = reward[rows, SingleModelRouter.best(train).predict(x, weight)].mean()
        assert learned > random + 0.05, f"w={weight}"
        assert learned > single, f"w={weight}: {learned:.4f} vs best single {single:.4f}"
    assert 0 < agent.best_step <= agent.steps_done <= CONFIG.total_steps + CONFIG.n_envs * CONFIG.n_steps


def test_one_conditioned_policy_spends_less_as_the_weight_rises(world: World, agent: PPORouter) -> None:
    test, x = world.parts["test"]
    rows = np.arange(test.n_queries)
    spent = [test.cost[rows, agent.predict(x, w)].mean() for w in (0.0, *WEIGHTS)]
    assert all(a > b for a, b in itertools.pairwise(spent)), spent


def test_exported_policy_routes_as_the_agent_in_a_fresh_process(world: World, agent: PPORouter,
                                                               tmp_path: Path) -> None:
    test, x = world.parts["test"]
    metadata = PolicyMetadata(models=list(test.models), default_cost_weight=WEIGHTS[0],
                              cost_weight_range=agent.cost_weight_range, score_kind=agent.score_kind,
                              agent=agent.name, featurizer={}, data_fingerprint="")
    module = build_text_policy(world.featurizer, agent.linear_map(), agent.head(), metadata)
    save_policy(module, metadata, tmp_path / "policy.pt")
    above = 10 * CONFIG.preference.high
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"queries": test.queries, "weights": [*WEIGHTS, above]}), encoding="utf-8")
    command = [sys.executable, "-I", "-c", FRESH_PROCESS, str(tmp_path / "policy.pt"), str(request)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    routes = json.loads(done.stdout)
    for weight in WEIGHTS:
        assert routes[str(weight)] == [test.models[i] for i in agent.predict(x, weight)], f"w={weight}"
    assert len({tuple(r) for r in routes.values()}) >= 3  # the weight changes the decisions
    at_high = agent.predict(x, CONFIG.preference.high)
    np.testing.assert_array_equal(agent.predict(x, above), at_high)  # clamped into [0, high]
    assert routes[str(above)] == [test.models[i] for i in at_high]
    assert agent.score_kind == "logit" and agent.cost_weight_range == [0.0, CONFIG.preference.high]


def test_same_seed_same_policy(world: World, agent: PPORouter) -> None:
    _, x = world.parts["test"]
    again = _fit(world)
    np.testing.assert_array_equal(again.linear_map(), agent.linear_map())
    np.testing.assert_array_equal(again.scores(x, 300.0), agent.scores(x, 300.0))
    assert again.best_step == agent.best_step


def test_checkpoint_round_trip_and_resume(world: World, tmp_path: Path) -> None:
    (train, x), (_, test_x) = world.parts["train"], world.parts["test"]
    config = PPOConfig(total_steps=4096, n_envs=32, n_steps=16, preference=CONFIG.preference)
    seen: list[int] = []
    reports: list[dict[str, float]] = []

    def checkpoint(step: int, scalars: dict[str, float]) -> None:
        seen.append(step)
        reports.append(scalars)
        if step == 1024:
            interrupted.save(tmp_path / "mid.zip")

    interrupted = PPORouter(config, train.n_models, x.shape[1])
    interrupted.fit(x, train.quality, train.cost, callback=checkpoint)
    assert seen == [512, 1024, 1536, 2048, 2560, 3072, 3584, 4096]
    assert {"losses/policy_gradient_loss", "losses/value_loss", "losses/entropy_loss",
            "charts/train_reward"} <= set(reports[-1])
    interrupted.save(tmp_path / "final.zip")
    restored = PPORouter(config, train.n_models, x.shape[1]).load(tmp_path / "final.zip")
    np.testing.assert_array_equal(restored.scores(test_x, 500.0), interrupted.scores(test_x, 500.0))
    assert (restored.steps_done, restored.best_step) == (4096, 4096)
    # no validation: the parameters kept are the last ones, so the current policy decides the same
    np.testing.assert_array_equal(restored.predict_current(test_x, 500.0), restored.predict(test_x, 500.0))

    resumed = PPORouter(config, train.n_models, x.shape[1]).load(tmp_path / "mid.zip")
    assert resumed.steps_done == 1024
    resumed.fit(x, train.quality, train.cost)
    assert resumed.steps_done == 4096
    with pytest.raises(ValueError, match="another PPOConfig"):
        PPORouter(CONFIG, train.n_models, x.shape[1]).load(tmp_path / "final.zip")
    assert not list(tmp_path.glob(".checkpoint-*"))  # no temporary files left behind


@pytest.mark.slow
def test_budget_ppo_spends_the_budget_on_held_out_queries() -> None:
    """PPO under the environment's budget reward: the greedy policy at λ̄ spends B ± 5 % on test.

    The setting of the LinUCB budget test (tests/test_envs_routing.py): synthetic full-information
    data (5 models, graded quality = expected quality), 20,000 training and 20,000 test queries,
    B = cheapest + 0.2 × (dearest − cheapest) of the models' mean training costs.
    """
    synth = generate(SynthConfig(queries=40_000, models=5, seed=1))
    log = RoutingLog(models=tuple(synth.model_names), query_ids=np.array(synth.query_ids, dtype=object),
                     queries=synth.queries, quality=synth.expected_quality, cost=synth.cost)
    train, test = log.subset(np.arange(20_000)), log.subset(np.arange(20_000, 40_000))
    featurizer = TextFeaturizer(FeaturizerConfig(components=16, fit_sample=3000)).fit(train.queries)
    x, test_x = featurizer.transform(train.queries), featurizer.transform(test.queries)
    mean_cost = train.cost.mean(axis=0)
    budget = mean_cost.min() + 0.2 * (mean_cost.max() - mean_cost.min())
    weights: list[float] = []
    agent = PPORouter(CONFIG, train.n_models, x.shape[1], cost_weight=30.0, budget=BudgetConfig(budget=budget))
    agent.fit(x, train.quality, train.cost,
              callback=lambda step, scalars: weights.append(agent.multiplier.value))  # type: ignore[union-attr]
    assert len(weights) == 80 and len(set(weights)) > 50  # one λ per rollout, and it moved
    assert agent.multiplier is not None and agent.cost_weight == agent.multiplier.average > 30.0
    rows = np.arange(test.n_queries)
    spent = test.cost[rows, agent.predict(test_x)].mean()  # predict's default weight is λ̄
    assert abs(spent - budget) <= 0.05 * budget, f"test cost {spent:.3e} vs budget {budget:.3e}"


def test_budget_checkpoint_keeps_the_multiplier(world: World, tmp_path: Path) -> None:
    (train, x), _ = world.parts["train"], world.parts["test"]
    config = PPOConfig(total_steps=2048, n_envs=32, n_steps=16, preference=CONFIG.preference)
    budget = BudgetConfig(budget=float(train.cost.mean()))
    first = PPORouter(config, train.n_models, x.shape[1], cost_weight=30.0, budget=budget)

    def checkpoint(step: int, scalars: dict[str, float]) -> None:
        if step == 1024:
            first.save(tmp_path / "mid.zip")

    first.fit(x, train.quality, train.cost, callback=checkpoint)
    assert first.multiplier is not None and first.multiplier.steps == 2048 and first.multiplier.updates == 64
    resumed = PPORouter(config, train.n_models, x.shape[1], cost_weight=30.0, budget=budget).load(tmp_path / "mid.zip")
    assert resumed.multiplier is not None and resumed.multiplier.steps == 1024
    saved_value = resumed.multiplier.value
    resumed.fit(x, train.quality, train.cost)
    assert resumed.steps_done == 2048 and resumed.multiplier.steps == 2048  # continued, not restarted at 30
    assert resumed.multiplier.value != saved_value and resumed.cost_weight == resumed.multiplier.average
    with pytest.raises(ValueError, match="another budget"):
        PPORouter(config, train.n_models, x.shape[1]).load(tmp_path / "mid.zip")
