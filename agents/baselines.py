"""Honest baselines: random, cheapest, best single model (on the training split).

The per-query oracle needs the outcomes themselves, so it lives in evaluation, not here.
Each baseline has the same ``predict(features, cost_weight)`` face as the learning agents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.routing_log import RoutingLog


@dataclass(frozen=True)
class RandomRouter:
    """Uniformly random model per query (seeded)."""

    n_models: int
    seed: int = 0
    name: str = "random"

    def predict(self, features: np.ndarray, cost_weight: float | None = None) -> np.ndarray:
        """A seeded uniform draw per query; the same features give the same draws."""
        return np.random.default_rng(self.seed).integers(self.n_models, size=len(features))


@dataclass(frozen=True)
class SingleModelRouter:
    """Always the same model, chosen from training means.

    With ``by_reward`` it picks, at each cost weight w, the model with the highest mean training
    reward mean_quality − w · mean_cost ("best single model"); otherwise the cheapest model.
    """

    mean_quality: np.ndarray
    mean_cost: np.ndarray
    by_reward: bool
    name: str

    @classmethod
    def best(cls, train: RoutingLog) -> SingleModelRouter:
        """The best single model on the training split, re-chosen for each cost weight."""
        return cls(np.nanmean(train.quality, axis=0), np.nanmean(train.cost, axis=0), True, "best single")

    @classmethod
    def cheapest(cls, train: RoutingLog) -> SingleModelRouter:
        """The model with the lowest mean training cost."""
        return cls(np.nanmean(train.quality, axis=0), np.nanmean(train.cost, axis=0), False, "cheapest")

    def choice(self, cost_weight: float) -> int:
        """The model index this baseline routes every query to at ``cost_weight``."""
        if self.by_reward:
            return int(np.argmax(self.mean_quality - cost_weight * self.mean_cost))
        return int(np.argmin(self.mean_cost))

    def predict(self, features: np.ndarray, cost_weight: float | None = None) -> np.ndarray:
        """The same model for every query."""
        return np.full(len(features), self.choice(cost_weight or 0.0), dtype=np.int64)
