"""What one run's stages hand each other: featurized splits, the data's summary, the learned agent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.base import Agent
from data.featurizer import TextFeaturizer
from data.routing_log import RoutingLog


@dataclass(frozen=True)
class FeaturizedSplit:
    """One split's log and its features."""

    log: RoutingLog
    features: np.ndarray


@dataclass(frozen=True)
class RunInputs:
    """What evaluation and export need of the data besides the validation and test splits.

    The single-process run takes it from the loaded log; a distributed run
    (:mod:`training.distributed`) from statistics summed over the blocks of the training split.
    """

    data: dict[str, Any]  # the report's data section (fingerprint, rows by fate)
    models: tuple[str, ...]
    fingerprint: str
    split_counts: dict[str, int]
    featurizer: TextFeaturizer | None
    dimension: int  # features per query
    train_mean_quality: np.ndarray  # (K,) on the training split: baselines and the cost-weight grid
    train_mean_cost: np.ndarray  # (K,)


@dataclass(frozen=True)
class Learned:
    """A learned agent, what its training did (``steps``, ``best_step``), and a learned cost weight."""

    agent: Agent
    training: dict[str, Any]
    weight: float | None  # the averaged budget multiplier of online learning, else None
