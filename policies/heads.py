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


class LogisticUtilityHead(torch.nn.Module):
    """z = [quality logits | estimated cost] (N, 2K) → sigmoid(logit) − w · cost (``score_kind`` "utility")."""

    n_models: int

    def __init__(self, n_models: int) -> None:
        super().__init__()
        self.n_models = n_models

    def forward(self, z: torch.Tensor, cost_weight: float) -> torch.Tensor:
        """Estimated probability of a good answer minus the weighted estimated cost."""
        return torch.sigmoid(z[:, : self.n_models]) - cost_weight * z[:, self.n_models :]


class NearestNeighbourHead(torch.nn.Module):
    """z = the query's dense features (N, d) → mean outcome of its k nearest training queries.

    Cosine similarity against the stored training features; each model's quality and cost are
    averaged over the k neighbours, and utility = quality − w · cost (``score_kind`` "utility").
    """

    k: int

    def __init__(self, train_features: torch.Tensor, quality: torch.Tensor, cost: torch.Tensor, k: int) -> None:
        super().__init__()
        norms = train_features.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.register_buffer("train_unit", (train_features / norms).to(torch.float64))
        self.register_buffer("quality", quality.to(torch.float64))
        self.register_buffer("cost", cost.to(torch.float64))
        self.k = k

    def forward(self, z: torch.Tensor, cost_weight: float) -> torch.Tensor:
        """Utility per model from the k most similar training queries."""
        unit = z / torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp_min(1e-12)
        neighbours = torch.topk(unit @ self.train_unit.T, self.k, dim=1).indices
        return self.quality[neighbours].mean(dim=1) - cost_weight * self.cost[neighbours].mean(dim=1)
