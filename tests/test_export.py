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
    """Refit the run's agent in-process (same config, same seed: same numbers)."""
    config = load_config(ROOT / "configs" / "default.yaml", [])
    log = load_log(config.data.path).log
    splits = split(log, config.data.fractions, config.seed)
    train, test = log.subset(splits.train), log.subset(splits.test)
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


def test_scores_match_the_agent_and_weights_are_checked(demo_policy: Path) -> None:
    loaded = load_policy(demo_policy)
    policy, metadata = loaded.module, loaded.metadata
    queries = ["", "a question about nothing", "Koushotram shoushen poufoga"]
    scores = policy.scores(queries, 300.0)
    assert torch.equal(
        torch.argmax(scores, dim=1),
        torch.tensor([metadata["models"].index(m) for m in policy.route(queries, 300.0)]),
    )
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(Exception, match="cost_weight must be finite"):
            policy.scores(queries, bad)


def test_artifact_is_small_and_holds_no_gram_matrices(demo_policy: Path) -> None:
    loaded = load_policy(demo_policy)
    policy, metadata = loaded.module, loaded.metadata
    buffers = dict(policy.named_buffers())
    k = len(metadata["models"])
    assert buffers["text_map"].shape[1] == 2 * k  # per-arm [quality | cost] weights only
    assert demo_policy.stat().st_size < 10 * 2**20


def test_load_policy_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such policy"):
        load_policy(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    with pytest.raises(PolicyError, match="not a TorchScript policy"):
        load_policy(junk)


def test_same_decisions_on_routerbench_queries(demo_policy: Path, routerbench: Path) -> None:
    policy = load_policy(demo_policy).module
    queries = load_log(routerbench).log.queries[:50]
    routes = policy.route(queries, 300.0)
    assert len(routes) == 50 and set(routes) <= set(policy.models())
    assert np.isfinite(policy.scores(queries, 300.0).numpy()).all()
