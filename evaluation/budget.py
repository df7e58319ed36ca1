"""Budget calibration: pick the cost weight that meets a target mean cost or quality.

The weight is chosen on the validation split and stored as the policy's
``default_cost_weight``. A deterministic policy's mean cost need not be monotone in the weight,
so the whole swept grid is searched: for ``target_cost`` the operating point that spends the
most of the budget among those that meet it on validation (ties: higher quality) — on a
frontier more budget buys more quality, while the validation quality of nearby points differs
mostly by noise (0/1 outcomes on a small split); for ``target_quality`` the cheapest point
reaching the target (ties: higher quality). "Meets" is one rule (:func:`meets`: validation mean
cost plus one standard error at most the target; mean quality at least the target), used both
for the choice and for the report's ``met_on_validation``. The report states the target, the
validation value and the test value at the chosen weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from data.routing_log import RoutingLog
from data.schema import DataError
from evaluation.sweep import Decide, WeightSweep

GRID_POINTS = 201  # cost weights searched for a target: finer than the frontier's grid


@dataclass(frozen=True)
class BudgetTarget:
    """A target mean cost (USD per query) or mean quality."""

    kind: Literal["cost", "quality"]
    value: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.value) or self.value < 0:
            raise DataError(f"--target-{self.kind} must be finite and >= 0, got {self.value}")


def standard_errors(values: np.ndarray) -> np.ndarray:
    """Standard error of the mean of each row of ``values`` (W, N): std / sqrt(N)."""
    return values.std(axis=1) / np.sqrt(max(values.shape[1], 1))


def meets(validation: WeightSweep, target: BudgetTarget, margin: float = 1.0) -> np.ndarray:
    """Which swept operating points meet ``target`` on validation (W,): the one rule of the
    selection (:func:`calibrate`) and of the report's ``met_on_validation`` (:func:`budget_report`).

    A cost target is met when the validation mean cost plus ``margin`` standard errors is at most
    the target, so that the held-out cost stays under it too (per-query costs are heavy-tailed:
    a few queries sent to the dearest model dominate the mean of a small split); a quality
    target when the validation mean quality is at least the target.
    """
    if target.kind == "cost":
        return validation.cost.mean(axis=1) + margin * standard_errors(validation.cost) <= target.value
    return validation.quality.mean(axis=1) >= target.value


def calibrate(validation: WeightSweep, target: BudgetTarget, margin: float = 1.0) -> int:
    """Index into the sweep of the best operating point that :func:`meets` ``target`` on validation.

    Among those that meet it: for a cost target the one that spends the most, for a quality
    target the cheapest (ties: higher quality). When none meets it, the closest point is taken
    (cheapest for a cost target, best for a quality target) and the report says that the target
    was not met.
    """
    cost, quality = validation.cost.mean(axis=1), validation.quality.mean(axis=1)
    met = meets(validation, target, margin)
    if not met.any():
        return int(np.argmin(cost)) if target.kind == "cost" else int(np.argmax(quality))
    cost_order = -cost[met] if target.kind == "cost" else cost[met]  # most spent, or cheapest, first
    return int(np.flatnonzero(met)[np.lexsort((-quality[met], cost_order))[0]])


def budget_report(validation: WeightSweep, test: WeightSweep, target: BudgetTarget, chosen: int) -> dict[str, Any]:
    """Target, validation and test values at the chosen weight; whether it :func:`meets` the target."""
    return {
        "target": {"kind": target.kind, "value": target.value},
        "cost_weight": float(validation.weights[chosen]),
        "met_on_validation": bool(meets(validation, target)[chosen]),
        "validation": {
            "mean_cost": float(validation.cost[chosen].mean()),
            "mean_cost_standard_error": float(standard_errors(validation.cost)[chosen]),
            "mean_quality": float(validation.quality[chosen].mean()),
        },
        "test": {
            "mean_cost": float(test.cost[chosen].mean()),
            "mean_quality": float(test.quality[chosen].mean()),
        },
    }


@dataclass(frozen=True)
class BudgetCalibration:
    """Choose the operating weight that meets ``target`` on a validation split (``--target-*``).

    ``decide`` is the router on the validation split's queries; ``weights`` the grid searched
    (:data:`GRID_POINTS` weights around the training split's break-even weights).
    """

    target: BudgetTarget
    validation: RoutingLog
    decide: Decide
    weights: np.ndarray

    def run(self, test: RoutingLog, decide: Decide) -> tuple[float, dict[str, Any]]:
        """The chosen weight, and the ``budget`` section: validation and ``test`` values at it."""
        if self.validation.n_queries == 0:
            raise DataError("--target-cost / --target-quality need a validation split (data.fractions.validation > 0)")
        validation = WeightSweep.run(self.validation, self.decide, self.weights)
        tested = WeightSweep.run(test, decide, self.weights)
        chosen = calibrate(validation, self.target)
        return float(self.weights[chosen]), budget_report(validation, tested, self.target, chosen)
