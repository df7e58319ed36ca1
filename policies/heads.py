"""Scoring heads: from the first linear map's outputs z (N, m) and a cost weight to scores (N, K).

Every agent reduces to "features → one linear map → a small head" (ARCHITECTURE.md, one decision
rule), which lets the exporter fold the featurizer's projection into the linear map.
"""

import torch


class UtilityHead(torch.nn.Module):
    """z = [estimated quality | estimated cost] (N, 2K) → utility = quality − w · cost.

    ``score_kind`` "utility", as LinUCB and the other linear agents give.
    """

    n_models: int

    def __init__(self, n_models: int) -> None:
        super().__init__()
        self.n_models = n_models

    def forward(self, z: torch.Tensor, cost_weight: float) -> torch.Tensor:
        """Utility per arm at ``cost_weight``."""
        return z[:, : self.n_models] - cost_weight * z[:, self.n_models :]
