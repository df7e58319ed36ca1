"""The learned cascade: the batched environment, MaskablePPO on it, its export and its command.

On a log where the cheap model hedges exactly when it is wrong (:func:`conftest.revealing_cascade_log`)
PPO learns the oracle cascade (call the cheap model, escalate exactly when it hedges) at a moderate
cost weight and never escalates at a large one; greedy rollouts take only valid actions; a seed
repeats a run; the exported file decides as the agent in a fresh process; bad input is one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import CASCADE_COSTS, revealing_cascade_log, run_isolated, run_python
from sb3_contrib.common.maskable.utils import get_action_masks

from agents.cascade_ppo import CascadePPO, CascadePPOConfig, CascadeShaping
from data.featurizer import FeaturizerConfig, TextFeaturizer
from envs.cascade_env import CascadeConfig
from envs.cascade_vec_env import CascadeData, CascadeVecEnv
from envs.rewards import RewardConfig
from policies.artifact import PolicyError, load_policy
from policies.cascade_policy import build_cascade_policy, cascade_metadata, save_cascade_policy
from policies.export import PolicyMetadata
from policies.response_features import response_table
from training.cascade import LEARNED, main

K = 3
#: A run of a few seconds: 32 episodes per step, rollouts of 1,024 steps.
SMALL: dict[str, Any] = {
    "n_envs": 32, "n_steps": 32, "batch_size": 256, "hidden": (64,), "eval_every": 4096, "patience": 4
}


def _data(n: int, seed: int, featurizer: TextFeaturizer | None = None) -> tuple[CascadeData, np.ndarray]:
    """The revealing log as a cascade learns from it: text features when a featurizer is given, else noise."""
    log, responses = revealing_cascade_log(n, seed)
    table = response_table(responses)
    if featurizer is None:
        features = np.random.default_rng(seed).standard_normal((n, 3))
    else:
        features = featurizer.transform(log.queries)
    return CascadeData(log, features, table.features, table.agreement), responses


def _cascade_utilities(data: CascadeData, weight: float) -> dict[str, float]:
    """Mean utility of the cascades that matter here: each model alone, and the cheap model escalated to the
    mid or the strong one exactly where it hedges (the best of them is the best cascade the answers allow)."""
    quality, hedged = data.log.quality, data.log.quality[:, 0] == 0
    utilities = {model: float(np.mean(quality[:, k] - weight * CASCADE_COSTS[k])) for k, model in
                 enumerate(data.log.models)}
    for k, model in ((1, "mid"), (2, "strong")):
        answer = np.where(hedged, quality[:, k], quality[:, 0])
        cost = CASCADE_COSTS[0] + hedged * CASCADE_COSTS[k]
        utilities[f"cheap, {model} after a hedge"] = float(np.mean(answer - weight * cost))
    return utilities


@pytest.fixture(scope="module")
def learned() -> tuple[CascadePPO, CascadeData]:
    """PPO trained on the revealing log (noise features), early stopping on its validation queries; the test queries.

    With (b)'s ``stakes`` scale and a weight gain of 4 (agents/cascade_ppo.py): with the default spread the
    actor never learns to stop escalating to the mid model above its break-even weight (1500).
    """
    train, validation, test = _data(600, 0)[0], _data(200, 1)[0], _data(600, 2)[0]
    config = CascadePPOConfig(total_steps=32_768, warm_start_steps=0, reward_scale="stakes", weight_gain=4.0, **SMALL)
    return CascadePPO(config).train(train, validation), test


def _vec_env(n_envs: int = 4, seed: int = 0) -> CascadeVecEnv:
    data = _data(20, 5)[0]
    task = data.task(RewardConfig(cost_weight=10.0), CascadeConfig(max_calls=2))
    return CascadeVecEnv(task, n_envs, seed=seed)


def test_vec_env_steps_episodes_of_different_lengths_and_resets_those_that_end() -> None:
    env = _vec_env()
    env.reset()
    _, reward, dones, _ = env.step(np.array([0, 2, 0, 1]))  # every episode calls a model first
    assert not dones.any() and (reward == 0).all()
    rows = env.last_rows.copy()  # the queries being played
    _, reward, dones, _ = env.step(np.array([K + 0, 1, K + 0, K + 2]))  # stop, call, stop, invalid stop
    assert dones.tolist() == [True, False, True, True]
    task = env.task
    quality, cost = task.quality[rows], task.cost[rows]
    assert reward[0] == pytest.approx(quality[0, 0] - 10.0 * cost[0, 0])
    assert reward[1] == 0.0
    assert reward[3] == pytest.approx(-1.0 - 10.0 * cost[3, 1])  # no answer: quality 0, the penalty, the call paid
    assert env.last_invalid.tolist() == [False, False, True]
    masks = env.action_masks()
    assert masks[[0, 2, 3]].tolist() == [[True] * K + [False] * K] * 3  # fresh episodes: only calls
    assert masks[1].tolist() == [False, False, False, False, True, True]  # two calls made: only their returns
    _, reward, dones, _ = env.step(np.array([0, K + 1, 0, 0]))
    assert dones[1] and reward[1] == pytest.approx(quality[1, 1] - 10.0 * (cost[1, 1] + cost[1, 2]))


def test_maskable_ppo_gets_one_mask_row_per_episode_through_wrappers() -> None:
    env = _vec_env(n_envs=5)
    env.reset()
    shaped = CascadeShaping(env, True, None, np.zeros(env.task.dimension), np.ones(env.task.dimension))
    for venv in (env, shaped):
        masks = get_action_masks(venv)
        assert masks.shape == (5, 2 * K) and (masks == env.action_masks()).all()


@pytest.mark.parametrize(("weight", "escalation"), [(20.0, 2), (300.0, 1)])
def test_ppo_escalates_exactly_when_the_cheap_answer_hedges(
    learned: tuple[CascadePPO, CascadeData], weight: float, escalation: int
) -> None:
    """The best cascade calls the cheap model, then after a hedge the strong one (w = 20) or the mid one
    (w = 300, where the strong one costs more than its answer is worth); the learned greedy cascade does
    so on at least 95% of the held-out queries, within 0.02 of the best cascade's mean utility."""
    agent, test = learned
    decisions = agent.decide(test, weight)
    hedged = test.log.quality[:, 0] == 0
    assert (decisions.calls[:, 0] == 0).mean() >= 0.95
    assert (decisions.calls[hedged, 1] == escalation).mean() >= 0.95 and decisions.called[~hedged, 1:].mean() <= 0.05
    rows = np.arange(test.log.n_queries)
    utility = test.log.quality[rows, decisions.returned] - weight * (decisions.called * CASCADE_COSTS).sum(axis=1)
    utilities = _cascade_utilities(test, weight)
    assert max(utilities, key=utilities.__getitem__) == f"cheap, {test.log.models[escalation]} after a hedge"
    assert utility.mean() >= utilities[f"cheap, {test.log.models[escalation]} after a hedge"] - 0.02


def test_ppo_never_escalates_at_a_large_cost_weight(learned: tuple[CascadePPO, CascadeData]) -> None:
    """At w = 3000 an escalation costs more than any answer is worth (0.75 / 5e-4 = 1500 for the mid model)."""
    agent, test = learned
    decisions = agent.decide(test, 3000.0)
    assert (decisions.n_calls == 1).all() and (decisions.returned == 0).all()
    utilities = _cascade_utilities(test, 3000.0)
    assert max(utilities, key=utilities.__getitem__) == "cheap"


def test_greedy_rollouts_take_only_valid_actions(learned: tuple[CascadePPO, CascadeData]) -> None:
    agent, test = learned
    for weight in (0.0, 20.0, 300.0, 3000.0):
        decisions = agent.decide(test, weight)
        assert decisions.called[np.arange(test.log.n_queries), decisions.returned].all()
        made = decisions.calls >= 0
        assert (made.sum(axis=1) == decisions.n_calls).all() and (decisions.n_calls <= agent.max_calls).all()
    assert agent.model is not None  # the SB3 policy itself, stepped on the environment with its masks
    env = CascadeVecEnv(agent.task(test), 64, seed=3)
    shaped = CascadeShaping(env, True, None, agent.mean, agent.scale)
    observations = np.asarray(shaped.reset())
    for _ in range(20):
        masks = env.action_masks()
        actions, _ = agent.model.predict(observations, action_masks=masks, deterministic=True)
        assert masks[np.arange(64), actions].all()
        observations = np.asarray(shaped.step(actions)[0])
        assert not env.last_invalid.any()


def test_a_seed_repeats_the_run_and_another_seed_does_not() -> None:
    train = _data(200, 0)[0]
    runs = [CascadePPO(CascadePPOConfig(total_steps=2048, warm_start_steps=1024, seed=seed, **SMALL)).train(train)
            for seed in (7, 7, 8)]
    first, again, other = (run.policy_state() for run in runs)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)


FRESH_PROCESS = r"""
import json, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
import torch
extra = {"metadata.json": ""}
policy = torch.jit.load(sys.argv[1], _extra_files=extra)
request = json.load(open(sys.argv[2], encoding="utf-8"))
models = policy.models()
paths = {}
for weight in request["weights"]:
    taken = []
    for query, answers in zip(request["queries"], request["responses"]):
        called, responses, steps = [], [], []
        first = policy.first(query, weight)
        while True:
            action, model, probability = policy.step(query, called, responses, weight)
            steps.append(probability)
            if action == "return":
                break
            called.append(model)
            responses.append(answers[models.index(model)])
        assert policy.next(query, called, responses, weight) == ("return", model)
        taken.append({"first": first, "called": called, "returned": model, "probabilities": steps})
    paths[str(weight)] = taken
ours = sorted(m for m in sys.modules if m.split(".")[0] in
              {"data", "envs", "agents", "policies", "evaluation", "training", "serving"})
print(json.dumps({"metadata": json.loads(extra["metadata.json"]), "paths": paths, "project_modules": ours}))
"""


def _exported(tmp_path: Path) -> tuple[CascadePPO, CascadeData, np.ndarray, Path]:
    """An agent trained for one rollout on text features of the revealing log, exported; held-out queries.

    Barely trained and without the stop prior, its greedy choices stop after one call or escalate, so that
    the round trip covers both kinds of step.
    """
    log, _ = revealing_cascade_log(300, 0)
    featurizer = TextFeaturizer(FeaturizerConfig(min_df=2, components=4)).fit(log.queries)
    train, (test, responses) = _data(300, 0, featurizer)[0], _data(60, 9, featurizer)
    config = CascadePPOConfig(total_steps=1024, warm_start_steps=0, stop_prior=False,
                              cascade=CascadeConfig(max_calls=3), **SMALL)
    agent = CascadePPO(config).train(train)
    metadata = PolicyMetadata(models=list(log.models), default_cost_weight=20.0,
                              cost_weight_range=agent.cost_weight_range, score_kind="logit", agent=agent.name,
                              featurizer={}, data_fingerprint="synthetic")
    module = build_cascade_policy(featurizer, *agent.exported(), metadata, agent.max_calls)
    path = save_cascade_policy(module, cascade_metadata(metadata, agent.max_calls), tmp_path / "cascade.pt")
    return agent, test, responses, path


def test_exported_cascade_decides_as_the_agent_in_a_fresh_process(tmp_path: Path) -> None:
    agent, test, responses, path = _exported(tmp_path)
    weights = [0.0, 20.0, 300.0, 3000.0]
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"queries": test.log.queries, "responses": responses.tolist(), "weights": weights}))
    done = run_isolated(FRESH_PROCESS, str(path), str(request), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["project_modules"] == []
    assert answer["metadata"]["kind"] == "cascade" and answer["metadata"]["cascade"]["max_calls"] == 3
    models, escalated = test.log.models, set()
    for weight in weights:
        decisions = agent.decide(test, weight)
        for i, path_taken in enumerate(answer["paths"][str(weight)]):
            expected = [models[m] for m in decisions.calls[i] if m >= 0]
            assert path_taken["called"] == expected and path_taken["first"] == expected[0], (weight, i)
            assert path_taken["returned"] == models[decisions.returned[i]], (weight, i)
            assert all(0.0 < p <= 1.0 for p in path_taken["probabilities"])
        escalated.update(decisions.n_calls.tolist())
    assert {1, 2} <= escalated  # the round trip covers escalations, not only single calls
    with pytest.raises(PolicyError, match="scores"):  # not a routing policy: the routing loader refuses it
        load_policy(path)


def test_exported_cascade_refuses_impossible_steps() -> None:
    log, _ = revealing_cascade_log(50, 0)
    featurizer = TextFeaturizer(FeaturizerConfig(min_df=1, components=2)).fit(log.queries)
    agent = CascadePPO(CascadePPOConfig(total_steps=1024, warm_start_steps=0, **SMALL))
    agent.train(_data(50, 0, featurizer)[0])
    metadata = PolicyMetadata(models=list(log.models), default_cost_weight=1.0, cost_weight_range=[0.0, 10.0],
                              score_kind="logit", agent=agent.name, featurizer={}, data_fingerprint="x")
    module = build_cascade_policy(featurizer, *agent.exported(), metadata, max_calls=2)
    for called, responses, weight, message in (
        (["nobody"], ["x"], 1.0, "does not know"),
        (["cheap", "cheap"], ["x", "y"], 1.0, "twice"),
        (["cheap"], [], 1.0, "same length"),
        (["cheap", "mid", "strong"], ["x", "y", "z"], 1.0, "max_calls"),
        ([], [], float("nan"), "finite"),
    ):
        with pytest.raises(torch.jit.Error, match=message):
            module.step("a query", called, responses, weight)
    assert module.next("a query", ["cheap", "mid"], ["B", "B"], 1.0)[0] == "return"  # at the limit: only returns


def _write_log(path: Path, n: int, seed: int, with_responses: bool) -> Path:
    log, responses = revealing_cascade_log(n, seed)
    with path.open("w", encoding="utf-8") as file:
        for i in range(n):
            for k, model in enumerate(log.models):
                row = {"query_id": log.query_ids[i], "query": log.queries[i], "model": model,
                       "quality": float(log.quality[i, k]), "cost": float(log.cost[i, k])}
                if with_responses:
                    row["response"] = responses[i, k]
                file.write(json.dumps(row) + "\n")
    return path


def test_command_without_responses_is_one_line_and_exit_2(tmp_path: Path) -> None:
    data = _write_log(tmp_path / "log.jsonl", 30, 0, with_responses=False)
    done = run_python("-m", "training.cascade", "--data", str(data), "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "has no responses" in done.stderr
    assert not (tmp_path / "out").exists()


def test_command_learns_evaluates_and_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write_log(tmp_path / "log.jsonl", 500, 0, with_responses=True)
    settings = ["agent.total_steps=16384", "agent.warm_start_steps=4096", "agent.n_envs=32", "agent.n_steps=32",
                "agent.batch_size=256", "agent.hidden=[64]", "agent.eval_every=2048", "featurizer.components=4",
                "baselines.thresholds=11", "baselines.scorer.cs=3", "baselines.scorer.folds=3", "sweep_points=15"]
    out = tmp_path / "out"
    assert main(["--data", str(data), "--out", str(out), *[f"--set={s}" for s in settings]]) == 0
    report = json.loads((out / "cascade.json").read_text())
    learned, baselines = report["learned"][LEARNED], report["baselines"]
    assert set(baselines) == {"single models", "threshold cascade", "agreement", "pre-generation"}
    assert learned["aiq"] > baselines["pre-generation"]["aiq"] + 0.05  # escalating on a hedge pays here
    assert len(learned["points"]) == 15 and all(p["calls"] >= 1.0 for p in learned["points"])
    assert "learned cascade (PPO)" in (out / "cascade.md").read_text()
    assert (out / "cascade.pt").is_file() and "AIQ" in capsys.readouterr().out
    bad = main(["--data", str(data), "--out", str(tmp_path / "x"), "--set", "agent.n_envs=0"])
    assert bad == 2 and "n_envs" in capsys.readouterr().err
