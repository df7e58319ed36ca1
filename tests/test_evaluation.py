"""Evaluation: frontier measures against hand-computed values, intervals, budgets, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_python, run_train_on_routerbench, synthetic_log

from data.loading import load_log
from data.routing_log import RoutingLog
from data.splits import split
from envs.estimators import PredictedOutcomes
from evaluation.bootstrap import Bootstrap, interval
from evaluation.budget import BudgetTarget, budget_report, calibrate
from evaluation.evaluate import EvaluationConfig, EvaluationPlan, evaluate
from evaluation.frontier import Frontier, TwoModelGap, cost_to_reach
from evaluation.sweep import AIQRange, WeightSweep, paired_aiq_difference
from training.config import load_config
from training.run import RunResult


def test_hull_drops_dominated_and_concave_points() -> None:
    hull = Frontier.from_points(np.array([1, 2, 3, 4, 2.5]), np.array([0.5, 0.6, 0.9, 0.8, 0.55]))
    assert hull.costs.tolist() == [1, 3] and hull.qualities.tolist() == [0.5, 0.9]


def test_aiq_by_hand() -> None:
    hull = Frontier.from_points(np.array([1, 2, 3, 4, 2.5]), np.array([0.5, 0.6, 0.9, 0.8, 0.55]))
    cheapest = (1.0, 0.5)  # the hull starts at the cheapest model's point (below it: tests/test_frontier.py)
    assert hull.aiq((1, 3), cheapest) == pytest.approx((0.5 + 0.9) / 2)
    assert hull.aiq((1, 4), cheapest) == pytest.approx((1.4 + 0.9) / 3)  # flat after the last vertex


def test_cost_to_reach_by_hand() -> None:
    hull = Frontier.from_points(np.array([1.0, 3.0]), np.array([0.5, 0.9]))
    assert cost_to_reach(hull, 0.7) == pytest.approx(2.0)
    assert cost_to_reach(hull, 0.4) == pytest.approx(1.0)
    assert cost_to_reach(hull, 0.9) == pytest.approx(3.0)
    assert cost_to_reach(hull, 0.95) is None
    assert cost_to_reach(hull, 0.9 + 1e-15) == 3.0  # above the last vertex by rounding only


def test_apgr_and_cpt_by_hand() -> None:
    gap = TwoModelGap.from_points(np.array([0.5]), np.array([0.8]), weak_quality=0.5, strong_quality=0.9)
    assert gap.apgr == pytest.approx(0.1875 + 0.4375)
    assert gap.cpt["20%"] == pytest.approx(0.2 / 0.75 * 0.5)
    assert gap.cpt["50%"] == pytest.approx(0.5 / 0.75 * 0.5)
    assert gap.cpt["80%"] == pytest.approx(0.5 + 0.05 / 0.25 * 0.5)
    random_mix = TwoModelGap.from_points(np.array([0.5]), np.array([0.7]), 0.5, 0.9)
    assert random_mix.apgr == pytest.approx(0.5)  # a router no better than mixing at random


def _sweep(costs: list[list[float]], qualities: list[list[float]]) -> WeightSweep:
    cost, quality = np.array(costs), np.array(qualities)
    return WeightSweep(np.arange(len(cost), dtype=float), np.zeros(cost.shape, dtype=np.int64), quality, cost)


def test_budget_searches_the_whole_grid() -> None:
    # Mean cost is not monotone in the weight: 0.5, 0.2, 0.4, 0.1; qualities 0.9, 0.6, 0.8, 0.3.
    validation = _sweep([[0.5], [0.2], [0.4], [0.1]], [[0.9], [0.6], [0.8], [0.3]])
    assert calibrate(validation, BudgetTarget("cost", 0.45)) == 2  # spends most of the budget
    assert calibrate(validation, BudgetTarget("cost", 0.3)) == 1
    assert calibrate(validation, BudgetTarget("cost", 0.05)) == 3  # unreachable: the cheapest
    assert calibrate(validation, BudgetTarget("quality", 0.7)) == 2  # cheapest reaching 0.7
    with pytest.raises(Exception, match="finite"):
        BudgetTarget("cost", float("nan"))


def test_budget_report_says_met_by_the_rule_of_the_choice() -> None:
    # One weight, costs 0 and 0.2: mean 0.1 is under 0.15, but mean + 1 SE (0.1 + 0.1/sqrt(2)) is not.
    validation = _sweep([[0.0, 0.2]], [[0.5, 0.7]])
    target = BudgetTarget("cost", 0.15)
    budget = budget_report(validation, validation, target, calibrate(validation, target))
    assert budget["met_on_validation"] is False
    assert budget["validation"]["mean_cost_standard_error"] == pytest.approx(0.1 / np.sqrt(2))
    loose = BudgetTarget("cost", 0.18)  # 0.1 + 0.0707 <= 0.18: met, and said so
    assert budget_report(validation, validation, loose, calibrate(validation, loose))["met_on_validation"] is True


def test_bootstrap_intervals_and_pairing() -> None:
    rng = np.random.default_rng(0)
    values = rng.random(400)
    boot = Bootstrap(400, 500, seed=1)
    low, high = interval(boot.means(values), values.mean())
    assert low < values.mean() < high and high - low < 0.1
    np.testing.assert_array_equal(boot.means(values), Bootstrap(400, 500, seed=1).means(values))
    sweep = _sweep([rng.random(400) * 1e-3 for _ in range(3)], [rng.random(400) for _ in range(3)])
    cheapest_cost, cheapest_quality = np.full(400, 1e-4), rng.random(400)
    aiq_range = AIQRange((1e-4, 1e-3), (1e-4, float(cheapest_quality.mean())), cheapest_cost, cheapest_quality)
    same = paired_aiq_difference(sweep, sweep, Bootstrap(400, 100), aiq_range)
    assert same["value"] == 0 and same["ci95"] == [0.0, 0.0]


def test_bca_interval_by_hand() -> None:
    """BCa (docs in evaluation/bootstrap.py): the quantiles at Φ(z0 + (z0 + z) / (1 − a (z0 + z)))."""
    samples = np.linspace(0.0, 1.0, 1000)  # the q-quantile of these samples is q itself
    assert interval(samples, 0.5) == pytest.approx([0.025, 0.975])  # z0 = 0, a = 0: the percentile interval
    # 300 of the 1000 samples below the estimate: z0 = Φ⁻¹(0.3) = −0.52440, levels Φ(2 z0 ∓ 1.95996)
    assert interval(samples, 0.2999) == pytest.approx([0.0013116, 0.8188952], abs=1e-7)
    # z0 = 0, a = 0.1: levels Φ(−1.95996 / 1.195996) and Φ(1.95996 / 0.804004)
    assert interval(samples, 0.5, acceleration=0.1) == pytest.approx([0.0506305, 0.9926106], abs=1e-7)
    skewed = np.random.default_rng(3).exponential(size=300)
    deviations = skewed - skewed.mean()
    acceleration = np.sum(deviations**3) / (6 * np.sum(deviations**2) ** 1.5)  # Efron & Tibshirani eq. 14.15
    boot = Bootstrap(300, 2000, seed=4)
    expected = interval(boot.means(skewed), skewed.mean(), acceleration=acceleration)
    np.testing.assert_allclose(boot.mean_intervals(skewed), expected, rtol=1e-12)
    np.testing.assert_allclose(boot.mean_intervals(np.stack([skewed, skewed])), [expected, expected], rtol=1e-12)
    percentile = np.quantile(boot.means(skewed), [0.025, 0.975])
    assert expected[0] > percentile[0] and expected[1] > percentile[1]  # moved towards the long (right) tail


def _world(n: int = 200) -> RoutingLog:
    """Three models of rising price; random quality, so that routing by a score matters."""
    rng = np.random.default_rng(0)
    return synthetic_log(rng.random((n, 3)), np.array([1e-4, 5e-4, 2e-3]) * rng.uniform(0.5, 1.5, (n, 3)))


def test_one_evaluation_at_an_operating_point_and_of_recorded_choices() -> None:
    log = _world()
    scores = np.random.default_rng(1).random((log.n_queries, 3))

    def decide(weight: float) -> np.ndarray:
        return np.argmax(scores - weight * log.cost, axis=1)

    config = EvaluationConfig(frontier_points=9, bootstrap=50)
    baselines = {"first": lambda weight: np.zeros(log.n_queries, dtype=np.int64)}
    full = evaluate(log, decide, EvaluationPlan(config, 0, 100.0, baselines=baselines))
    assert list(full.sections) == ["test", "baselines", "frontier"]
    assert list(full.sections["baselines"]) == ["first", "oracle"]
    assert full.sections["baselines"]["oracle"]["mean_reward"] >= full.sections["test"]["mean_reward"]
    assert full.sections["frontier"]["operating_point"]["quality"] == full.sections["test"]["mean_quality"]
    np.testing.assert_array_equal(full.actions, decide(100.0))
    # The recorded choices replay the same frontier; with no operating point, no metrics at one weight.
    replayed = evaluate(log, full.sweep.decide, EvaluationPlan(config, 0, None, weights=full.sweep.weights))
    assert list(replayed.sections) == ["frontier"] and "operating_point" not in replayed.sections["frontier"]
    assert replayed.sections["frontier"]["aiq"] == full.sections["frontier"]["aiq"]
    assert replayed.sections["frontier"]["aiq_ci95"] == full.sections["frontier"]["aiq_ci95"]
    with pytest.raises(ValueError, match="not swept"):
        full.sweep.decide(1.2345)


def test_a_bandit_log_is_evaluated_on_its_dr_table_and_by_every_estimator() -> None:
    full = _world()
    n = full.n_queries
    action = np.random.default_rng(2).integers(3, size=n)
    logged = np.eye(3, dtype=bool)[action]
    bandit = synthetic_log(
        np.where(logged, full.quality, np.nan),
        np.where(logged, full.cost, np.nan),
        feedback="bandit",
        action=action,
        propensity=np.full(n, 1 / 3),
    )
    predictions = PredictedOutcomes(np.full((n, 3), 0.5), np.tile(full.cost.mean(axis=0), (n, 1)), None)

    def decide(weight: float) -> np.ndarray:
        return np.full(n, 0 if weight > 50 else 2)

    config = EvaluationConfig(frontier_points=5, bootstrap=20)
    with pytest.raises(ValueError, match="predictions"):
        evaluate(bandit, decide, EvaluationPlan(config, 0, 100.0))
    plan = EvaluationPlan(config, 0, 100.0, predictions=predictions, subject="logged.jsonl")
    sections = evaluate(bandit, decide, plan).sections
    assert sections["evaluated_on"] == "logged.jsonl, estimated by DR from bandit feedback"
    assert sections["frontier"]["oracle"] is None
    assert set(sections["off_policy"]) >= {"dm", "ips", "snips", "dr", "replay"}
    assert sections["test"]["mean_reward"] == pytest.approx(sections["off_policy"]["dr"]["mean_reward"])


def test_training_report_has_intervals_figure_and_reference_costs(demo_run: RunResult) -> None:
    report, out = demo_run.report, demo_run.directory
    assert (
        report["test"]["mean_quality_ci95"][0]
        <= report["test"]["mean_quality"]
        <= report["test"]["mean_quality_ci95"][1]
    )
    frontier = report["frontier"]
    assert frontier["aiq_ci95"][0] <= frontier["aiq"] <= frontier["aiq_ci95"][1]
    assert frontier["aiq"] >= frontier["zero_router_aiq"]
    assert set(frontier["cost_to_reach"]) == {"95%", "100%"}
    assert (out / "frontier.png").stat().st_size > 10_000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert "charts/frontier" in events.Tags()["images"]


def _demo_test_split(path: Path) -> Path:
    """The demo log's rows of the default run's test split (queries the policy never learned from), at ``path``."""
    config = load_config(ROOT / "configs" / "default.yaml", [])
    log = load_log(config.data.path).log
    held_out = set(log.query_ids[split(log, config.data.fractions, config.seed).test].tolist())
    lines = (ROOT / "data" / "demo" / "demo.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(line for line in lines if json.loads(line)["query_id"] in held_out), encoding="utf-8")
    return path


def test_evaluation_cli_on_an_exported_policy(demo_run: RunResult, tmp_path: Path) -> None:
    """``python -m evaluation`` of the exported policy on the held-out test split reproduces the training report."""
    policy = demo_run.directory / "policy.pt"
    out = tmp_path / "eval"
    held_out = str(_demo_test_split(tmp_path / "test.jsonl"))
    done = run_python("-m", "evaluation", str(policy), "--data", held_out, "--out", str(out), "--bootstrap", "50")
    assert done.returncode == 0, done.stderr
    for name in ("report.json", "report.md", "frontier.png"):
        assert (out / name).is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["policy"]["cost_weight"] == demo_run.report["policy"]["cost_weight"]
    assert report["data"]["queries"] == demo_run.report["split"]["queries"]["test"]
    for key in ("mean_quality", "mean_cost"):
        assert report["test"][key] == pytest.approx(demo_run.report["test"][key], rel=1e-12)
    # The same frontier, swept at other weights (the evaluated log's break-even weights, not those of the
    # queries the policy learned from): its hull has other vertices, a few thousandths of AIQ apart.
    assert report["frontier"]["aiq"] == pytest.approx(demo_run.report["frontier"]["aiq"], abs=3e-3)
    assert report["frontier"]["aiq"] > report["frontier"]["zero_router_aiq"]
    demo = str(ROOT / "data" / "demo" / "demo.jsonl")
    missing = run_python("-m", "evaluation", str(tmp_path / "none.pt"), "--data", demo, timeout=120)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def _budget_run(routerbench: Path, tmp_path: Path, target: float) -> dict:
    out = tmp_path / f"budget-{target}"
    done = run_train_on_routerbench(routerbench, out, "--target-cost", str(target), "--set", "evaluation.bootstrap=0")
    assert done.returncode == 0, done.stderr
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_budget_calibration_on_routerbench(routerbench: Path, tmp_path: Path) -> None:
    """At or under the target on test, and within 10% of it where an operating point is within 10%."""
    for target in (0.0005, 0.001):
        report = _budget_run(routerbench, tmp_path, target)
        budget = report["budget"]
        assert budget["target"] == {"kind": "cost", "value": target}
        assert report["policy"]["cost_weight"] == budget["cost_weight"]
        test_cost = budget["test"]["mean_cost"]
        assert test_cost == pytest.approx(report["test"]["mean_cost"])
        points = [p["cost"] for p in report["frontier"]["points"]]
        assert test_cost <= target, f"test cost {test_cost:.6f} over the target {target}"
        if any(0.9 * target <= c <= target for c in points):
            assert test_cost >= 0.9 * target, f"test cost {test_cost:.6f} not within 10% of {target}"
