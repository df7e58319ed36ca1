"""Evaluate any router on a held-out log and build the report's sections: :func:`evaluate`.

One function for every caller: ``train.py`` (the test split), ``python -m evaluation`` (an
exported policy on any log) and the cross-validated comparison (pooled out-of-fold choices).
A router is seen only through ``decide(cost_weight) -> model index per query``
(:data:`evaluation.sweep.Decide`). What differs between the callers is data
(:class:`EvaluationPlan`): the operating weight or a budget to calibrate it, baselines, and,
for a bandit-feedback log, the reward model's predictions. The sections are: metrics at the
operating point with bootstrap intervals (``test``), the baselines, the cost-weight frontier
with AIQ, costs to reach the reference model's quality (by default the best single model's,
:func:`best_single_model`) and the single-model hull ("zero router") and per-query oracle beside
it (``frontier``), the budget, and off-policy estimates.

A bandit-feedback log is evaluated on its DR table of estimated outcomes
(:func:`envs.estimators.counterfactual_log`), and every off-policy estimator of
:mod:`evaluation.ope` is reported beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from data.routing_log import RoutingLog
from envs.estimators import PredictedOutcomes, counterfactual_log
from evaluation.bootstrap import Bootstrap, interval
from evaluation.budget import BudgetCalibration
from evaluation.capacity import CapacityPlan
from evaluation.frontier import Frontier, TwoModelGap, cost_to_reach, cost_weight_grid
from evaluation.metrics import best_quality_actions, oracle_actions, quality_matrix, route_metrics
from evaluation.ope import off_policy_estimates
from evaluation.sweep import AIQRange, Decide, WeightSweep


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class EvaluationConfig:
    """How held-out evaluation is done."""

    frontier_points: int = 41  # cost weights swept: 0, then log-spaced around the break-even weights
    bootstrap: int = 1000  # resamples of the test queries for the 95% intervals (0: none)
    # for "cost to reach x% of its quality"; None: the best single model (highest mean quality, cheaper on ties)
    reference_model: str | None = None
    quality_targets: tuple[float, ...] = (0.95, 1.0)  # shares of the reference model's quality
    # gCO2e per kWh of the grid that powers the models: carbon = energy_wh / 1000 × this (evaluation.objectives).
    # Default: the world average of 2023 over the life cycle, ~480 (Ember, Global Electricity Review 2024)
    grid_intensity: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 480.0


@dataclass(frozen=True)
class EvaluationPlan:
    """What :func:`evaluate` reports besides the router's frontier, and how."""

    config: EvaluationConfig
    seed: int  # of the bootstrap resamples (and of Replay's rejection draws)
    cost_weight: float | None  # the operating point; None: the frontier only (no metrics at one weight)
    weights: np.ndarray | None = None  # the swept weights; None: from the evaluated log's single models
    baselines: Mapping[str, Decide] | None = None  # reported beside the router, with the per-query oracle
    expected: bool = False  # also metrics on the synthetic expected quality, when the log has it
    budget: BudgetCalibration | None = None  # choose the operating weight for a target instead
    predictions: PredictedOutcomes | None = None  # m̂ on a bandit-feedback log's queries (required there)
    max_weight: float | None = None  # cap on the importance weights of the bandit estimates
    subject: str = "Test split"  # what the log is, for an estimated table's "evaluated_on"
    capacity: CapacityPlan | None = None  # caps per model: the router with and without them (evaluation.capacity)
    progress: bool = False  # a progress bar over the swept weights


@dataclass(frozen=True)
class Evaluation:
    """The evaluation's report sections and what callers reuse (weight, choices, sweep, resamples)."""

    cost_weight: float | None  # the operating weight (calibrated under a budget)
    actions: np.ndarray | None  # the router's choices at it
    sections: dict[str, Any]
    sweep: WeightSweep
    bootstrap: Bootstrap | None

    def report(self, header: dict[str, Any]) -> dict[str, Any]:
        """The report: the caller's sections saying what was evaluated (data, policy, ...), then these."""
        return {**header, **self.sections}


def evaluate(log: RoutingLog, decide: Decide, plan: EvaluationPlan) -> Evaluation:
    """Evaluate ``decide`` on ``log`` (full-information, or bandit feedback with ``plan.predictions``)."""
    table = _outcome_table(log, plan)
    config = plan.config
    bootstrap = Bootstrap(table.n_queries, config.bootstrap, plan.seed) if config.bootstrap > 0 else None
    weight, budget = plan.cost_weight, None
    if plan.budget is not None:
        weight, budget = plan.budget.run(table, decide)
    sections: dict[str, Any] = {}
    after_frontier: dict[str, Any] = {}
    actions = None
    if weight is not None:
        actions = decide(weight)
        sections["test"] = metrics_with_intervals(table, actions, weight, bootstrap)
        if plan.baselines is not None:
            sections["baselines"] = baseline_metrics(table, plan.baselines, weight, bootstrap, plan.expected)
        if plan.expected and _has_expected(table):
            after_frontier["test_expected"] = route_metrics(table, actions, weight, expected=True)
        if budget is not None:
            after_frontier["budget"] = budget
        if plan.capacity is not None:
            after_frontier["capacity"] = plan.capacity.run(table, actions, weight)
        if plan.predictions is not None:
            after_frontier["evaluated_on"] = f"{plan.subject}, estimated by DR from bandit feedback"
            after_frontier["off_policy"] = off_policy_estimates(
                log, actions, plan.predictions, weight, bootstrap, plan.seed, plan.max_weight
            )
    weights = sweep_weights(table, config) if plan.weights is None else plan.weights
    sweep = WeightSweep.run(table, decide, weights, progress=plan.progress)
    sections["frontier"] = frontier_report(table, sweep, sections.get("test"), config, bootstrap)
    return Evaluation(weight, actions, sections | after_frontier, sweep, bootstrap)


def _outcome_table(log: RoutingLog, plan: EvaluationPlan) -> RoutingLog:
    """The log itself (full information), or its DR table of estimated outcomes (bandit feedback)."""
    if log.feedback == "full":
        if plan.predictions is not None:
            raise ValueError("reward-model predictions are for bandit-feedback logs; this log has full information")
        return log
    if plan.predictions is None:
        raise ValueError("a bandit-feedback log needs the reward model's predictions (EvaluationPlan.predictions)")
    return counterfactual_log(log, plan.predictions, "dr", plan.max_weight)


def _has_expected(log: RoutingLog) -> bool:
    """Whether the synthetic ground truth covers every cell (not on a table estimated from bandit feedback)."""
    return log.expected_quality is not None and log.feedback == "full"


def zero_router(log: RoutingLog) -> Frontier:
    """The hull of the single models' (mean cost, mean quality) points."""
    return Frontier.from_points(log.cost.mean(axis=0), log.quality.mean(axis=0))


def best_single_model(log: RoutingLog) -> str:
    """The model of highest mean quality on ``log``, the cheaper on ties: the default reference.

    "Cost to reach 95% of the reference's quality" then asks what a router pays for nearly the
    best quality any single model gives (issue 16), not for the quality of the dearest model,
    which on some logs (RouteProfile's) is not the best.
    """
    mean_quality, mean_cost = log.quality.mean(axis=0), log.cost.mean(axis=0)
    return log.models[int(np.lexsort((mean_cost, -mean_quality))[0])]


def sweep_weights(log: RoutingLog, config: EvaluationConfig) -> np.ndarray:
    """The cost weights to sweep, from ``log``'s single-model break-even weights."""
    return cost_weight_grid(np.nanmean(log.quality, axis=0), np.nanmean(log.cost, axis=0), config.frontier_points)


def metrics_with_intervals(
    log: RoutingLog,
    actions: np.ndarray,
    cost_weight: float,
    bootstrap: Bootstrap | None,
    expected: bool = False,
) -> dict[str, Any]:
    """:func:`route_metrics` plus a bootstrap 95% interval for each mean (``*_ci95`` keys)."""
    metrics: dict[str, Any] = route_metrics(log, actions, cost_weight, expected)
    if bootstrap is None:
        return metrics
    rows = np.arange(log.n_queries)
    quality = quality_matrix(log, expected)
    rewards = quality - cost_weight * log.cost
    per_query = {
        "mean_quality": quality[rows, actions],
        "mean_cost": log.cost[rows, actions],
        "mean_reward": rewards[rows, actions],
        "regret": rewards.max(axis=1) - rewards[rows, actions],
    }
    bounds = bootstrap.mean_intervals(np.stack(list(per_query.values()))).tolist()
    for key, (low, high) in zip(per_query, bounds):
        metrics[f"{key}_ci95"] = [low, high]
    return metrics


def baseline_metrics(
    log: RoutingLog, baselines: Mapping[str, Decide], cost_weight: float, bootstrap: Bootstrap | None, expected: bool
) -> dict[str, Any]:
    """Metrics (with intervals) of each baseline, then of the per-query oracle on a full-information log.

    With ``expected`` and synthetic ground truth, the oracle on the expected quality too (no
    intervals: it is the ceiling the data could reach, not a router's estimate).
    """
    chosen = {name: decide(cost_weight) for name, decide in baselines.items()}
    if log.feedback == "full":  # the per-query oracle needs every model's outcome
        chosen["oracle"] = oracle_actions(log, cost_weight)
    metrics = {name: metrics_with_intervals(log, actions, cost_weight, bootstrap) for name, actions in chosen.items()}
    if expected and _has_expected(log):
        metrics["expected oracle"] = route_metrics(
            log, oracle_actions(log, cost_weight, expected=True), cost_weight, expected=True
        )
    return metrics


def frontier_report(
    log: RoutingLog,
    sweep: WeightSweep,
    operating: dict[str, Any] | None,
    config: EvaluationConfig,
    bootstrap: Bootstrap | None,
) -> dict[str, Any]:
    """Frontier, AIQ (with interval), cost to reach x% of the reference, savings, two-model gap.

    ``operating``: the metrics at the operating point, placed against the zero router (None:
    no operating point, as in the cross-validated comparison).
    """
    aiq_range = AIQRange.of(log)
    hull, zero = sweep.frontier(), zero_router(log)
    mean_cost, mean_quality = log.cost.mean(axis=0), log.quality.mean(axis=0)
    reference = config.reference_model or best_single_model(log)
    if reference not in log.models:
        raise ValueError(f"reference model {reference!r} is not among the log's models {list(log.models)}")
    ref_index = log.models.index(reference)
    ref_quality, ref_cost = float(mean_quality[ref_index]), float(mean_cost[ref_index])
    equal_quality = cost_to_reach(hull, ref_quality)
    report: dict[str, Any] = {
        "aiq": aiq_range.aiq(hull),
        "zero_router_aiq": aiq_range.aiq(zero),
        "cost_range": list(aiq_range.cost_range),
        "cost_weights": sweep.weights.tolist(),
        "points": sweep.points(log.models),
        "hull": hull.to_json(),
        "single_models": {
            m: {"cost": float(c), "quality": float(q)} for m, c, q in zip(log.models, mean_cost, mean_quality)
        },
        # The per-query oracle needs real outcomes: none on a table estimated from bandit feedback.
        "oracle": None
        if log.feedback == "bandit"
        else {
            "cost": float(log.cost[np.arange(log.n_queries), best_quality_actions(log)].mean()),
            "quality": float(log.quality.max(axis=1).mean()),
        },
    }
    if operating is not None:
        report["operating_point"] = {"cost": operating["mean_cost"], "quality": operating["mean_quality"]}
        report["margin_over_zero_router"] = operating["mean_quality"] - float(zero.quality_at(operating["mean_cost"]))
    report |= {
        "reference_model": reference,
        "cost_to_reach": _cost_to_reach(hull, zero, ref_quality, ref_cost, config.quality_targets),
        "cost_saved_at_reference_quality": None
        if equal_quality is None
        else {"usd_per_query": ref_cost - equal_quality, "share": (ref_cost - equal_quality) / ref_cost},
        "note": "hulls allow mixing two operating points at random (non-decreasing upper convex hull); "
        "AIQ is the frontier's mean quality over cost_range, the single models' cost span: the hull, flat "
        "after its dearest point and, below its cheapest, mixed with the cheapest single model",
    }
    if bootstrap is not None:
        report["aiq_ci95"] = interval(sweep.bootstrap_aiq(bootstrap, aiq_range), report["aiq"])
    two_model = _two_model(log, sweep, mean_quality)
    if two_model is not None:
        report["two_model"] = two_model
    return report


def _cost_to_reach(
    hull: Frontier, zero: Frontier, ref_quality: float, ref_cost: float, targets: tuple[float, ...]
) -> dict[str, Any]:
    """Per target share of the reference's quality: the router's and the zero router's least cost."""
    reach: dict[str, Any] = {}
    for share in targets:
        policy_cost = cost_to_reach(hull, share * ref_quality)
        reach[f"{round(share * 100)}%"] = {
            "target_quality": share * ref_quality,
            "policy_cost": policy_cost,
            "zero_router_cost": cost_to_reach(zero, share * ref_quality),
            "policy_cost_share_of_reference": None if policy_cost is None else policy_cost / ref_cost,
        }
    return reach


def _two_model(log: RoutingLog, sweep: WeightSweep, mean_quality: np.ndarray) -> dict[str, Any] | None:
    """RouteLLM's APGR and CPT for a pool of two models of different quality (else None)."""
    if log.n_models != 2:
        return None
    weak, strong = int(np.argmin(mean_quality)), int(np.argmax(mean_quality))
    if not mean_quality[strong] > mean_quality[weak]:
        return None
    gap = TwoModelGap.from_points(
        (sweep.actions == strong).mean(axis=1),
        sweep.quality.mean(axis=1),
        float(mean_quality[weak]),
        float(mean_quality[strong]),
    )
    return {"weak": log.models[weak], "strong": log.models[strong], "apgr": gap.apgr, "cpt": gap.cpt}
