"""The exported policy for logs that carry the user's own query embeddings (``input_kind`` "embedding").

scores_features(x, w) = head(x @ feature_map[:D] + feature_map[D], w)

The service must compute the same embedding (same model, same normalisation) as the log's
``embedding`` column: the policy cannot see text, and its text methods raise a clear error.
"""

from typing import List

import torch

from policies.cost_weight import checked_cost_weight

TEXT_REFUSED = "this policy routes on embeddings (input_kind 'embedding'): call scores_features / route_features"


class EmbeddingRoutingPolicy(torch.nn.Module):
    """Linear map of the embedding (plus a bias row) and a head, with the model names."""

    model_names: List[str]
    default_weight: float
    weight_low: float
    weight_high: float
    clamp_weight: bool
    feature_map: torch.Tensor
    refusal: str

    def __init__(self, feature_map: torch.Tensor, head: torch.nn.Module, models: List[str],
                 default_cost_weight: float, cost_weight_range: List[float], clamp_cost_weight: bool) -> None:
        super().__init__()
        self.register_buffer("feature_map", feature_map.to(torch.float64))
        self.head = head
        self.model_names = list(models)
        self.default_weight = float(default_cost_weight)
        self.weight_low = float(cost_weight_range[0])
        self.weight_high = float(cost_weight_range[1])
        self.clamp_weight = clamp_cost_weight
        self.refusal = TEXT_REFUSED

    @torch.jit.export
    def models(self) -> List[str]:
        """The arms, in index order."""
        return self.model_names

    @torch.jit.export
    def default_cost_weight(self) -> float:
        """The trade-off the policy was trained or calibrated for."""
        return self.default_weight

    @torch.jit.export
    def dimension(self) -> int:
        """D: the embedding length the policy expects."""
        return self.feature_map.shape[0] - 1

    def _scores64(self, features: torch.Tensor, cost_weight: float) -> torch.Tensor:
        weight = checked_cost_weight(cost_weight, self.clamp_weight, self.weight_low, self.weight_high)
        if features.dim() != 2 or features.shape[1] != self.feature_map.shape[0] - 1:
            raise ValueError("features must be (N, D) with D = dimension()")
        hidden = features.to(torch.float64) @ self.feature_map[:-1] + self.feature_map[-1]
        return self.head(hidden, weight)

    @torch.jit.export
    def scores_features(self, features: torch.Tensor, cost_weight: float) -> torch.Tensor:
        """(N, K) float32 scores of (N, D) embeddings, higher is better."""
        return self._scores64(features, cost_weight).to(torch.float32)

    @torch.jit.export
    def route_features(self, features: torch.Tensor, cost_weight: float) -> List[str]:
        """The chosen model's name per embedding (ties to the lower index)."""
        chosen: List[int] = torch.argmax(self._scores64(features, cost_weight), dim=1).tolist()
        return [self.model_names[index] for index in chosen]

    @torch.jit.export
    def scores(self, queries: List[str], cost_weight: float) -> torch.Tensor:
        """Refused: this policy needs embeddings."""
        raise ValueError(self.refusal)

    @torch.jit.export
    def route(self, queries: List[str], cost_weight: float) -> List[str]:
        """Refused: this policy needs embeddings."""
        raise ValueError(self.refusal)

    def forward(self, queries: List[str]) -> torch.Tensor:
        """Refused: this policy needs embeddings."""
        raise ValueError(self.refusal)
