"""Evaluate any router on a held-out full-information log: metrics, frontier, AIQ, intervals.

A router is seen only through ``decide(cost_weight) -> model index per query`` (an in-process
agent on precomputed features, or an exported ``policy.pt`` through :mod:`evaluation.routers`).
The single-model hull ("zero router") and the per-query oracle are always reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass
from tqdm import tqdm

from data.routing_log import RoutingLog
from evaluation.bootstrap import Bootstrap, interval
from evaluation.frontier import Frontier, TwoModelGap, cost_to_reach, cost_weight_grid
from evaluation.metrics import best_quality_actions, quality_matrix, route_metrics

Decide = Callable[[float], np.ndarray]


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class EvaluationConfig:
    """How held-out evaluation is done."""

    frontier_points: int = 41  # cost weights swept: 0, then log-spaced around the break-even weights
    bootstrap: int = 1000  # resamples of the test queries for the 95% intervals (0: none)
    reference_model: str | None = None  # for "cost to reach x% of its quality"; None: the dearest model
    quality_targets: tuple[float, ...] = (0.95, 1.0)  # shares of the reference model's quality


@dataclass(frozen=True)
class Sweep:
    """A router's choices on every query at every swept cost weight."""

    weights: np.ndarray  # (W,)
    actions: np.ndarray  # (W, N)
    quality: np.ndarray  # (W, N) quality of the chosen model
    cost: np.ndarray  # (W, N) cost of the chosen model

    @classmethod
    def run(
        cls,
        log: RoutingLog,
        decide: Decide,
        weights: np.ndarray,
        expected: bool = False,
        progress: bool = False,
    ) -> Sweep:
        """Ask ``decide`` at every weight and look up the outcomes of its choices."""
        chosen = (
            np.asarray(decide(float(w)), dtype=np.int64)
            for w in tqdm(weights, desc="evaluating cost weights", disable=not progress, leave=False)
        )
        actions = np.stack(list(chosen))
        return cls.from_actions(log, weights, actions, expected)

    @classmethod
    def from_actions(cls, log: RoutingLog, weights: np.ndarray, actions: np.ndarray, expected: bool = False) -> Sweep:
        """The outcomes of (W, N) chosen model indices on ``log``."""
        rows = np.arange(log.n_queries)
        quality = quality_matrix(log, expected)
        return cls(np.asarray(weights, dtype=float), actions, quality[rows, actions], log.cost[rows, actions])

    def frontier(self) -> Frontier:
        """Hull of the swept operating points on the whole log."""
        return Frontier.from_points(self.cost.mean(axis=1), self.quality.mean(axis=1))

    def points(self) -> list[dict[str, float]]:
        """(cost weight, mean cost, mean quality) per swept weight."""
        return [
            {"cost_weight": float(w), "cost": float(c), "quality": float(q)}
            for w, c, q in zip(self.weights, self.cost.mean(axis=1), self.quality.mean(axis=1))
        ]

    def bootstrap_aiq(self, bootstrap: Bootstrap, cost_range: tuple[float, float]) -> np.ndarray:
        """AIQ of the hull on each bootstrap resample of the queries (B,)."""
        costs, qualities = bootstrap.means(self.cost), bootstrap.means(self.quality)  # (W, B)
        return np.array(
            [Frontier.from_points(costs[:, b], qualities[:, b]).aiq(cost_range) for b in range(costs.shape[1])]
        )


def single_model_range(log: RoutingLog) -> tuple[float, float]:
    """The cost range spanned by the single models on ``log``: AIQ's default range."""
    costs = log.cost.mean(axis=0)
    return float(costs.min()), float(costs.max())


def zero_router(log: RoutingLog, expected: bool = False) -> Frontier:
    """The hull of the single models' (mean cost, mean quality) points."""
    return Frontier.from_points(log.cost.mean(axis=0), quality_matrix(log, expected).mean(axis=0))


def sweep_weights(train: RoutingLog, config: EvaluationConfig) -> np.ndarray:
    """The cost weights to sweep, from the training split's single-model break-even weights."""
    return cost_weight_grid(np.nanmean(train.quality, axis=0), np.nanmean(train.cost, axis=0), config.frontier_points)


def _with_interval(value: float, samples: np.ndarray | None) -> dict[str, Any]:
    return {"value": value, "ci95": interval(samples) if samples is not None else None}


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
    stacked = bootstrap.means(np.stack(list(per_query.values())))
    for key, samples in zip(per_query, stacked):
        metrics[f"{key}_ci95"] = interval(samples)
    return metrics


def frontier_report(
    log: RoutingLog,
    sweep: Sweep,
    operating: dict[str, Any],
    config: EvaluationConfig,
    bootstrap: Bootstrap | None,
) -> dict[str, Any]:
    """Frontier, AIQ (with interval), cost to reach x% of the reference, savings, two-model gap."""
    cost_range = single_model_range(log)
    hull, zero = sweep.frontier(), zero_router(log)
    mean_cost, mean_quality = log.cost.mean(axis=0), log.quality.mean(axis=0)
    reference = config.reference_model or log.models[int(np.argmax(mean_cost))]
    if reference not in log.models:
        raise ValueError(f"reference model {reference!r} is not among the log's models {list(log.models)}")
    ref_index = log.models.index(reference)
    ref_quality, ref_cost = float(mean_quality[ref_index]), float(mean_cost[ref_index])
    reach: dict[str, Any] = {}
    for share in config.quality_targets:
        key = f"{round(share * 100)}%"
        policy_cost, zero_cost = (
            cost_to_reach(hull, share * ref_quality),
            cost_to_reach(zero, share * ref_quality),
        )
        reach[key] = {
            "target_quality": share * ref_quality,
            "policy_cost": policy_cost,
            "zero_router_cost": zero_cost,
            "policy_cost_share_of_reference": None if policy_cost is None else policy_cost / ref_cost,
        }
    equal_quality = cost_to_reach(hull, ref_quality)
    report: dict[str, Any] = {
        "aiq": hull.aiq(cost_range),
        "zero_router_aiq": zero.aiq(cost_range),
        "cost_range": list(cost_range),
        "cost_weights": sweep.weights.tolist(),
        "points": sweep.points(),
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
        "operating_point": {"cost": operating["mean_cost"], "quality": operating["mean_quality"]},
        "margin_over_zero_router": operating["mean_quality"] - float(zero.quality_at(operating["mean_cost"])),
        "reference_model": reference,
        "cost_to_reach": reach,
        "cost_saved_at_reference_quality": None
        if equal_quality is None
        else {"usd_per_query": ref_cost - equal_quality, "share": (ref_cost - equal_quality) / ref_cost},
        "note": "hulls allow mixing two operating points at random (non-decreasing upper convex hull); "
        "AIQ is the hull's mean quality over cost_range, the single models' cost span",
    }
    if bootstrap is not None:
        report["aiq_ci95"] = interval(sweep.bootstrap_aiq(bootstrap, cost_range))
    if log.n_models == 2:
        weak, strong = int(np.argmin(mean_quality)), int(np.argmax(mean_quality))
        if mean_quality[strong] > mean_quality[weak]:
            gap = TwoModelGap.from_points(
                (sweep.actions == strong).mean(axis=1),
                sweep.quality.mean(axis=1),
                float(mean_quality[weak]),
                float(mean_quality[strong]),
            )
            report["two_model"] = {
                "weak": log.models[weak],
                "strong": log.models[strong],
                "apgr": gap.apgr,
                "cpt": gap.cpt,
            }
    return report


def paired_aiq_difference(
    first: Sweep, second: Sweep, bootstrap: Bootstrap, cost_range: tuple[float, float]
) -> dict[str, Any]:
    """AIQ(first) − AIQ(second) with a paired bootstrap 95% interval (same resamples for both)."""
    value = first.frontier().aiq(cost_range) - second.frontier().aiq(cost_range)
    samples = first.bootstrap_aiq(bootstrap, cost_range) - second.bootstrap_aiq(bootstrap, cost_range)
    return _with_interval(value, samples)
