"""The exported policy, loaded in a fresh process that never imports routerl, decides as the agent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_isolated

from agents.linucb import LinUCB
from data.featurizer import TextFeaturizer
from data.loading import load_log
from data.splits import split
from policies.artifact import REQUIRED_METADATA, PolicyError, load_policy
from training.config import load_config
from training.run import RunResult

FRESH_PROCESS = r"""
import json, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
import torch
policy_path, queries_path = sys.argv[1], sys.argv[2]
extra = {"metadata.json": ""}
policy = torch.jit.load(policy_path, _extra_files=extra)
request = json.load(open(queries_path, encoding="utf-8"))
answer = {
    "metadata": json.loads(extra["metadata.json"]),
    "models": policy.models(),
    "default": policy.default_cost_weight(),
    "routes": {str(w): policy.route(request["queries"], w) for w in request["weights"]},
    "forward": policy(request["queries"]).tolist(),
    "scores_shape": list(policy.scores(request["queries"], 1.0).shape),
    "scores_dtype": str(policy.scores(request["queries"], 1.0).dtype),
    "empty": policy.route([], 1.0),
}
ours = sorted(m for m in sys.modules if m.split(".")[0] in
              {"data", "envs", "agents", "policies", "evaluation", "training", "serving"})
answer["project_modules"] = ours
print(json.dumps(answer))
"""


def _agent_and_test_queries(run: RunResult) -> tuple[LinUCB, TextFeaturizer, list[str]]:
    """Refit the run's agent in-process (the values its tuning chose, the same seed: same numbers).

    Tuned, the run learned from the training and validation splits together (docs/contracts.md §3.2).
    """
    chosen = run.report["tuning"]["chosen"]
    pinned = [f"featurizer.{key}={chosen[key]}" for key in ("min_df", "components", "whiten")]
    config = load_config(ROOT / "configs" / "default.yaml", [*pinned, f"agent.linucb.ridge={chosen['ridge']}"])
    log = load_log(config.data.path).log
    splits = split(log, config.data.fractions, config.seed)
    assert run.report["exported_policy"]["trained_on"] == "train+validation"
    train = log.subset(np.sort(np.concatenate([splits.train, splits.validation])))
    test = log.subset(splits.test)
    featurizer = TextFeaturizer(config.featurizer).fit(train.queries)
    agent = LinUCB(log.n_models, featurizer.dimension, config.agent.linucb, config.reward.cost_weight)
    agent.fit(featurizer.transform(train.queries), train.quality, train.cost)
    return agent, featurizer, test.queries


def test_fresh_process_makes_the_agents_decisions(demo_run: RunResult, tmp_path: Path) -> None:
    agent, featurizer, queries = _agent_and_test_queries(demo_run)
    weights = [0.0, 300.0, 3000.0]
    request = tmp_path / "queries.json"
    request.write_text(json.dumps({"queries": queries, "weights": weights}), encoding="utf-8")
    done = run_isolated(FRESH_PROCESS, str(demo_run.directory / "policy.pt"), str(request), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["project_modules"] == []
    models = answer["models"]
    features = featurizer.transform(queries)
    for weight in weights:
        in_process = [models[i] for i in agent.predict(features, weight)]
        assert answer["routes"][str(weight)] == in_process, f"cost weight {weight}"
    assert len({tuple(r) for r in answer["routes"].values()}) == 3  # the weight changes decisions
    assert answer["forward"] == agent.predict(features, answer["default"]).tolist()
    assert answer["scores_shape"] == [len(queries), len(models)] and answer["scores_dtype"] == "torch.float32"
    assert answer["empty"] == []
    metadata = answer["metadata"]
    assert set(REQUIRED_METADATA) <= set(metadata)
    assert metadata["score_kind"] == "utility" and metadata["input_kind"] == "text"
    assert metadata["data_fingerprint"] == demo_run.report["data"]["fingerprint"]


def test_scores_match_the_agent_and_weights_are_checked(demo_run: RunResult) -> None:
    """The exported scores are the agent's utilities (float32), and the routes their argmax."""
    agent, featurizer, test_queries = _agent_and_test_queries(demo_run)
    loaded = load_policy(demo_run.directory / "policy.pt")
    policy, metadata = loaded.module, loaded.metadata
    queries = ["", "a question about nothing", "Koushotram shoushen poufoga", *test_queries[:100]]
    for weight in (0.0, 300.0, 3000.0):
        scores = policy.scores(queries, weight)
        expected = agent.scores(featurizer.transform(queries), weight)
        np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
        assert torch.equal(
            torch.argmax(scores, dim=1),
            torch.tensor([metadata["models"].index(m) for m in policy.route(queries, weight)]),
        )
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(Exception, match="cost_weight must be finite"):
            policy.scores(queries, bad)


def test_artifact_is_small_and_holds_no_gram_matrices(demo_policy: Path) -> None:
    loaded = load_policy(demo_policy)
    policy, metadata = loaded.module, loaded.metadata
    buffers = dict(policy.named_buffers())
    k = len(metadata["models"])
    # per-arm [quality | cost] weights only; in token mode (the demo log has token counts) [quality | in | out],
    # then one column per arm for each objective beside USD (the demo's estimated energy, §2.13)
    columns = (3 if metadata["cost_mode"] == "tokens" else 2) + len(policy.arms.objective_names)
    assert list(policy.arms.objective_names) == ["energy"]
    assert buffers["text_map"].shape[1] == columns * k
    assert demo_policy.stat().st_size < 10 * 2**20


def test_load_policy_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such policy"):
        load_policy(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    with pytest.raises(PolicyError, match="not a TorchScript policy"):
        load_policy(junk)


def test_same_decisions_on_routerbench_queries(demo_run: RunResult, routerbench: Path) -> None:
    """Foreign text (RouterBench prompts: long, other vocabularies, code, other scripts) is routed by the
    exported policy exactly as the trained agent routes it in-process."""
    agent, featurizer, _ = _agent_and_test_queries(demo_run)
    policy = load_policy(demo_run.directory / "policy.pt").module
    queries = load_log(routerbench).log.queries[:200]
    features = featurizer.transform(queries)
    assert np.abs(features).sum(axis=1).min() > 0  # the demo's vocabulary reaches every prompt
    # Far from the demo's texts the agent sends all 200 prompts to one model at most weights: also
    # compare where its choice differs between prompts (found on a fine grid of weights).
    mixed = [w for w in np.geomspace(1.0, 1e5, 2001) if len(set(agent.predict(features, w).tolist())) > 1]
    assert mixed, "the agent routes these prompts to one model at every weight: the comparison would prove little"
    models = policy.models()
    for weight in (0.0, 300.0, 3000.0, *mixed[:: max(1, len(mixed) // 5)]):
        chosen = agent.predict(features, weight)
        assert policy.route(queries, weight) == [models[i] for i in chosen], weight
        expected = agent.scores(features, weight)
        scores = policy.scores(queries, weight).numpy()
        np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
