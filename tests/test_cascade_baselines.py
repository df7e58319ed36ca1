"""Cascade baselines: every call is paid for, the rules do what they say by hand, and on a log where a
response reveals its correctness the threshold cascade beats every never-escalate router."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import CASCADE_COSTS, revealing_cascade_log

from data.featurizer import FeaturizerConfig, TextFeaturizer
from data.loading import load_log
from data.responses import read_responses
from data.splits import SplitFractions, split
from evaluation.cascade import (
    CascadeBaselineConfig,
    CascadePoint,
    CascadeSplit,
    ScorerConfig,
    agreement_points,
    cascade_chains,
    decided_point,
    evaluate_cascade_baselines,
    frontier_summary,
    pareto_models,
    pre_generation_points,
    threshold_cascade,
)
from evaluation.sweep import WeightSweep
from policies.response_features import response_table

COSTS = CASCADE_COSTS  # cheap, mid, strong (USD per call)


def revealing_split(n: int, seed: int) -> CascadeSplit:
    """:func:`conftest.revealing_cascade_log` as the baselines see it, with query features that tell nothing."""
    log, responses = revealing_cascade_log(n, seed)
    features = np.random.default_rng(seed).standard_normal((n, 3))
    return CascadeSplit(log, features, response_table(responses))


def test_threshold_cascade_beats_never_escalate_where_a_response_reveals_correctness() -> None:
    train, test = revealing_split(600, seed=0), revealing_split(600, seed=1)
    config = CascadeBaselineConfig(thresholds=11, scorer=ScorerConfig(cs=3, folds=3))
    report = evaluate_cascade_baselines(train, test, config=config)
    threshold, single = report["baselines"]["threshold cascade"], report["baselines"]["single models"]
    assert threshold["aiq"] > single["aiq"] + 0.05
    # the oracle cascade: the cheap model for every query, the strong one only where the cheap one is wrong
    wrong = 1.0 - test.log.quality[:, 0].mean()
    oracle_share = (COSTS[0] + wrong * COSTS[2]) / COSTS[2]
    reached = threshold["cost_to_reach"]["100%"]
    assert reached["share_of_reference_cost"] == pytest.approx(oracle_share, abs=0.01)
    assert reached["calls"] == pytest.approx(1.0 + wrong, abs=0.01)
    assert single["cost_to_reach"]["100%"]["share_of_reference_cost"] == pytest.approx(1.0)
    assert report["reference_model"] == report["strong_model"] == "strong"


def test_threshold_cascade_walks_the_chain_by_hand() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.3]])  # P of the chain's first two models
    called, returned = threshold_cascade(4, (3, 1, 2), probabilities, threshold=0.5)
    assert returned.tolist() == [3, 1, 2]
    assert called.tolist() == [
        [False, False, False, True],
        [False, True, False, True],
        [False, True, True, True],
    ]


def test_every_call_is_paid_for_and_only_called_models_are_returned() -> None:
    test = revealing_split(4, seed=3)
    called = np.array([[True, False, True]] * 4)
    point = decided_point(test.log, "x", called, np.array([0, 2, 2, 0]))
    assert point.cost == pytest.approx(COSTS[0] + COSTS[2]) and point.calls == 2.0
    with pytest.raises(ValueError, match="only return"):
        decided_point(test.log, "x", called, np.array([1, 2, 2, 0]))


def test_agreement_rule_escalates_exactly_when_the_pair_disagrees() -> None:
    test = revealing_split(500, seed=4)
    (point,) = agreement_points(test, [(0, 1)], strong=2)
    agree = (test.log.quality[:, 0] == 1) & (test.log.quality[:, 1] == 1)  # both say "b"
    assert point.calls == pytest.approx(2.0 + (~agree).mean())
    assert point.cost == pytest.approx(COSTS[0] + COSTS[1] + (~agree).mean() * COSTS[2])
    assert point.quality == 1.0  # agreeing answers are right here, and the strong model always is


def test_pre_generation_makes_one_call_per_query() -> None:
    test = revealing_split(50, seed=5)
    actions = np.stack([np.zeros(50, dtype=np.int64), np.full(50, 2)])
    points = pre_generation_points(test.log, WeightSweep.from_actions(test.log, np.array([1e3, 0.0]), actions))
    assert [p.calls for p in points] == [1.0, 1.0]
    assert [p.cost for p in points] == pytest.approx([COSTS[0], COSTS[2]])


def test_chains_run_cheapest_first_over_pareto_models_to_the_best() -> None:
    log = revealing_split(200, seed=6).log
    assert pareto_models(log) == [0, 1, 2]
    assert cascade_chains(log, max_chain=3) == [(0, 2), (1, 2), (0, 1, 2)]
    assert cascade_chains(log, max_chain=2) == [(0, 2), (1, 2)]


def test_frontier_summary_mixes_the_calls_of_two_vertices() -> None:
    log = revealing_split(100, seed=7).log
    points = [
        CascadePoint("a", 0.001, 0.5, 1.0),
        CascadePoint("b", 0.003, 1.0, 3.0),
        CascadePoint("c", 0.004, 0.9, 2.0),
    ]
    summary = frontier_summary(points, log, reference=2, targets=(0.75,))
    assert [v["label"] for v in summary["hull"]] == ["a", "b"]
    reach = summary["cost_to_reach"]["75%"]
    assert reach["cost"] == pytest.approx(0.002) and reach["calls"] == pytest.approx(2.0)
    assert reach["share_of_reference_cost"] == pytest.approx(0.002 / COSTS[2])


def test_routerbench_baselines_on_held_out_queries(routerbench: Path) -> None:
    log = load_log(routerbench).log
    table = response_table(read_responses(routerbench, log))
    parts = split(log, SplitFractions(train=0.7, validation=0.0, test=0.3), seed=0)
    featurizer = TextFeaturizer(FeaturizerConfig(components=8))
    train_x = featurizer.fit_transform(log.subset(parts.train).queries)
    test_log = log.subset(parts.test)
    train = CascadeSplit(log.subset(parts.train), train_x, table.subset(parts.train))
    test = CascadeSplit(test_log, featurizer.transform(test_log.queries), table.subset(parts.test))
    each_model = np.repeat(np.arange(log.n_models)[:, None], test_log.n_queries, axis=1)
    sweep = WeightSweep.from_actions(test_log, np.arange(log.n_models, dtype=float), each_model)
    config = CascadeBaselineConfig(thresholds=11, max_chain=2, scorer=ScorerConfig(cs=3, folds=3))
    report = evaluate_cascade_baselines(train, test, sweep, config)
    baselines = report["baselines"]
    assert report["reference_model"] == "gpt-4-1106-preview"
    assert set(baselines) == {"single models", "threshold cascade", "agreement", "pre-generation"}
    assert baselines["pre-generation"]["aiq"] == pytest.approx(baselines["single models"]["aiq"])
    for summary in baselines.values():
        assert 0.5 < summary["aiq"] < 1.0
        reach = summary["cost_to_reach"]["95%"]
        assert reach["cost"] is None or reach["calls"] >= 1.0
    assert baselines["agreement"]["cost_to_reach"]["95%"]["calls"] > 2.0  # two calls, then the strong one
