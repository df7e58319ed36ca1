"""Prices without retraining (docs/contracts.md §2.10): token mode, the price methods and the costs of a policy."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_isolated, run_train

from agents.base import FeaturizedSplit, TrainingTask
from agents.lints import LinTS
from agents.linucb import LinUCB
from agents.peers import NearestNeighbourRouter
from data.featurizer import TextFeaturizer
from data.loading import load_log
from data.prices import Price, PriceTable, token_mode_prices
from data.routing_log import RoutingLog
from data.schema import DataError
from data.synth.config import SynthConfig
from data.synth.generator import generate
from data.synth.writers import write
from policies.artifact import PolicyError, load_policy
from policies.export import PolicyMetadata, build_embedding_policy, build_text_policy, save_policy
from serving.pricing import read_price_file
from training.run import RunResult

FRESH_PROCESS = r"""
import json, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
import torch
policy = torch.jit.load(sys.argv[1])
request = json.load(open(sys.argv[2], encoding="utf-8"))
queries, weight = request["queries"], request["weight"]
before = policy.route(queries, weight)
policy.set_prices(torch.tensor(request["prices"], dtype=torch.float64))
paired = policy.scores_costs(queries, weight)
scores, costs = paired.tensor_split(2, dim=1)
same = bool(torch.equal(scores, policy.scores(queries, weight)))
print(json.dumps({"before": before, "after": policy.route(queries, weight), "costs": policy.costs(queries).tolist(),
                  "pair_costs": costs.tolist(), "same_scores": same, "prices": policy.prices().tolist()}))
"""


def _metadata(log: RoutingLog, cost_mode: str = "usd") -> PolicyMetadata:
    return PolicyMetadata(models=list(log.models), default_cost_weight=1.0, cost_weight_range=[0.0, 1e5],
                          score_kind="utility", agent="linucb", featurizer={}, data_fingerprint="test",
                          cost_mode=cost_mode)


def _token_agent(priced_world: tuple[RoutingLog, TextFeaturizer, np.ndarray, np.ndarray]) -> LinUCB:
    log, _, x, prices = priced_world
    agent = LinUCB(log.n_models, x.shape[1])
    return agent.train(TrainingTask(FeaturizedSplit(log, x), prices=prices))


def test_priced_token_estimate_equals_the_usd_estimate_at_the_training_prices(priced_world) -> None:
    log, _, x, prices = priced_world
    usd = LinUCB(log.n_models, x.shape[1]).train(TrainingTask(FeaturizedSplit(log, x)))
    tokens = _token_agent(priced_world)
    assert (usd.cost_mode, tokens.cost_mode) == ("usd", "tokens")
    theta = tokens.theta_tokens()
    priced = (theta[:, :, 0] * prices[:, :1] + theta[:, :, 1] * prices[:, 1:]) / 1e6
    scale = np.abs(usd.theta_cost).max()
    np.testing.assert_allclose(priced, usd.theta_cost, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(tokens.scores(x, 300.0), usd.scores(x, 300.0), rtol=0, atol=1e-9)
    assert tokens.linear_map().shape == (x.shape[1], 3 * log.n_models)


def test_lints_learns_tokens_online_and_its_priced_cost_matches_the_usd_run(priced_world) -> None:
    log, _, x, prices = priced_world
    task = TrainingTask(FeaturizedSplit(log, x), learning="online", online_steps=400, seed=3)
    usd = LinTS(log.n_models, x.shape[1]).train(task)
    tokens = LinTS(log.n_models, x.shape[1]).train(replace(task, prices=prices))
    assert tokens.cost_mode == "tokens"
    np.testing.assert_array_equal(tokens.observations, usd.observations)  # the same choices while learning
    np.testing.assert_allclose(tokens.theta_cost, usd.theta_cost, rtol=0, atol=1e-9 * np.abs(usd.theta_cost).max())


def test_new_prices_flip_the_routing_of_a_freshly_loaded_policy_without_retraining(
    priced_world, tmp_path: Path
) -> None:
    log, featurizer, x, prices = priced_world
    agent = _token_agent(priced_world)
    metadata = _metadata(log, "tokens")
    save_policy(build_text_policy(featurizer, agent.linear_map(), agent.head(), metadata), metadata,
                tmp_path / "policy.pt")
    cheapest = int(np.argmin(log.cost.mean(axis=0)))
    weight = 20000.0
    assert (agent.predict(x, weight) == cheapest).mean() > 0.5  # at this weight most queries go to the cheap model
    new_prices = prices.copy()
    new_prices[cheapest] = 1000 * prices.max(axis=0)
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"queries": log.queries, "weight": weight, "prices": new_prices.tolist()}))
    done = run_isolated(FRESH_PROCESS, str(tmp_path / "policy.pt"), str(request), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    name = log.models[cheapest]
    assert answer["before"] == [log.models[i] for i in agent.predict(x, weight)]
    assert answer["before"].count(name) > len(log.queries) / 2 and answer["after"].count(name) == 0
    assert answer["same_scores"] and answer["pair_costs"] == answer["costs"]
    assert answer["prices"] == new_prices.tolist()
    theta = agent.theta_tokens()
    by_hand = ((x @ theta[:, :, 0].T) * new_prices[:, 0] + (x @ theta[:, :, 1].T) * new_prices[:, 1]) / 1e6
    np.testing.assert_allclose(answer["costs"], by_hand, rtol=1e-5, atol=1e-6 * np.abs(by_hand).max())


def test_a_usd_policy_refuses_new_prices_and_its_costs_are_the_cost_half_of_z(priced_world, tmp_path: Path) -> None:
    log, featurizer, x, _ = priced_world
    agent = LinUCB(log.n_models, x.shape[1]).fit(x, log.quality, log.cost)
    metadata = _metadata(log)
    module = build_text_policy(featurizer, agent.linear_map(), agent.head(), metadata)
    with pytest.raises(torch.jit.Error, match=r"trained on USD costs \(cost_mode 'usd'\); it has no price table"):
        module.set_prices(torch.zeros(log.n_models, 2, dtype=torch.float64))
    assert tuple(module.prices().shape) == (0, 2)
    costs = module.costs(log.queries[:50]).numpy()
    np.testing.assert_allclose(costs, x[:50] @ agent.theta_cost.T, rtol=1e-5, atol=1e-6 * np.abs(costs).max())
    loaded = load_policy(save_policy(module, metadata, tmp_path / "usd.pt"))
    assert (loaded.cost_mode, loaded.has_costs, loaded.prices_table()) == ("usd", True, {})
    with pytest.raises(PolicyError, match="cost_mode 'usd'"):
        loaded.set_prices({model: (1.0, 1.0) for model in log.models})


@pytest.mark.parametrize("kind", ["tokens", "usd", "knn"])
def test_scores_costs_gives_exactly_the_scores_and_the_costs(priced_world, kind: str) -> None:
    log, featurizer, x, _ = priced_world
    if kind == "knn":
        agent: LinUCB | NearestNeighbourRouter = NearestNeighbourRouter(log.n_models, x.shape[1]).fit(
            x, log.quality, log.cost
        )
    else:
        agent = _token_agent(priced_world) if kind == "tokens" else LinUCB(log.n_models, x.shape[1]).fit(
            x, log.quality, log.cost
        )
    module = build_text_policy(featurizer, agent.linear_map(), agent.head(), _metadata(log, agent.cost_mode))
    batches: list[list[str]] = [log.queries[:1], log.queries[:64], []]
    for queries in batches:
        paired = module.scores_costs(queries, 300.0)
        assert paired.dtype == torch.float32 and tuple(paired.shape) == (len(queries), 2 * log.n_models)
        scores, costs = paired.tensor_split(2, dim=1)
        assert torch.equal(scores, module.scores(queries, 300.0))
        assert torch.equal(costs, module.costs(queries))
    if kind == "knn":  # the neighbours' mean cost
        _, expected = agent._estimates(x[:5])  # type: ignore[union-attr]
        np.testing.assert_allclose(module.costs(log.queries[:5]).numpy(), expected, rtol=1e-5)


def test_loaded_policy_set_prices_maps_names_and_refuses_bad_tables(priced_world, tmp_path: Path) -> None:
    log, featurizer, _, prices = priced_world
    agent = _token_agent(priced_world)
    metadata = _metadata(log, "tokens")
    path = save_policy(build_text_policy(featurizer, agent.linear_map(), agent.head(), metadata), metadata,
                       tmp_path / "policy.pt")
    loaded = load_policy(path)
    assert (loaded.cost_mode, loaded.has_costs) == ("tokens", True)
    table = loaded.prices_table()
    assert table == {model: tuple(row) for model, row in zip(log.models, prices.tolist())}
    first, *others = log.models
    refusals = {
        f"lacks the policy's model\\(s\\) {first}": {model: table[model] for model in others},
        "names model\\(s\\) extra-model that the policy": {**table, "extra-model": (1.0, 1.0)},
        f"model '{first}': prices must be two finite numbers >= 0": {**table, first: (-1.0, 1.0)},
        f"model '{first}': prices must be two finite": {**table, first: (float("nan"), 1.0)},
    }
    for message, bad in refusals.items():
        with pytest.raises(PolicyError, match=message) as refused:
            loaded.set_prices(bad)
        assert "\n" not in str(refused.value)
    assert loaded.prices_table() == table  # refused tables change nothing
    loaded.set_prices({**table, first: (2.0, 4.0)})
    assert loaded.prices_table()[first] == (2.0, 4.0)
    scores, costs = loaded.score_costs(log.queries[:3], 10.0).tensor_split(2, dim=1)
    assert torch.equal(scores, loaded.scores(log.queries[:3], 10.0)) and tuple(costs.shape) == (3, log.n_models)


def test_embedding_policy_costs_features_and_refuses_text(priced_world) -> None:
    log, _, x, _ = priced_world
    agent = LinUCB(log.n_models, x.shape[1]).fit(x, log.quality, log.cost)
    module = build_embedding_policy(agent.linear_map(), agent.head(), _metadata(log))  # x's last column is 1
    features = torch.from_numpy(x[:4, :-1])
    scores, costs = module.scores_costs_features(features, 5.0).tensor_split(2, dim=1)
    assert torch.equal(scores, module.scores_features(features, 5.0))
    assert torch.equal(costs, module.costs_features(features))
    with pytest.raises(torch.jit.Error, match="routes on embeddings"):
        module.costs(["text"])


def test_token_mode_needs_every_token_count_and_a_price_for_every_model(priced_world) -> None:
    log, _, _, prices = priced_world
    table = PriceTable({model: Price(*row) for model, row in zip(log.models, prices.tolist())})
    np.testing.assert_array_equal(token_mode_prices(log, table, "auto"), prices)
    assert token_mode_prices(log, table, "usd") is None
    assert log.completion_tokens is not None
    holed = log.completion_tokens.copy()
    holed[7, 1] = np.nan
    lacking = replace(log, completion_tokens=holed)
    assert token_mode_prices(lacking, table, "auto") is None
    with pytest.raises(DataError, match=f"query_id '{log.query_ids[7]}', model '{log.models[1]}' has no"):
        token_mode_prices(lacking, table, "tokens")
    with pytest.raises(DataError, match="no accepted row of the log has prompt_tokens"):
        token_mode_prices(replace(log, prompt_tokens=None), table, "tokens")
    partial = PriceTable({model: table.prices[model] for model in log.models[1:]})
    with pytest.raises(DataError, match=f"does not price model\\(s\\) {log.models[0]}"):
        token_mode_prices(log, partial, "tokens")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_the_loader_keeps_every_outcomes_token_counts(tmp_path: Path, suffix: str) -> None:
    synth = generate(SynthConfig(queries=40, models=3, seed=2))
    write(synth, tmp_path / f"log{suffix}")
    log = load_log(tmp_path / f"log{suffix}").log
    order = [synth.model_names.index(model) for model in log.models]
    rows = [synth.query_ids.index(query_id) for query_id in log.query_ids.tolist()]
    assert log.prompt_tokens is not None and log.completion_tokens is not None
    np.testing.assert_array_equal(log.completion_tokens, synth.completion_tokens[np.ix_(rows, order)])
    np.testing.assert_array_equal(log.prompt_tokens[:, 0], synth.prompt_tokens[rows])


def test_the_demo_run_is_in_token_mode_and_its_report_says_so(demo_run: RunResult) -> None:
    assert demo_run.report["exported_policy"]["cost_mode"] == "tokens"  # the demo log has token counts
    assert load_policy(demo_run.directory / "policy.pt").cost_mode == "tokens"
    assert "Cost mode: **tokens**" in (demo_run.directory / "report.md").read_text(encoding="utf-8")


def test_a_bare_price_mapping_is_read_by_training_and_the_service_alike(tmp_path: Path) -> None:
    """``{name: {input, output}}`` without ``models:`` (RouteProfile's prices.yaml) is the same table."""
    bare, wrapped = tmp_path / "bare.yaml", tmp_path / "wrapped.yaml"
    bare.write_text("a: {input: 1.0, output: 2.0}\nb: {input: 0.5, output: 0.5}\n", encoding="utf-8")
    wrapped.write_text("models:\n  a: {input: 1.0, output: 2.0}\n  b: {input: 0.5, output: 0.5}\n", encoding="utf-8")
    assert PriceTable.load(bare) == PriceTable.load(wrapped)
    assert read_price_file(bare, {"a", "b"}) == read_price_file(wrapped, {"a", "b"}) == {"a": (1.0, 2.0),
                                                                                        "b": (0.5, 0.5)}
    bare.write_text("{}\n", encoding="utf-8")
    with pytest.raises(DataError, match="a price table needs a mapping"):
        PriceTable.load(bare)
    with pytest.raises(ValueError, match="models"):
        read_price_file(bare, {"a", "b"})


def test_routeprofile_trains_in_token_mode_with_its_own_price_file(routeprofile: Path, tmp_path: Path) -> None:
    done = run_train("--data", str(routeprofile), "--prices", str(routeprofile.parent / "prices.yaml"),
                     "--set", "agent.kind=logistic", "--no-tune", "--set", "evaluation.bootstrap=0",
                     "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["exported_policy"]["cost_mode"] == "tokens"
    assert load_policy(tmp_path / "run" / "policy.pt").prices_table()["llama-3.3-70b-instruct"] == (0.88, 0.88)
