"""Capacity offline (issue 22): the multipliers that hold a maximum share per model, their export and report.

The solver (:mod:`evaluation.capacity`) is checked on the scores of a real LinUCB fit on synthetic
logs (the cap holds on held-out queries), against a linear program (the routing it gives loses as
little of the policy's score as the caps allow), with rules (masked models stay masked) and with
caps that cannot hold. Training (``capacity`` / ``train.py --capacity``) is checked end to end on
the demo log: the report's section, the metadata of both policy files, ``--refit-all``, and bad values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from scipy.optimize import linprog

from agents.linucb import LinUCB, LinUCBConfig
from data.featurizer import FeaturizerConfig, TextFeaturizer
from data.schema import DataError
from data.synth.config import SynthConfig
from data.synth.generator import generate
from evaluation.capacity import Capacity
from policies.capacity import read_capacity
from policies.native import load_native_policy
from training.cli import main as train_main
from training.config import load_config
from training.run import RunResult, prepare_directory, train

DEMO_CONFIG = ROOT / "configs" / "default.yaml"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_20_percent_cap_on_the_most_chosen_model_holds_within_2_points_on_held_out_queries(seed: int) -> None:
    """LinUCB on 20,000 synthetic queries; multipliers fitted on 60% of them, the share measured on the rest."""
    log = generate(SynthConfig(queries=20_000, models=5, seed=seed)).routing_log()
    train_rows = np.random.default_rng(seed).random(log.n_queries) < 0.6
    featurizer = TextFeaturizer(FeaturizerConfig(components=16)).fit(list(np.array(log.queries)[train_rows]))
    features = featurizer.transform(log.queries)
    agent = LinUCB(log.n_models, features.shape[1], LinUCBConfig(), 300.0)
    agent.fit(features[train_rows], log.quality[train_rows], log.cost[train_rows])
    scores = agent.scores(features, 300.0)
    top = int(np.bincount(scores[train_rows].argmax(axis=1), minlength=log.n_models).argmax())
    capacity = Capacity(log.models, {log.models[top]: 0.2})
    multipliers = capacity.fit(scores[train_rows])
    held_out = capacity.route(scores[~train_rows], multipliers)
    assert (scores[~train_rows].argmax(axis=1) == top).mean() > 0.3  # the cap binds
    assert abs((held_out == top).mean() - 0.2) <= 0.02
    assert multipliers[top] > 0 and np.count_nonzero(multipliers) == 1


def test_the_capped_routing_keeps_as_much_score_as_the_best_routing_within_the_caps() -> None:
    """Against the linear program of the assignment within the caps (integral: a transportation problem)."""
    rng = np.random.default_rng(7)
    n, k = 400, 4
    scores = rng.normal(size=(n, k)) + np.array([0.8, 0.5, 0.0, -0.2])
    allowed = rng.random((n, k)) < 0.8
    allowed[np.arange(n), rng.integers(k, size=n)] = True
    capacity = Capacity(("a", "b", "c", "d"), {"a": 0.2, "b": 0.25})
    multipliers = capacity.fit(scores, allowed)
    routed = capacity.route(scores, multipliers, allowed)
    limits = np.floor(capacity.caps * n + 1e-9)
    assert allowed[np.arange(n), routed].all()  # masked models stay masked
    assert (np.bincount(routed, minlength=k) <= limits).all()
    cells = np.argwhere(allowed)
    each_query = np.zeros((n, len(cells)))
    each_query[cells[:, 0], np.arange(len(cells))] = 1
    each_model = np.zeros((k, len(cells)))
    each_model[cells[:, 1], np.arange(len(cells))] = 1
    best = linprog(-scores[allowed], A_ub=each_model, b_ub=limits, A_eq=each_query, b_eq=np.ones(n), method="highs")
    assert scores[np.arange(n), routed].sum() == pytest.approx(-best.fun, rel=1e-9)
    assert multipliers[2] == multipliers[3] == 0  # models without a cap have none


def test_caps_that_cannot_hold_are_refused_naming_the_option() -> None:
    models = ("a", "b", "c")
    with pytest.raises(DataError, match=r"capacity: every model is capped and the caps sum to 0.9 < 1"):
        Capacity(models, {"a": 0.3, "b": 0.3, "c": 0.3})
    with pytest.raises(DataError, match=r"capacity: unknown model\(s\) \['z'\]"):
        Capacity(models, {"z": 0.3})
    with pytest.raises(DataError, match=r"capacity: a: a maximum share must be a number in \(0, 1\], got 0"):
        Capacity(models, {"a": 0})
    allowed = np.ones((100, 3), dtype=bool)
    allowed[:50] = [True, False, False]  # a rule sends half the queries to "a" alone
    with pytest.raises(DataError, match="cannot hold with the rule overrides"):
        Capacity(models, {"a": 0.3}).fit(np.zeros((100, 3)), allowed)


def _demo_run(out: Path, *overrides: str, refit: bool = False) -> RunResult:
    config = load_config(DEMO_CONFIG, ["tuning.enabled=false", "evaluation.bootstrap=0", *overrides])
    prepare_directory(out, overwrite=False)
    return train(config, out, quiet=True, refit=refit)


def _metadata(policy: Path) -> dict[str, object]:
    return dict(load_native_policy(policy).metadata)


def test_training_exports_the_multipliers_and_reports_the_shares_with_and_without(tmp_path: Path) -> None:
    result = _demo_run(tmp_path / "run", "capacity={medium-34b: 0.2}")
    section = result.report["capacity"]
    entry = section["models"]["medium-34b"]
    assert entry["test_share_without"] > 0.35  # the demo policy's most chosen model: the cap binds
    assert 0.19 <= entry["fitted_share"] <= 0.2
    assert abs(entry["test_share_with"] - 0.2) <= 0.05  # 470 test queries: a sampling error of ±2 points each way
    assert section["test_with"]["share_per_model"]["medium-34b"] == entry["test_share_with"]
    assert section["test_without"]["mean_quality"] == result.report["test"]["mean_quality"]
    metadata = _metadata(result.directory / "policy.pt")  # the portable twin's (policy.pt's is the same JSON)
    assert metadata["capacity"] == {"medium-34b": {"max_share": 0.2, "multiplier": entry["multiplier"]}}
    assert read_capacity(metadata, ("tiny-1b", "small-7b", "medium-34b", "large-70b", "frontier-xl")) == {
        "medium-34b": (0.2, entry["multiplier"])
    }
    markdown = (result.directory / "report.md").read_text(encoding="utf-8")
    assert "## Capacity" in markdown and "| medium-34b | 0.200 |" in markdown
    assert json.loads((result.directory / "report.json").read_text())["capacity"] == section


def test_a_refit_policy_gets_multipliers_fitted_on_every_query(tmp_path: Path) -> None:
    result = _demo_run(tmp_path / "run", "capacity={medium-34b: 0.2}", refit=True)
    policy = load_native_policy(result.directory / "policy.pt")
    ((share, multiplier),) = read_capacity(policy.metadata, policy.models).values()
    assert share == 0.2 and multiplier != result.report["capacity"]["models"]["medium-34b"]["multiplier"]
    queries = sorted({json.loads(line)["query"] for line in (ROOT / "data/demo/demo.jsonl").open(encoding="utf-8")})
    scores = np.asarray(policy.scores(queries, policy.default_cost_weight), dtype=float)
    offset = scores - multiplier * (np.array(policy.models) == "medium-34b")
    assert (offset.argmax(axis=1) == policy.models.index("medium-34b")).mean() <= 0.2 + 2 / len(queries)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--capacity", "nosuch=0.2"], "capacity: unknown model(s) ['nosuch']; the models are"),
        (["--capacity", "medium-34b=1.5"], "capacity.medium-34b: Input should be less than or equal to 1"),
        (["--capacity", "medium-34b"], "--capacity 'medium-34b': expected MODEL=SHARE"),
        (["--set", "capacity.medium-34b=0"], "capacity.medium-34b: Input should be greater than 0"),
    ],
)
def test_a_bad_capacity_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    status = train_main(["--quiet", "--no-tune", "--out", str(tmp_path / "run"), *flags])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("train.py: error: ") and message in lines[0]
