"""The supervised peers: the MLP and matrix-factorisation routers, and what they share with logistic.

Each network router fits, routes better than the best single model where the right model depends on
the query, chooses its grid values by cross-validation on the training data, is deterministic for a
seed, and exports a policy (through ``train.py``) that decides as the agent in a fresh process.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import ROOT, run_isolated, run_train

from agents.factorisation import FactorisationConfig, MatrixFactorisationRouter
from agents.mlp import MlpConfig, MlpRouter
from agents.peers import LogisticRouter, PeerConfig
from agents.quality_network import QualityNetworkRouter
from data.featurizer import TextFeaturizer
from data.loading import load_log
from data.schema import DataError
from data.splits import split
from policies.artifact import load_policy
from policies.export import PolicyMetadata, build_embedding_policy, build_text_policy, save_policy
from training.config import load_config

DEFAULT = ROOT / "configs" / "default.yaml"
FAST: dict[str, Any] = {"folds": 3, "iterations": 100}  # small grids and folds keep each test to seconds


def routed_world(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (last column 1) where each of 3 models is good on its own region of query space.

    P(good | x, model k) = sigmoid(4 x·u_k): no model is good everywhere, so the best single model
    has mean quality near 0.5 while routing each query to its model reaches about 0.8. Costs are
    equal, so at any weight the router should pick the likeliest good model.
    """
    rng = np.random.default_rng(seed)
    x = np.hstack([rng.standard_normal((n, 4)), np.ones((n, 1))])
    directions = np.array([[1.0, 0.0, 0.0, 0.0, 0.0], [-0.5, 0.87, 0.0, 0.0, 0.0], [-0.5, -0.87, 0.0, 0.0, 0.0]]).T
    probability = 1.0 / (1.0 + np.exp(-4.0 * x @ directions))
    quality = (rng.random(probability.shape) < probability).astype(float)
    return x, quality, np.full_like(quality, 1e-4)


def xor_world(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model 0 answers well iff x₀·x₁ > 0, model 1 otherwise: no linear logit can separate them."""
    rng = np.random.default_rng(seed)
    x = np.hstack([rng.standard_normal((n, 2)), np.ones((n, 1))])
    good = (x[:, 0] * x[:, 1] > 0).astype(float)
    quality = np.column_stack([good, 1.0 - good])
    return x, quality, np.full_like(quality, 1e-4)


def mlp(n_models: int = 3, dimension: int = 5, **options: Any) -> MlpRouter:
    """An MLP router with a one-point grid (unless ``options`` say otherwise) and the fast settings."""
    config = MlpConfig(**{"hidden_sizes": (8,), "weight_decay": (1e-3,), **FAST, **options})
    return MlpRouter(n_models, dimension, config)


def mf(n_models: int = 3, dimension: int = 5, **options: Any) -> MatrixFactorisationRouter:
    """An MF router with a one-point grid (unless ``options`` say otherwise) and the fast settings."""
    config = FactorisationConfig(**{"ranks": (2,), "weight_decay": (1e-3,), **FAST, **options})
    return MatrixFactorisationRouter(n_models, dimension, config)


@pytest.mark.parametrize("make", [mlp, mf], ids=["mlp", "mf"])
def test_network_router_beats_the_best_single_model_where_the_right_model_depends_on_the_query(
    make: Callable[[], QualityNetworkRouter],
) -> None:
    x, quality, cost = routed_world(1200)
    train, held = slice(0, 800), slice(800, None)
    agent = make().fit(x[train], quality[train], cost[train])
    routed = quality[held][np.arange(400), agent.predict(x[held], 30.0)].mean()
    best_single = quality[train].mean(axis=0).argmax()
    assert routed > quality[held][:, best_single].mean() + 0.15
    assert agent.steps_done == 800 and agent.score_kind == "utility"


def test_mlp_chooses_the_hidden_size_that_can_fit_xor_and_the_weak_decay() -> None:
    """One ReLU unit cannot separate XOR and a decay of 30 flattens every logit: (16, 1e-3) is clearly right."""
    x, quality, cost = xor_world(600)
    agent = MlpRouter(2, 3, MlpConfig(hidden_sizes=(1, 16), weight_decay=(1e-3, 30.0), **FAST))
    agent.fit(x, quality, cost)
    assert (agent.selection.width, agent.selection.decay) == (16, 1e-3)
    assert agent.selection.log_loss[1, 0] < 0.5 * agent.selection.log_loss.max()
    assert (agent.predict(x, 0.0) == quality[:, 1]).mean() > 0.9  # model 1 where model 0 fails


def test_mf_chooses_a_rank_that_holds_the_signal_and_strong_decay_on_noise() -> None:
    """Three models good in three directions need rank ≥ 2; labels independent of x need strong decay.

    Choosing by training loss would always take the weakest decay: only the held-out loss picks
    the strong one on noise.
    """
    x, quality, cost = routed_world(900)
    signal = mf(ranks=(1, 3)).fit(x, quality, cost)
    assert signal.selection.width == 3
    noise = np.random.default_rng(1).random(quality.shape) < 0.5
    few = slice(0, 60)
    chosen = mf(weight_decay=(1e-4, 3.0)).fit(x[few], noise[few].astype(float), cost[few]).selection
    assert chosen.decay == 3.0


@pytest.mark.parametrize("make", [mlp, mf], ids=["mlp", "mf"])
def test_network_router_is_deterministic_for_a_seed(make: Callable[..., QualityNetworkRouter]) -> None:
    x, quality, cost = routed_world(400)
    first, again, other = make().fit(x, quality, cost), make().fit(x, quality, cost), make(seed=1).fit(x, quality, cost)
    np.testing.assert_array_equal(first.linear_map(), again.linear_map())
    np.testing.assert_array_equal(first.network.second, again.network.second)
    np.testing.assert_array_equal(first.selection.log_loss, again.selection.log_loss)
    assert not np.array_equal(first.network.second, other.network.second)


def test_the_peers_share_one_cost_model_and_logistic_fits_without_future_warnings() -> None:
    """logistic, mlp and mf estimate cost with the same ridge model; scikit-learn ≥ 1.8 has nothing to warn about."""
    x, quality, cost = routed_world(300)
    cost = cost * (1.0 + np.abs(x[:, :3]))  # cost that depends on the query
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        logistic = LogisticRouter(3, 5, PeerConfig(inverse_regularisation=(0.1, 1.0), folds=3)).fit(x, quality, cost)
    assert all(np.isfinite(c) for c in logistic.chosen_c)
    cost_columns = [agent.linear_map()[:, -3:] for agent in (logistic, mlp().fit(x, quality, cost),
                                                             mf().fit(x, quality, cost))]
    np.testing.assert_array_equal(cost_columns[0], cost_columns[1])
    np.testing.assert_array_equal(cost_columns[0], cost_columns[2])


@pytest.mark.parametrize(("overrides", "message"), [
    (["agent.kind=mlp", "agent.learning=online"], "mlp is a supervised router fitted from the log"),
    (["agent.kind=mf", "agent.learning=online"], "mf is a supervised router fitted from the log"),
    (["agent.kind=mf", "agent.mf.ranks=[]"], "agent.mf.ranks"),
    (["agent.kind=mlp", "agent.mlp.folds=1"], "agent.mlp.folds"),
])
def test_network_router_settings_are_checked(overrides: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_config(DEFAULT, overrides)


FRESH_PROCESS = r"""
import json, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
import torch
extra = {"metadata.json": ""}
policy = torch.jit.load(sys.argv[1], _extra_files=extra)
request = json.load(open(sys.argv[2], encoding="utf-8"))
routes = {str(w): policy.route(request["queries"], w) for w in request["weights"]}
ours = [m for m in sys.modules if m.split(".")[0] in {"data", "envs", "agents", "policies", "training"}]
print(json.dumps({"routes": routes, "agent": json.loads(extra["metadata.json"])["agent"], "project_modules": ours}))
"""


@pytest.mark.parametrize("make", [mlp, mf], ids=["mlp", "mf"])
def test_exported_network_router_decides_as_the_agent_in_a_fresh_process(
    make: Callable[..., QualityNetworkRouter], tmp_path: Path
) -> None:
    """Fitted on the demo log's training split, exported as train.py does, loaded without routerl."""
    config = load_config(DEFAULT, [])
    log = load_log(config.data.path).log
    splits = split(log, config.data.fractions, config.seed)
    train, test = log.subset(splits.train), log.subset(splits.test)
    featurizer = TextFeaturizer(config.featurizer).fit(train.queries)
    agent = make(log.n_models, featurizer.dimension)
    agent.fit(featurizer.transform(train.queries), train.quality, train.cost)
    metadata = PolicyMetadata(models=list(log.models), default_cost_weight=config.reward.cost_weight,
                              cost_weight_range=[0.0, 3000.0], score_kind=agent.score_kind, agent=agent.name,
                              featurizer={}, data_fingerprint=log.fingerprint)
    policy = save_policy(build_text_policy(featurizer, agent.linear_map(), agent.head(), metadata), metadata,
                         tmp_path / "policy.pt")
    weights = [0.0, 300.0, 3000.0]
    request = tmp_path / "queries.json"
    request.write_text(json.dumps({"queries": test.queries, "weights": weights}), encoding="utf-8")
    done = run_isolated(FRESH_PROCESS, str(policy), str(request), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    exported = json.loads(done.stdout)
    assert exported["project_modules"] == [] and exported["agent"] == agent.name
    features = featurizer.transform(test.queries)
    for weight in weights:
        assert exported["routes"][str(weight)] == [log.models[i] for i in agent.predict(features, weight)], weight
    assert len({tuple(routes) for routes in exported["routes"].values()}) > 1  # the weight changes decisions


def test_train_py_trains_and_exports_a_network_router(tmp_path: Path) -> None:
    """``agent.kind=mf`` through train.py: fitted (its own learning), evaluated, exported as utility scores.

    mlp goes the same way (the registry, the shared router class and head); its export is checked above.
    """
    kind, out = "mf", tmp_path / "mf"
    done = run_train("--out", str(out), "--set", f"agent.kind={kind}", "--set", "evaluation.bootstrap=0",
                     "--set", "agent.mf.folds=3")
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["policy"]["agent"] == kind and report["policy"]["learning"] == "fit"
    assert report["test"]["mean_reward"] > report["baselines"]["random"]["mean_reward"]
    policy = load_policy(out / "policy.pt")
    assert policy.metadata["agent"] == kind and policy.score_kind == "utility"


@pytest.mark.parametrize("make", [mlp, mf], ids=["mlp", "mf"])
def test_embedding_policy_scores_equal_the_agents(make: Callable[..., QualityNetworkRouter]) -> None:
    """``input: embedding``: the policy takes the embedding without its bias column and adds the map's last row."""
    x, quality, cost = routed_world(300)
    agent = make().fit(x, quality, cost * (1.0 + x[:, :3] ** 2))
    metadata = PolicyMetadata(models=["a", "b", "c"], default_cost_weight=30.0, cost_weight_range=[0.0, 3000.0],
                              score_kind="utility", agent=agent.name, featurizer={}, data_fingerprint="",
                              input_kind="embedding")
    policy = build_embedding_policy(agent.linear_map(), agent.head(), metadata)
    for weight in (0.0, 3000.0):
        scores = policy.scores_features(torch.from_numpy(x[:, :-1]), weight).numpy()
        np.testing.assert_allclose(scores, agent.scores(x, weight), rtol=1e-5, atol=1e-6)
