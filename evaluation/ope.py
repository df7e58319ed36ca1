"""Off-policy evaluation of any policy on a bandit-feedback log, with bootstrap intervals.

The estimators are the ones the environment uses (:func:`envs.estimators.estimators`, the one
registry):

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
BCa bootstrap interval of the mean of the per-round values (their mean is the estimate;
:mod:`evaluation.bootstrap`), every estimator and measure on the same resamples.

m̂ comes from the caller: training fits it on the training split; ``python -m evaluation``, which
has only the log, cross-fits it (:func:`cross_fitted_predictions`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data.featurizer import TextFeaturizer
from data.routing_log import RoutingLog
from envs.estimators import PredictedOutcomes, RewardModel, estimators, logged_outcomes
from evaluation.bootstrap import Bootstrap


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
    rounds = {
        (name, measure): estimator.estimate_round_rewards(actions, logged, propensities, target_actions, predicted)
        for name, estimator in estimators(max_weight, seed).items()
        for measure, (logged, predicted) in measures.items()
    }
    bounds = None if bootstrap is None else bootstrap.mean_intervals(np.stack(list(rounds.values()))).tolist()
    report: dict[str, Any] = {name: {} for name, _ in rounds}
    for row, ((name, measure), values) in enumerate(rounds.items()):
        report[name][measure] = float(values.mean())
        if bounds is not None:
            report[name][f"{measure}_ci95"] = bounds[row]
    report["rounds"] = int(log.n_queries)
    report["matched_rounds"] = int((actions == target_actions).sum())
    return report


def cross_fitted_predictions(log: RoutingLog, seed: int, folds: int = 2) -> PredictedOutcomes:
    """m̂ for a bandit-feedback log, cross-fitted: each fold is predicted by a model of the others.

    The reward model (per-arm ridge of :mod:`envs.estimators`) sees text features fitted on the
    other folds only, so DM and DR do not reuse a round's own outcome (Chernozhukov et al., 2018).
    """
    fold_of = np.random.default_rng(seed).integers(folds, size=log.n_queries)
    quality, cost = np.zeros((log.n_queries, log.n_models)), np.zeros((log.n_queries, log.n_models))
    actions, _, logged_quality, logged_cost = logged_outcomes(log)
    for fold in range(folds):
        held, kept = fold_of == fold, fold_of != fold
        if not held.any():
            continue
        kept_queries = [q for q, k in zip(log.queries, kept) if k]
        featurizer = TextFeaturizer().fit(kept_queries)
        model = RewardModel(log.n_models).fit(
            featurizer.transform(kept_queries), actions[kept], logged_quality[kept], logged_cost[kept]
        )
        predicted = model.predict(featurizer.transform([q for q, h in zip(log.queries, held) if h]))
        quality[held], cost[held] = predicted.quality, predicted.cost
    return PredictedOutcomes(quality=quality, cost=cost, latency_ms=None)
