"""Held-out metrics of a routing decision: quality, cost, reward, regret, share per model.

All means are per query; cost is in USD per query. The oracle picks, per query, the model with
the highest reward at the given cost weight (ties to the lower index); with ``expected=True`` it
uses the log's ``expected_quality`` (ground truth of synthetic logs) instead of the realised one.
"""

from __future__ import annotations

import numpy as np

from data.routing_log import RoutingLog


def quality_matrix(log: RoutingLog, expected: bool = False) -> np.ndarray:
    """Realised quality, or the synthetic ground truth ``expected_quality`` when asked for."""
    if expected:
        if log.expected_quality is None:
            raise ValueError("this log has no expected_quality column (only synthetic logs do)")
        return log.expected_quality
    return log.quality


def oracle_actions(log: RoutingLog, cost_weight: float, expected: bool = False) -> np.ndarray:
    """Per-query best model at ``cost_weight`` (evaluation only: it reads the outcomes)."""
    return np.argmax(quality_matrix(log, expected) - cost_weight * log.cost, axis=1)


def best_quality_actions(log: RoutingLog, expected: bool = False) -> np.ndarray:
    """Per-query oracle for quality alone: the best model, ties to the cheapest (RouterBench's)."""
    quality = quality_matrix(log, expected)
    best = quality >= quality.max(axis=1, keepdims=True)
    return np.argmin(np.where(best, log.cost, np.inf), axis=1)


def route_metrics(
    log: RoutingLog, actions: np.ndarray, cost_weight: float, expected: bool = False
) -> dict[str, float | dict[str, float]]:
    """Mean quality, cost, reward and regret of ``actions`` on ``log``, and the share per model."""
    rows = np.arange(log.n_queries)
    quality = quality_matrix(log, expected)
    rewards = quality - cost_weight * log.cost
    chosen_reward = rewards[rows, actions]
    shares = np.bincount(actions, minlength=log.n_models) / max(log.n_queries, 1)
    return {
        "mean_quality": float(quality[rows, actions].mean()),
        "mean_cost": float(log.cost[rows, actions].mean()),
        "mean_reward": float(chosen_reward.mean()),
        "regret": float((rewards.max(axis=1) - chosen_reward).mean()),
        "share_per_model": {model: float(s) for model, s in zip(log.models, shares)},
    }
