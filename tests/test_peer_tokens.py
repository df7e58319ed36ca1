"""Token mode for the supervised peers (docs/contracts.md §2.10): knn, logistic, mlp and mf estimate tokens.

On a log whose cost is its priced tokens, a peer in token mode decides exactly as in USD mode at the
training prices, and its exported policy follows a new price table at once, in the TorchScript
artifact and in the native engine alike, with no retraining.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.base import Agent, FeaturizedSplit, TrainingTask
from agents.factorisation import FactorisationConfig, MatrixFactorisationRouter
from agents.mlp import MlpConfig, MlpRouter
from agents.peers import LogisticRouter, NearestNeighbourRouter, PeerConfig
from data.featurizer import TextFeaturizer
from data.routing_log import RoutingLog
from policies.artifact import load_policy
from policies.export import PolicyMetadata, build_text_policy, save_policy
from policies.native import load_native_policy
from policies.portable import read_portable, twin_path
from training.cli import main

KINDS = ("knn", "logistic", "mlp", "mf")
#: The head kind each peer exports in token mode.
TOKEN_HEADS = {"knn": "token_nearest_neighbour", "logistic": "token_logistic_utility",
               "mlp": "token_hidden_layer_utility", "mf": "token_hidden_layer_utility"}


def _peer(kind: str, log: RoutingLog, x: np.ndarray) -> Agent:
    """A fresh peer of ``kind`` with a one-point grid (each fits in well under a second)."""
    k, d = log.n_models, x.shape[1]
    if kind == "knn":
        return NearestNeighbourRouter(k, d, PeerConfig(neighbours=(10,)))
    if kind == "logistic":
        return LogisticRouter(k, d, PeerConfig(inverse_regularisation=(1.0,), folds=2))
    if kind == "mlp":
        return MlpRouter(k, d, MlpConfig(hidden_sizes=(8,), weight_decay=(1e-2,), folds=2))
    return MatrixFactorisationRouter(k, d, FactorisationConfig(ranks=(4,), weight_decay=(1e-3,), folds=2))


def _trained(kind: str, priced_world: tuple[RoutingLog, TextFeaturizer, np.ndarray, np.ndarray], tokens: bool) -> Agent:
    log, _, x, prices = priced_world
    return _peer(kind, log, x).train(TrainingTask(FeaturizedSplit(log, x), prices=prices if tokens else None))


def test_the_synthetic_cost_is_its_priced_tokens(priced_world) -> None:
    """What the equality below rests on: cost = (p_in · prompt + p_out · completion) / 1e6 for every outcome."""
    log, _, _, prices = priced_world
    priced = (log.prompt_tokens * prices[:, 0] + log.completion_tokens * prices[:, 1]) / 1e6
    np.testing.assert_allclose(priced, log.cost, rtol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_a_peer_in_token_mode_scores_as_in_usd_mode_at_the_training_prices(priced_world, kind: str) -> None:
    log, _, x, _ = priced_world
    usd, tokens = _trained(kind, priced_world, tokens=False), _trained(kind, priced_world, tokens=True)
    assert (usd.cost_mode, tokens.cost_mode) == ("usd", "tokens")
    for weight in (0.0, 300.0, 5000.0):
        np.testing.assert_allclose(tokens.scores(x, weight), usd.scores(x, weight), rtol=0, atol=1e-9 * (1 + weight))
    cost_columns = {"knn": x.shape[1], "logistic": 3 * log.n_models}
    if kind in cost_columns:  # knn reads the features themselves; logistic [logits | in | out]
        assert tokens.linear_map().shape == (x.shape[1], cost_columns[kind])
    else:  # the networks: [hidden | in | out], one more cost column per model than in USD mode
        assert tokens.linear_map().shape[1] == usd.linear_map().shape[1] + log.n_models


def test_fit_alone_stays_in_usd_mode(priced_world) -> None:
    """Only a token-mode task estimates tokens: ``fit`` (the comparison's folds) keeps USD costs."""
    log, _, x, _ = priced_world
    assert _peer("logistic", log, x).fit(x, log.quality, log.cost).cost_mode == "usd"
    assert _peer("knn", log, x).fit(x, log.quality, log.cost).cost_mode == "usd"


@pytest.mark.parametrize("kind", KINDS)
def test_new_prices_reroute_a_peer_policy_in_both_engines_without_retraining(
    priced_world, kind: str, tmp_path: Path
) -> None:
    log, featurizer, x, prices = priced_world
    agent = _trained(kind, priced_world, tokens=True)
    metadata = PolicyMetadata(models=list(log.models), default_cost_weight=1.0, cost_weight_range=[0.0, 1e5],
                              score_kind="utility", agent=kind, featurizer={}, data_fingerprint="test",
                              cost_mode=agent.cost_mode)
    path = save_policy(build_text_policy(featurizer, agent.linear_map(), agent.head(), metadata), metadata,
                       tmp_path / "policy.pt")
    assert read_portable(twin_path(path)).head_kind == TOKEN_HEADS[kind]
    torchscript, native = load_policy(path), load_native_policy(path)
    assert torchscript.cost_mode == native.cost_mode == "tokens"
    weight = 20000.0
    queries = list(log.queries[:200])
    before = torchscript.module.route(queries, weight)
    assert before == [log.models[i] for i in agent.predict(x[:200], weight)]
    cheap = max(set(before), key=before.count)  # the model most queries go to at this weight
    assert before.count(cheap) > len(queries) / 2
    table = {model: tuple(row) for model, row in zip(log.models, prices.tolist(), strict=True)}
    table[cheap] = (1000 * prices.max(), 1000 * prices.max())
    torchscript.set_prices(table)
    native.set_prices(table)
    after = torchscript.module.route(queries, weight)
    assert cheap not in after and native.route(queries, weight) == after
    np.testing.assert_allclose(native.score_costs(queries, weight), torchscript.score_costs(queries, weight).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_requiring_token_mode_of_ppo_is_one_line_naming_the_kinds_that_estimate_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["--quiet", "--no-tune", "--out", str(tmp_path / "run"), "--set", "agent.kind=ppo",
                   "--set", "data.cost_mode=tokens"])
    error = capsys.readouterr().err.strip()
    assert status == 2 and len(error.splitlines()) == 1, error
    assert error.endswith("agent.kind=ppo with agent.learning=online estimates USD costs only (token mode: "
                          "linucb, knn, logistic, mlp, mf with agent.learning=fit; "
                          "linucb, lints with agent.learning=online)")
    assert not (tmp_path / "run" / "policy.pt").exists()
