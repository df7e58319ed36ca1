"""The cost-weight sweep: a router's choices on every query at every swept cost weight.

A router is seen only through ``decide(cost_weight) -> model index per query`` (:data:`Decide`:
an in-process agent on precomputed features, an exported ``policy.pt`` through
:mod:`evaluation.routers`, or recorded choices such as the pooled out-of-fold decisions of a
cross-validation, :meth:`WeightSweep.decide`). Asking it at each weight of a grid gives the
operating points (mean cost, mean quality) whose hull is the router's frontier
(:mod:`evaluation.frontier`). "Sweep" in routerl means this and nothing else; the search over
hyperparameters is :mod:`training.search`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from data.routing_log import RoutingLog
from evaluation.bootstrap import Bootstrap, interval
from evaluation.frontier import Frontier

Decide = Callable[[float], np.ndarray]


@dataclass(frozen=True)
class WeightSweep:
    """A router's choices on every query at every swept cost weight, and their outcomes."""

    weights: np.ndarray  # (W,)
    actions: np.ndarray  # (W, N)
    quality: np.ndarray  # (W, N) quality of the chosen model
    cost: np.ndarray  # (W, N) cost of the chosen model

    @classmethod
    def run(cls, log: RoutingLog, decide: Decide, weights: np.ndarray, progress: bool = False) -> WeightSweep:
        """Ask ``decide`` at every weight and look up the outcomes of its choices."""
        chosen = (
            np.asarray(decide(float(w)), dtype=np.int64)
            for w in tqdm(weights, desc="evaluating cost weights", disable=not progress, leave=False)
        )
        return cls.from_actions(log, weights, np.stack(list(chosen)))

    @classmethod
    def from_actions(cls, log: RoutingLog, weights: np.ndarray, actions: np.ndarray) -> WeightSweep:
        """The outcomes of (W, N) chosen model indices on ``log``."""
        rows = np.arange(log.n_queries)
        return cls(np.asarray(weights, dtype=float), actions, log.quality[rows, actions], log.cost[rows, actions])

    def decide(self, cost_weight: float) -> np.ndarray:
        """The recorded choices at ``cost_weight``, which must be one of the swept weights."""
        index = np.flatnonzero(self.weights == cost_weight)
        if len(index) == 0:
            raise ValueError(f"cost weight {cost_weight} was not swept: choices exist only at the swept weights")
        return self.actions[index[0]]

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


def paired_aiq_difference(
    first: WeightSweep, second: WeightSweep, bootstrap: Bootstrap, cost_range: tuple[float, float]
) -> dict[str, Any]:
    """AIQ(first) − AIQ(second) with a paired bootstrap 95% interval (same resamples for both)."""
    value = first.frontier().aiq(cost_range) - second.frontier().aiq(cost_range)
    samples = first.bootstrap_aiq(bootstrap, cost_range) - second.bootstrap_aiq(bootstrap, cost_range)
    return {"value": value, "ci95": interval(samples)}
