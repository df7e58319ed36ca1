"""PPO router: learns, one preference-conditioned model serves every weight, exports exactly, resumes."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_isolated

from agents.base import FeaturizedSplit, TrainingTask
from agents.baselines import RandomRouter, SingleModelRouter
from agents.callbacks import Callback, KeepBest, Outcomes
from agents.ppo import DERIVED_ZERO_SHARE, PPOConfig, PPORouter
from data.featurizer import FeaturizerConfig, TextFeaturizer
from data.outputs import is_temporary
from data.routing_log import RoutingLog
from data.schema import DataError
from data.synth import SynthConfig, generate
from envs.rewards import BudgetConfig, PreferenceConfig, RewardConfig, break_even_weights, trade_off_span
from evaluation.frontier import cost_weight_grid
from policies.export import PolicyMetadata, build_text_policy, save_policy
from training.checkpoints import read_checkpoint, write_checkpoint
from training.tensorboard import TensorBoardCallback

# Where the synthetic models' trade-offs lie: the single models' break-even weights on the
# training part are 91, 217, 1034 and 1993 (above ~2000 the cheapest model is the best single).
WEIGHTS = (100.0, 1000.0, 2000.0)
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
    log = synth.routing_log(expected=True)
    index = {"train": np.arange(0, 1800), "validation": np.arange(1800, 2100), "test": np.arange(2100, 3000)}
    train = log.subset(index["train"])
    featurizer = TextFeaturizer(FeaturizerConfig(components=8)).fit(train.queries)
    parts = {name: (log.subset(rows), featurizer.transform(log.subset(rows).queries))
             for name, rows in index.items()}
    return World(featurizer, parts)


class Rollouts(Callback):
    """Calls ``each(step, scalars)`` at every whole state (after each rollout's update)."""

    def __init__(self, each: Callable[[int, dict[str, float]], None]) -> None:
        super().__init__()
        self.each = each

    def on_rollout_end(self, step: int, scalars: dict[str, float]) -> None:
        self.each(step, scalars)


def _fit(world: World, config: PPOConfig = CONFIG) -> tuple[PPORouter, KeepBest]:
    """PPO trained on the training part with keep-best and early stopping on the validation part."""
    (train, x), (validation, val_x) = world.parts["train"], world.parts["validation"]
    keep_best = KeepBest(FeaturizedSplit(validation, val_x), every=5000)  # PPO's rule says every eval_every steps
    agent = PPORouter(train.n_models, x.shape[1], config)
    agent.train(TrainingTask(FeaturizedSplit(train, x), FeaturizedSplit(validation, val_x)), [keep_best])
    return agent, keep_best


@pytest.fixture(scope="module")
def trained(world: World) -> tuple[PPORouter, KeepBest]:
    return _fit(world)


@pytest.fixture(scope="module")
def agent(trained: tuple[PPORouter, KeepBest]) -> PPORouter:
    return trained[0]


def test_learns_to_beat_random_and_the_best_single_model(world: World, agent: PPORouter,
                                                         trained: tuple[PPORouter, KeepBest]) -> None:
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
    best_step = trained[1].best_step
    assert best_step is not None and 0 < best_step <= agent.steps_done <= CONFIG.total_steps


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
    done = run_isolated(FRESH_PROCESS, str(tmp_path / "policy.pt"), str(request), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    routes = json.loads(done.stdout)
    for weight in WEIGHTS:
        assert routes[str(weight)] == [test.models[i] for i in agent.predict(x, weight)], f"w={weight}"
    assert len({tuple(r) for r in routes.values()}) >= 3  # the weight changes the decisions
    at_high = agent.predict(x, CONFIG.preference.high)
    np.testing.assert_array_equal(agent.predict(x, above), at_high)  # clamped into [0, high]
    assert routes[str(above)] == [test.models[i] for i in at_high]
    assert agent.score_kind == "logit" and agent.cost_weight_range == [0.0, CONFIG.preference.high]


def test_same_seed_same_policy(world: World, trained: tuple[PPORouter, KeepBest]) -> None:
    _, x = world.parts["test"]
    agent, keep_best = trained
    again, again_kept = _fit(world)
    np.testing.assert_array_equal(again.linear_map(), agent.linear_map())
    np.testing.assert_array_equal(again.scores(x, 300.0), agent.scores(x, 300.0))
    assert again_kept.best_step == keep_best.best_step


def test_trade_off_span_covers_every_break_even_weight_and_is_the_frontier_sweeps() -> None:
    rng = np.random.default_rng(0)
    quality, cost = rng.uniform(0.4, 0.9, 8), rng.uniform(1e-5, 3e-4, 8)
    weights = break_even_weights(quality, cost)
    i, j = np.argmin(cost), np.argmax(quality)  # the cheapest and the best: one of the pairs (if they differ)
    assert len(weights) > 0 and ((quality[j] - quality[i]) / (cost[j] - cost[i]) in weights or i == j)
    low, high = trade_off_span(quality, cost)
    assert low == pytest.approx(weights.min() / 10) and high == pytest.approx(weights.max() * 10)
    grid = cost_weight_grid(quality, cost, points=41)
    assert grid[0] == 0.0 and grid[1] == pytest.approx(low) and grid[-1] == pytest.approx(high)
    dominant = trade_off_span(np.array([0.9, 0.5]), np.array([1e-4, 2e-4]))  # no trade-off: around 1 / max cost
    assert dominant == pytest.approx((500.0, 50_000.0))


def test_weight_range_comes_from_the_training_data_and_survives_a_checkpoint(world: World, tmp_path: Path) -> None:
    """Without ``preference`` PPO trains on the break-even span of its own data: costs 100× smaller,
    weights 100× larger; the exported head, the metadata's range and a checkpoint carry that range."""
    (train, x), (_, test_x) = world.parts["train"], world.parts["test"]
    config = PPOConfig(total_steps=1024, n_envs=32, n_steps=16)
    ranges = []
    for scale in (1.0, 0.01):
        agent = PPORouter(train.n_models, x.shape[1], config)
        agent.train(TrainingTask(FeaturizedSplit.of(x, train.quality, train.cost * scale)))
        weights = break_even_weights(train.quality.mean(axis=0), train.cost.mean(axis=0) * scale)
        low, high = agent.preference.low, agent.preference.high
        assert low <= weights.min() / 10 * 1.000001 and high >= weights.max() * 10 / 1.000001
        assert agent.cost_weight_range == [0.0, high] and agent.preference.zero_share == DERIVED_ZERO_SHARE
        head = agent.head()
        assert (head.low, head.high) == (low, high)
        assert agent.evaluation_weights()[[1, -1]] == pytest.approx([low, high])
        ranges.append((low, high))
    assert ranges[1] == pytest.approx((100 * ranges[0][0], 100 * ranges[0][1]))
    write_checkpoint(tmp_path / "derived.npz", {"learner": agent.state_dict()})
    restored = PPORouter(train.n_models, x.shape[1], config)
    restored.load_state_dict(read_checkpoint(tmp_path / "derived.npz")["learner"])
    assert restored.preference == agent.preference
    np.testing.assert_array_equal(restored.scores(test_x, 3e5), agent.scores(test_x, 3e5))


def test_an_explicit_preference_is_kept_whatever_the_data() -> None:
    x = np.hstack([np.random.default_rng(0).standard_normal((64, 2)), np.ones((64, 1))])
    quality, cost = np.tile([0.5, 0.8], (64, 1)), np.tile([1e-6, 1e-5], (64, 1))  # break-even 33,333
    agent = PPORouter(2, 3, PPOConfig(total_steps=512, n_envs=32, n_steps=16, preference=CONFIG.preference))
    agent.fit(x, quality, cost)
    assert agent.preference == CONFIG.preference and agent.cost_weight_range == [0.0, 10_000.0]
    assert agent.head().high == 10_000.0


class Scalars:
    """A stand-in for the TensorBoard writer: the scalars written, by step."""

    def __init__(self) -> None:
        self.written: dict[int, dict[str, float]] = {}

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self.written.setdefault(step, {}).update(scalars)


def test_checkpoint_round_trip_and_resume(world: World, tmp_path: Path) -> None:
    """A checkpoint holds the state of its step; a resumed run trains the remaining steps.

    A resumed PPO run has the uninterrupted run's number of steps but not its parameters: the
    environment's query stream restarts from a seed derived from the steps done (agents/ppo.py).
    """
    (train, x), (_, test_x) = world.parts["train"], world.parts["test"]
    config = PPOConfig(total_steps=4096, n_envs=32, n_steps=16, preference=CONFIG.preference)
    seen: list[int] = []
    next_rollout: dict[str, np.ndarray] = {}

    def checkpoint(step: int, scalars: dict[str, float]) -> None:
        seen.append(step)
        if step == 1024:
            write_checkpoint(tmp_path / "mid.npz", {"learner": interrupted.state_dict()})

    class NextRollout(Callback):  # the parameters that play the rollout after step 1024
        def on_step(self, step: int, outcomes: Outcomes) -> bool:
            if step == 1024 + config.n_envs:
                next_rollout.update(interrupted.parameters())
            return True

    interrupted = PPORouter(train.n_models, x.shape[1], config)
    scalars = Scalars()
    callbacks = [Rollouts(checkpoint), NextRollout(), TensorBoardCallback(scalars)]  # type: ignore[arg-type]
    interrupted.train(TrainingTask(FeaturizedSplit(train, x)), callbacks)
    assert seen == [512, 1024, 1536, 2048, 2560, 3072, 3584, 4096]
    assert {"losses/policy_gradient_loss", "losses/value_loss", "losses/entropy_loss",
            "charts/train_reward"} <= set(scalars.written[4096])
    assert interrupted.steps_done == 4096
    write_checkpoint(tmp_path / "final.npz", {"learner": interrupted.state_dict()})
    restored = PPORouter(train.n_models, x.shape[1], config)
    restored.load_state_dict(read_checkpoint(tmp_path / "final.npz")["learner"])
    np.testing.assert_array_equal(restored.scores(test_x, 500.0), interrupted.scores(test_x, 500.0))
    assert restored.steps_done == 4096
    # no keep-best: the parameters kept are the last ones, so the current policy decides the same
    np.testing.assert_array_equal(restored.predict_current(test_x, 500.0), restored.predict(test_x, 500.0))

    resumed = PPORouter(train.n_models, x.shape[1], config)
    resumed.load_state_dict(read_checkpoint(tmp_path / "mid.npz")["learner"])
    assert resumed.steps_done == 1024
    for name, value in resumed.parameters().items():  # the checkpoint holds the update of steps 513-1024
        np.testing.assert_array_equal(value, next_rollout[name], err_msg=name)
    resumed.train(TrainingTask(FeaturizedSplit(train, x)))
    assert resumed.steps_done == 4096
    with pytest.raises(DataError, match=r"other agent\.ppo settings: total_steps 4096 → 81920, n_envs 32 → 64"):
        final = read_checkpoint(tmp_path / "final.npz")["learner"]
        PPORouter(train.n_models, x.shape[1], CONFIG).load_state_dict(final)
    assert not [entry for entry in tmp_path.iterdir() if is_temporary(entry.name)]  # no temporary file left


@pytest.mark.slow
def test_budget_ppo_spends_the_budget_on_held_out_queries() -> None:
    """PPO under the environment's budget reward: the greedy policy at λ̄ spends B ± 5 % on test.

    The setting of the LinUCB budget test (tests/test_envs_routing.py): synthetic full-information
    data (5 models, graded quality = expected quality), 20,000 training and 20,000 test queries,
    B = cheapest + 0.15 × (dearest − cheapest) of the models' mean training costs.
    """
    synth = generate(SynthConfig(queries=40_000, models=5, seed=1))
    log = synth.routing_log(expected=True)
    train, test = log.subset(np.arange(20_000)), log.subset(np.arange(20_000, 40_000))
    featurizer = TextFeaturizer(FeaturizerConfig(components=16, fit_sample=3000)).fit(train.queries)
    x, test_x = featurizer.transform(train.queries), featurizer.transform(test.queries)
    mean_cost = train.cost.mean(axis=0)
    budget = mean_cost.min() + 0.15 * (mean_cost.max() - mean_cost.min())
    weights: list[float] = []
    agent = PPORouter(train.n_models, x.shape[1], CONFIG, cost_weight=30.0)
    reward = RewardConfig(cost_weight=30.0, budget=BudgetConfig(budget=budget))
    agent.train(TrainingTask(FeaturizedSplit(train, x), reward=reward),
                [Rollouts(lambda step, scalars: weights.append(agent.multiplier.value))])  # type: ignore[union-attr]
    assert len(weights) == 80 and len(set(weights)) > 50  # one λ per rollout, and it moved
    assert agent.multiplier is not None and agent.cost_weight == agent.multiplier.average > 30.0
    rows = np.arange(test.n_queries)
    spent = test.cost[rows, agent.predict(test_x)].mean()  # predict's default weight is λ̄
    assert abs(spent - budget) <= 0.05 * budget, f"test cost {spent:.3e} vs budget {budget:.3e}"


def test_budget_checkpoint_keeps_the_multiplier(world: World, tmp_path: Path) -> None:
    (train, x), _ = world.parts["train"], world.parts["test"]
    config = PPOConfig(total_steps=2048, n_envs=32, n_steps=16, preference=CONFIG.preference)
    reward = RewardConfig(cost_weight=30.0, budget=BudgetConfig(budget=float(train.cost.mean())))
    first = PPORouter(train.n_models, x.shape[1], config, cost_weight=30.0)

    def checkpoint(step: int, scalars: dict[str, float]) -> None:
        if step == 1024:
            write_checkpoint(tmp_path / "mid.npz", {"learner": first.state_dict()})

    first.train(TrainingTask(FeaturizedSplit(train, x), reward=reward), [Rollouts(checkpoint)])
    assert first.multiplier is not None and first.multiplier.steps == 2048 and first.multiplier.updates == 64
    saved = read_checkpoint(tmp_path / "mid.npz")["learner"]
    resumed = PPORouter(train.n_models, x.shape[1], config, cost_weight=30.0)
    resumed.load_state_dict(saved)
    assert resumed.multiplier is not None and resumed.multiplier.steps == 1024
    saved_value = resumed.multiplier.value
    resumed.train(TrainingTask(FeaturizedSplit(train, x), reward=reward))
    assert resumed.steps_done == 2048 and resumed.multiplier.steps == 2048  # continued, not restarted at 30
    assert resumed.multiplier.value != saved_value and resumed.cost_weight == resumed.multiplier.average
    other = PPORouter(train.n_models, x.shape[1], config)
    other.load_state_dict(saved)
    with pytest.raises(DataError, match=r"cannot resume: the checkpoint was written with reward\.budget"):
        other.train(TrainingTask(FeaturizedSplit(train, x)))


def test_exported_costs_are_each_models_mean_training_cost(world: World, agent: PPORouter) -> None:
    train, _ = world.parts["train"]
    test, _ = world.parts["test"]
    metadata = PolicyMetadata(models=list(test.models), default_cost_weight=WEIGHTS[0],
                              cost_weight_range=agent.cost_weight_range, score_kind=agent.score_kind,
                              agent=agent.name, featurizer={}, data_fingerprint="")
    module = build_text_policy(world.featurizer, agent.linear_map(), agent.head(), metadata)
    costs = module.costs(test.queries[:20]).numpy()
    np.testing.assert_allclose(costs, np.tile(train.cost.mean(axis=0), (20, 1)), rtol=1e-6)
    scores, paired = module.scores_costs(test.queries[:20], WEIGHTS[0]).tensor_split(2, dim=1)
    assert torch.equal(scores, module.scores(test.queries[:20], WEIGHTS[0])) and np.array_equal(paired.numpy(), costs)
