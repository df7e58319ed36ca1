"""Budget calibration: pick the cost weight that meets a target mean cost or quality.

The weight is chosen on the validation split and stored as the policy's
``default_cost_weight``. A deterministic policy's mean cost need not be monotone in the weight,
so the whole swept grid is searched: for ``target_cost`` the operating point that spends the
most of the budget among those whose validation cost is at most the target (ties: higher
quality) — on a frontier more budget buys more quality, while the validation quality of nearby
points differs mostly by noise (0/1 outcomes on a small split); for ``target_quality`` the
cheapest point reaching the target (ties: higher quality). The report states the target,
the validation value and the test value at the chosen weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from data.schema import DataError
from evaluation.evaluate import Sweep


@dataclass(frozen=True)
class BudgetTarget:
    """A target mean cost (USD per query) or mean quality."""

    kind: Literal["cost", "quality"]
    value: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.value) or self.value < 0:
            raise DataError(f"--target-{self.kind} must be finite and >= 0, got {self.value}")


def calibrate(validation: Sweep, target: BudgetTarget, margin: float = 1.0) -> int:
    """Index into the sweep of the best operating point that meets ``target`` on validation.

    A point meets a cost target when its validation mean cost plus ``margin`` standard errors
    is at most the target, so that the held-out cost stays under it too (per-query costs are
    heavy-tailed: a few queries sent to the dearest model dominate the mean of a small split).
    When no point meets it, the closest point is taken (cheapest for a cost target, best for a
    quality target) and the report says that the target was not met.
    """
    cost, quality = validation.cost.mean(axis=1), validation.quality.mean(axis=1)
    if target.kind == "cost":
        error = validation.cost.std(axis=1) / np.sqrt(max(validation.cost.shape[1], 1))
        meets = cost + margin * error <= target.value
        if not meets.any():
            return int(np.argmin(cost))
        return int(np.flatnonzero(meets)[np.lexsort((-quality[meets], -cost[meets]))[0]])
    meets = quality >= target.value
    if not meets.any():
        return int(np.argmax(quality))
    return int(np.flatnonzero(meets)[np.lexsort((-quality[meets], cost[meets]))[0]])


def budget_report(validation: Sweep, test: Sweep, target: BudgetTarget, chosen: int) -> dict[str, Any]:
    """Target, validation and test values at the chosen weight."""
    measure = validation.cost if target.kind == "cost" else validation.quality
    met = (
        measure.mean(axis=1)[chosen] <= target.value
        if target.kind == "cost"
        else measure.mean(axis=1)[chosen] >= target.value
    )
    return {
        "target": {"kind": target.kind, "value": target.value},
        "cost_weight": float(validation.weights[chosen]),
        "met_on_validation": bool(met),
        "validation": {
            "mean_cost": float(validation.cost[chosen].mean()),
            "mean_quality": float(validation.quality[chosen].mean()),
        },
        "test": {
            "mean_cost": float(test.cost[chosen].mean()),
            "mean_quality": float(test.quality[chosen].mean()),
        },
    }
