"""The one decision rule every agent shares (ARCHITECTURE.md): scores for features and a cost weight.

``scores(features, w)`` is (N, K), higher is better, ``predict`` its argmax; ``linear_map()``
and ``head()`` are what the exporter needs: the agent's scores are ``head(features @
linear_map(), w)``, so the featurizer's projection folds into the linear map.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class Agent(Protocol):
    """What training, evaluation and export use of a learned router."""

    name: str
    score_kind: str

    def fit(self, features: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> Agent:
        """Learn from a full-information log: (N, d) features, (N, K) quality and cost."""
        ...

    def scores(self, features: np.ndarray, cost_weight: float) -> np.ndarray:
        """(N, K) scores at ``cost_weight``; the decision is their argmax (ties to the lower index)."""
        ...

    def predict(self, features: np.ndarray, cost_weight: float | None = None) -> np.ndarray:
        """Model index per query."""
        ...

    def linear_map(self) -> np.ndarray:
        """(d, m): the agent's first linear map of the features."""
        ...

    def head(self) -> torch.nn.Module:
        """TorchScript-able module from (N, m) and the cost weight to (N, K) scores."""
        ...
