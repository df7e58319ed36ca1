"""The cost-weight sweep: a router's choices on every query at every swept cost weight.

A router is seen only through ``decide(cost_weight) -> model index per query`` (:data:`Decide`:
an in-process agent on precomputed features, an exported ``policy.pt`` through
:mod:`evaluation.routers`, or recorded choices such as the pooled out-of-fold decisions of a
cross-validation, :meth:`WeightSweep.decide`). Asking it at each weight of a grid gives the
operating points (mean cost, mean quality) whose hull is the router's frontier
(:mod:`evaluation.frontier`), measured by AIQ over a log's :class:`AIQRange`. "Sweep" in routerl
means this and nothing else; the search over hyperparameters is :mod:`training.search`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from data.routing_log import RoutingLog
from evaluation.bootstrap import Bootstrap, interval
from evaluation.frontier import Frontier, Point

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

    def points(self, models: Sequence[str]) -> list[dict[str, Any]]:
        """Per swept weight w: w, mean cost c (USD per query), mean quality q, mean reward q − w·c, and
        the share of the queries routed to each of ``models`` (named in the order of the action indices)."""
        costs, qualities = self.cost.mean(axis=1), self.quality.mean(axis=1)
        counts = np.stack([np.bincount(chosen, minlength=len(models)) for chosen in self.actions])  # (W, K)
        shares = counts / max(self.actions.shape[1], 1)
        return [
            {
                "cost_weight": float(w),
                "cost": float(c),
                "quality": float(q),
                "reward": float(q - w * c),
                "share_per_model": {model: float(share) for model, share in zip(models, row)},
            }
            for w, c, q, row in zip(self.weights, costs, qualities, shares)
        ]

    def bootstrap_aiq(self, bootstrap: Bootstrap, aiq_range: AIQRange) -> np.ndarray:
        """AIQ of the hull on each bootstrap resample of the queries (B,).

        The frontier's start (the cheapest single model's point) is resampled with the same
        queries; the cost range stays the whole log's.
        """
        costs, qualities = bootstrap.means(self.cost), bootstrap.means(self.quality)  # (W, B)
        start_costs, start_qualities = bootstrap.means(np.stack([aiq_range.cheapest_cost, aiq_range.cheapest_quality]))
        return np.array(
            [
                Frontier.from_points(costs[:, b], qualities[:, b]).aiq(
                    aiq_range.cost_range, (float(start_costs[b]), float(start_qualities[b]))
                )
                for b in range(costs.shape[1])
            ]
        )


@dataclass(frozen=True)
class AIQRange:
    """Where AIQ is measured on a log and where every frontier starts (:mod:`evaluation.frontier`).

    ``cost_range`` is the single models' span of mean cost (RouterBench's [c_min, c_max]) and
    ``start`` the cheapest single model's (mean cost, mean quality), with which a frontier is
    mixed below its cheapest operating point. That model's per-query outcomes are kept so that
    a bootstrap resample moves the start with the router's points (:meth:`WeightSweep.bootstrap_aiq`).
    """

    cost_range: tuple[float, float]
    start: Point
    cheapest_cost: np.ndarray  # (N,) the cheapest single model's cost per query
    cheapest_quality: np.ndarray  # (N,) its quality per query

    @classmethod
    def of(cls, log: RoutingLog) -> AIQRange:
        """The single models' cost span on ``log`` and its cheapest model (by mean cost)."""
        mean_cost, mean_quality = log.cost.mean(axis=0), log.quality.mean(axis=0)
        cheapest = int(np.argmin(mean_cost))
        return cls(
            (float(mean_cost[cheapest]), float(mean_cost.max())),
            (float(mean_cost[cheapest]), float(mean_quality[cheapest])),
            log.cost[:, cheapest],
            log.quality[:, cheapest],
        )

    def aiq(self, frontier: Frontier) -> float:
        """AIQ of ``frontier`` over :attr:`cost_range`, starting from :attr:`start`."""
        return frontier.aiq(self.cost_range, self.start)


def paired_aiq_difference(
    first: WeightSweep, second: WeightSweep, bootstrap: Bootstrap, aiq_range: AIQRange
) -> dict[str, Any]:
    """AIQ(first) − AIQ(second) with a paired bootstrap 95% interval (same resamples for both)."""
    value = aiq_range.aiq(first.frontier()) - aiq_range.aiq(second.frontier())
    samples = first.bootstrap_aiq(bootstrap, aiq_range) - second.bootstrap_aiq(bootstrap, aiq_range)
    return {"value": value, "ci95": interval(samples, value)}
