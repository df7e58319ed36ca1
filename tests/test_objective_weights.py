"""A weight per objective at inference (issue 22 item 2, docs/contracts.md §2.13).

The world: three models whose quality, USD, latency and energy are known constants, so the best model
at any weight vector is known exactly: quality − w_usd · usd − w_latency · seconds − w_energy · Wh.
LinUCB estimates each objective from the same Gram matrix; the exported policy (TorchScript, in this
process and in a fresh one, and the native engine) must hit that optimum and move the right way as each
weight moves.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_isolated

from agents.base import FeaturizedSplit, TrainingTask
from agents.linucb import LinUCB, LinUCBConfig
from data.featurizer import FeaturizerConfig, TextFeaturizer
from data.routing_log import RoutingLog
from policies.artifact import load_policy
from policies.export import PolicyMetadata, build_text_policy, save_policy
from policies.exported_program import NumericCore
from policies.native import load_native_policy
from policies.portable import read_portable, twin_path
from policies.rules_export import replace_rules
from training.exporting import objectives_metadata

MODELS = ("fast", "green", "strong")
QUALITY = np.array([0.70, 0.72, 0.95])
USD = np.array([0.002, 0.001, 0.010])
SECONDS = np.array([0.2, 2.0, 1.0])
WATT_HOURS = np.array([1.0, 0.1, 2.0])
INTENSITY = 400.0  # gCO2e per kWh
WORDS = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta")


def objective_log(n: int = 240, latency: bool = True, energy: bool = True) -> RoutingLog:
    rng = np.random.default_rng(0)
    queries = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 7)))) for _ in range(n)]
    return RoutingLog(
        models=MODELS,
        query_ids=np.array([f"q{i}" for i in range(n)], dtype=object),
        queries=queries,
        quality=np.tile(QUALITY, (n, 1)),
        cost=np.tile(USD, (n, 1)),
        latency_ms=np.tile(SECONDS * 1000.0, (n, 1)) if latency else None,
        energy_wh=np.tile(WATT_HOURS, (n, 1)) if energy else None,
    )


def best_model(weights: dict[str, float]) -> str:
    """The known optimum at ``weights`` (carbon = energy × intensity)."""
    energy = weights.get("energy", 0.0) + weights.get("carbon", 0.0) * INTENSITY / 1000.0
    utility = QUALITY - weights.get("usd", 0.0) * USD - weights.get("latency", 0.0) * SECONDS - energy * WATT_HOURS
    return MODELS[int(np.argmax(utility))]


def export_objective_policy(log: RoutingLog, path: Path, learning: str = "fit") -> LinUCB:
    featurizer = TextFeaturizer(FeaturizerConfig(components=4, min_df=1)).fit(log.queries)
    split = FeaturizedSplit(log, featurizer.transform(log.queries))
    task = TrainingTask(split, learning=learning, online_steps=3000, seed=0)  # type: ignore[arg-type]
    agent = LinUCB(log.n_models, split.features.shape[1], LinUCBConfig(ridge=1e-3)).train(task)
    metadata = PolicyMetadata(
        models=list(MODELS), default_cost_weight=10.0, cost_weight_range=[0.0, 1e4], score_kind="utility",
        agent="linucb", featurizer={}, data_fingerprint="test",
        objectives=objectives_metadata(agent, 10.0, [0.0, 1e4], INTENSITY),
    )
    estimates = agent.objective_map()
    matrix = None if estimates is None else estimates.matrix
    module = build_text_policy(featurizer, agent.linear_map(), agent.head(), metadata, False, matrix)
    save_policy(module, metadata, path)
    return agent


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("objectives") / "policy.pt"
    export_objective_policy(objective_log(), path)
    return path


#: Weight vectors whose optimum wins by at least 0.05 of quality (checked in the test).
CHOSEN = (
    {"usd": 0.0},
    {"usd": 40.0},
    {"usd": 0.0, "latency": 0.5},
    {"usd": 0.0, "energy": 0.5},
    {"usd": 5.0, "latency": 0.1, "energy": 0.05},
    {"usd": 0.0, "carbon": 2.0},
)


def test_the_metadata_lists_every_objective_with_its_unit_default_and_range(exported: Path) -> None:
    policy = load_policy(exported)
    entries = {entry["name"]: entry for entry in policy.metadata["objectives"]}
    assert list(entries) == ["usd", "latency", "energy", "carbon"]
    assert [entries[name]["unit"] for name in entries] == ["USD", "s", "Wh", "gCO2e"]
    assert entries["usd"]["default_weight"] == 10.0 and entries["usd"]["weight_range"] == [0.0, 1e4]
    assert entries["latency"]["weight_range"] == [0.0, None] and entries["carbon"]["per_wh"] == INTENSITY / 1000
    assert policy.objectives() == ["usd", "latency", "energy", "carbon"]


def test_linucb_estimates_each_objective_of_each_model(exported: Path) -> None:
    queries = objective_log(20).queries
    costs = load_policy(exported).objective_costs(queries).numpy()
    np.testing.assert_allclose(costs[:, 0], np.tile(SECONDS, (20, 1)), atol=1e-3)
    np.testing.assert_allclose(costs[:, 1], np.tile(WATT_HOURS, (20, 1)), atol=1e-3)
    native = load_native_policy(exported).objective_costs(queries)
    np.testing.assert_allclose(native, costs, atol=1e-6)


def test_both_engines_hit_the_known_optimum_at_chosen_weight_vectors(exported: Path) -> None:
    queries = objective_log(30).queries
    torchscript, native = load_policy(exported), load_native_policy(exported)
    for weights in CHOSEN:
        energy = weights.get("energy", 0.0) + weights.get("carbon", 0.0) * INTENSITY / 1000.0
        utility = np.sort(QUALITY - weights["usd"] * USD - weights.get("latency", 0.0) * SECONDS - energy * WATT_HOURS)
        assert utility[-1] - utility[-2] >= 0.05, weights  # a clear optimum, not a near tie
        expected = [best_model(weights)] * len(queries)
        assert torchscript.module.route(queries, weights) == expected, weights
        assert native.route(queries, weights) == expected, weights
        np.testing.assert_allclose(native.scores(queries, weights), torchscript.scores(queries, weights), atol=1e-6)


@pytest.mark.parametrize(("objective", "values"), [("usd", USD), ("latency", SECONDS), ("energy", WATT_HOURS),
                                                   ("carbon", WATT_HOURS)])
def test_each_weight_moves_choices_toward_the_model_cheaper_on_its_objective(
    exported: Path, objective: str, values: np.ndarray
) -> None:
    policy = load_policy(exported).module
    queries = objective_log(10).queries
    spent = []
    for weight in (0.0, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0):
        chosen = policy.route(queries, {"usd": 0.0, objective: weight})
        spent.append(float(np.mean([values[MODELS.index(name)] for name in chosen])))
        assert chosen == [best_model({"usd": 0.0, objective: weight})] * len(queries)
    assert spent == sorted(spent, reverse=True) and spent[-1] < spent[0]
    assert spent[-1] == pytest.approx(values.min())


def test_a_bare_number_is_the_usd_weight_and_an_omitted_objective_keeps_its_default(exported: Path) -> None:
    policy = load_policy(exported).module
    queries = objective_log(10).queries
    assert torch.equal(policy.scores(queries, 30.0), policy.scores(queries, {"usd": 30.0}))
    assert torch.equal(policy.scores(queries, 10.0), policy.scores(queries, {"latency": 0.0}))  # usd: its default
    assert torch.equal(policy.scores(queries, {"carbon": 2.0}), policy.scores(queries, {"energy": 0.8}))


def test_a_fresh_process_routes_by_weight_vector_without_routerl(exported: Path, tmp_path: Path) -> None:
    script = (
        "import json, sys, warnings\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "import torch\n"
        "policy = torch.jit.load(sys.argv[1])\n"
        "weights = json.loads(sys.argv[2])\n"
        "print(json.dumps([policy.route(['alpha beta'], w) for w in weights] + [policy.objectives()]))\n"
    )
    asked = [{"usd": 0.0}, {"usd": 0.0, "latency": 0.5}, {"usd": 0.0, "energy": 0.5}, 30.0]
    done = run_isolated(script, str(exported), json.dumps(asked), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    *routes, objectives = json.loads(done.stdout)
    assert routes == [["strong"], ["fast"], ["green"], [best_model({"usd": 30.0})]]
    assert objectives == ["usd", "latency", "energy", "carbon"]


@pytest.mark.parametrize(
    ("weights", "message"),
    [({"speed": 1.0}, "unknown objective speed: this policy takes weights for usd, latency, energy, carbon"),
     ({"latency": -1.0}, "the weight of latency must be finite and >= 0"),
     ({"energy": float("nan")}, "the weight of energy must be finite and >= 0")],
)
def test_an_unknown_objective_or_a_bad_weight_is_refused_by_name_in_both_engines(
    exported: Path, weights: dict[str, float], message: str
) -> None:
    with pytest.raises(Exception, match=message):  # TorchScript raises its ValueError as torch.jit.Error
        load_policy(exported).module.route(["alpha"], weights)
    with pytest.raises(ValueError, match=message):
        load_native_policy(exported).route(["alpha"], weights)


def test_a_log_without_latency_or_energy_exports_a_usd_only_policy(tmp_path: Path) -> None:
    agent = export_objective_policy(objective_log(latency=False, energy=False), tmp_path / "policy.pt")
    policy = load_policy(tmp_path / "policy.pt")
    assert agent.objective_map() is None and policy.metadata["objectives"] == [] and policy.objectives() == ["usd"]
    assert policy.module.text_map.shape[1] == 2 * len(MODELS)
    with pytest.raises(Exception, match="unknown objective latency: this policy takes weights for usd"):
        policy.module.route(["alpha"], {"latency": 1.0})


def test_online_linucb_learns_the_objectives_of_the_arms_it_plays(tmp_path: Path) -> None:
    agent = export_objective_policy(objective_log(), tmp_path / "policy.pt", learning="online")
    assert agent.objective_names == ("latency", "energy") and agent.observations.sum() == 3000
    played = agent.observations > 50
    costs = load_policy(tmp_path / "policy.pt").objective_costs(["alpha beta"]).numpy()[0]
    np.testing.assert_allclose(costs[0][played], SECONDS[played], atol=0.02)
    np.testing.assert_allclose(costs[1][played], WATT_HOURS[played], atol=0.02)


def test_the_exported_core_and_a_rules_re_export_keep_the_objective_columns_apart(
    exported: Path, tmp_path: Path
) -> None:
    portable = read_portable(twin_path(exported))
    assert portable.header["arms"]["objectives"] == ["latency", "energy"]
    core = NumericCore(portable)
    assert core.head_width == 2 * len(MODELS)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {when: {contains_any: [omega]}, route_to: [green]}\n", encoding="utf-8")
    rebuilt = load_policy(replace_rules(exported, rules, tmp_path / "ruled.pt"))
    assert rebuilt.objectives() == load_policy(exported).objectives()
    assert rebuilt.module.route(["alpha", "omega"], {"usd": 0.0, "latency": 0.5}) == ["fast", "green"]


def test_objective_estimates_need_every_outcome(tmp_path: Path) -> None:
    log = objective_log()
    energy = log.energy_wh.copy()  # type: ignore[union-attr]
    energy[3, 1] = np.nan
    assert list(replace(log, energy_wh=energy).objective_table()) == ["latency"]
    assert replace(log, feedback="bandit").objective_table() == {}
