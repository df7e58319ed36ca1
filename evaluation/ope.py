"""Off-policy evaluation of any policy on a bandit-feedback log, with bootstrap intervals.

The estimators are the ones the environment uses (:mod:`envs.estimators`, written once):

* **DM** — the reward model's prediction for the target's choice (biased when m̂ is wrong);
* **IPS** — importance-weighted logged outcomes, π(A|x)/p · y (Horvitz & Thompson, 1952;
  unbiased when the propensities are right; high variance);
* **SNIPS** — IPS divided by the mean weight (Swaminathan & Joachims, 2015; small bias, lower
  variance);
* **DR** — DM plus the importance-weighted residual (Dudík, Langford & Li, 2011; unbiased if
  either the propensities or m̂ is right);
* **Replay** — the mean logged outcome over rounds where the log agrees with the target, with
  rejection by propensity under non-uniform logging (Li et al., 2011).

Each measure (quality, cost, reward at the weight) is estimated separately; the interval is the
percentile bootstrap of the per-round values (their mean is the estimate).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import numpy as np

from data.routing_log import RoutingLog
from envs.estimators import (
    DirectMethod,
    DoublyRobust,
    InverseProbabilityWeighting,
    OffPolicyEstimator,
    PredictedOutcomes,
    Replay,
    SelfNormalizedIPW,
    counterfactual_table,
)
from evaluation.bootstrap import Bootstrap, interval


def estimators(seed: int = 0, max_weight: float | None = None) -> dict[str, OffPolicyEstimator]:
    """The five estimators, keyed by their short names."""
    return {
        "dm": DirectMethod(),
        "ips": InverseProbabilityWeighting(max_weight=max_weight),
        "snips": SelfNormalizedIPW(),
        "dr": DoublyRobust(max_weight=max_weight),
        "replay": Replay(seed=seed),
    }


def logged_outcomes(log: RoutingLog) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(actions, propensities, quality, cost) of the logged rounds of a bandit-feedback log."""
    if log.feedback != "bandit" or log.action is None or log.propensity is None:
        raise ValueError("off-policy evaluation needs a bandit-feedback log (propensity on every row)")
    rows = np.arange(log.n_queries)
    return log.action, log.propensity, log.quality[rows, log.action], log.cost[rows, log.action]


def off_policy_estimates(
    log: RoutingLog,
    target_actions: np.ndarray,
    predictions: PredictedOutcomes,
    cost_weight: float,
    bootstrap: Bootstrap | None,
    seed: int = 0,
    max_weight: float | None = None,
) -> dict[str, Any]:
    """Estimated mean quality, cost and reward of ``target_actions`` on ``log``, per estimator."""
    actions, propensities, quality, cost = logged_outcomes(log)
    measures = {
        "mean_quality": (quality, predictions.quality),
        "mean_cost": (cost, predictions.cost),
        "mean_reward": (quality - cost_weight * cost, predictions.quality - cost_weight * predictions.cost),
    }
    report: dict[str, Any] = {}
    for name, estimator in estimators(seed, max_weight).items():
        entry: dict[str, Any] = {}
        for measure, (logged, predicted) in measures.items():
            rounds = estimator.estimate_round_rewards(actions, logged, propensities, target_actions, predicted)
            entry[measure] = float(rounds.mean())
            if bootstrap is not None:
                entry[f"{measure}_ci95"] = interval(bootstrap.means(rounds))
        report[name] = entry
    report["rounds"] = int(log.n_queries)
    report["matched_rounds"] = int((actions == target_actions).sum())
    return report


def counterfactual_log(
    log: RoutingLog,
    predictions: PredictedOutcomes,
    kind: Literal["dm", "ips", "dr"],
    max_weight: float | None = None,
) -> RoutingLog:
    """A bandit-feedback log as a full-information table of estimated outcomes.

    Cell (i, a) estimates arm a's outcome on query i: DM m̂(x_i, a); IPS w·y on the logged arm
    and 0 elsewhere; DR m̂ plus the importance-weighted residual (Dudík, Langford & Li, 2011).
    A deterministic policy's mean over its cells is exactly that estimator's value, so metrics,
    frontiers and learning run unchanged on the table.
    """
    if log.n_queries == 0:
        return log
    actions, propensities, quality, cost = logged_outcomes(log)
    tables: dict[str, DirectMethod | InverseProbabilityWeighting | DoublyRobust] = {
        "dm": DirectMethod(),
        "ips": InverseProbabilityWeighting(max_weight),
        "dr": DoublyRobust(max_weight),
    }
    estimator = tables[kind]
    return replace(
        log,
        quality=counterfactual_table(estimator, actions, quality, propensities, predictions.quality),
        cost=counterfactual_table(estimator, actions, cost, propensities, predictions.cost),
    )
