"""A drift alarm on the reward the served policy earns: the Page–Hinkley test for a drop in the mean.

Page (1954), "Continuous inspection schemes"; the form of Gama et al. (2014), "A survey on concept
drift adaptation", §3.2. Over the rewards r_1, r_2, … of the rounds in arrival order, with their
running mean r̄_t:

    m_t = Σ_{i ≤ t} (r̄_i − r_i − δ),    M_t = min_{i ≤ t} m_i,    alarm when m_t − M_t > λ

m_t grows while rewards fall below their past mean by more than the tolerance δ, so the alarm
fires after a drop of Δ > δ within about λ / (Δ − δ) rounds, and rarely on a stationary stream
(larger λ: fewer false alarms, later detection). The follower feeds it the realised reward of
each joined round (quality − w · cost at the round's weight: what the policy in service, with
its exploration, earns) and restarts it after an alarm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pydantic import ConfigDict, PositiveFloat
from pydantic.dataclasses import dataclass as pydantic_dataclass


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class DriftConfig:
    """The Page–Hinkley test's settings and what an alarm does."""

    tolerance: float = 0.02  # δ: a drop of the mean reward smaller than this is not drift
    threshold: PositiveFloat = 50.0  # λ: the cumulative drop (reward units) that raises the alarm
    keep: float = 0.0  # share of the learner's statistics kept at an alarm (0: learn again from λI alone)

    def __post_init__(self) -> None:
        if not 0.0 <= self.keep <= 1.0:
            raise ValueError(f"drift.keep must be in [0, 1], got {self.keep}")
        if not self.tolerance >= 0.0:
            raise ValueError(f"drift.tolerance must be >= 0, got {self.tolerance}")


@dataclass
class PageHinkley:
    """The test's running state; :meth:`update` returns the offsets of the rounds that raised an alarm."""

    tolerance: float
    threshold: float
    count: int = 0
    mean: float = 0.0
    cumulative: float = 0.0
    minimum: float = 0.0

    def update(self, rewards: np.ndarray) -> list[int]:
        """Feed rewards in order; after each alarm the test starts again from the next round."""
        alarms = []
        for offset, reward in enumerate(np.asarray(rewards, dtype=np.float64).tolist()):
            self.count += 1
            self.mean += (reward - self.mean) / self.count
            self.cumulative += self.mean - reward - self.tolerance
            self.minimum = min(self.minimum, self.cumulative)
            if self.cumulative - self.minimum > self.threshold:
                alarms.append(offset)
                self.count, self.mean, self.cumulative, self.minimum = 0, 0.0, 0.0, 0.0
        return alarms

    @property
    def statistic(self) -> float:
        """m_t − M_t: how close the test is to its threshold."""
        return self.cumulative - self.minimum

    def state(self) -> dict[str, Any]:
        """The running state (JSON)."""
        return asdict(self)
