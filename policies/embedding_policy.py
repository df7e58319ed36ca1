"""The exported policy for logs that carry the user's own query embeddings (``input_kind`` "embedding").

scores_features(x, w) = head(x @ feature_map[:D] + feature_map[D], w), and ``costs_features(x)`` the
head's predicted USD costs of the same z.

The service must compute the same embedding (same model, same normalisation) as the log's
``embedding`` column: the policy cannot see text, and its text methods raise a clear error.
"""

import torch

from policies.arms import Arms
from policies.priced import PricedPolicy

TEXT_REFUSED = "this policy routes on embeddings (input_kind 'embedding'): call scores_features / route_features"


class EmbeddingRoutingPolicy(PricedPolicy):
    """Linear map of the embedding (plus a bias row) and a head, with the arms."""

    feature_map: torch.Tensor
    refusal: str

    def __init__(self, feature_map: torch.Tensor, head: torch.nn.Module, arms: Arms) -> None:
        super().__init__(head, arms)
        self.register_buffer("feature_map", feature_map.to(torch.float64))
        self.refusal = TEXT_REFUSED

    @torch.jit.export
    def dimension(self) -> int:
        """D: the embedding length the policy expects."""
        return self.feature_map.shape[0] - 1

    def _hidden(self, features: torch.Tensor) -> torch.Tensor:
        """z (N, m) of (N, D) embeddings: the linear map and its bias row."""
        if features.dim() != 2 or features.shape[1] != self.feature_map.shape[0] - 1:
            raise ValueError("features must be (N, D) with D = dimension()")
        return features.to(torch.float64) @ self.feature_map[:-1] + self.feature_map[-1]

    def _scores64(self, features: torch.Tensor, cost_weight: float) -> torch.Tensor:
        weight = self.arms.weight(cost_weight)
        return self.head(self._hidden(features), weight)

    @torch.jit.export
    def scores_features(self, features: torch.Tensor, cost_weight: float) -> torch.Tensor:
        """(N, K) float32 scores of (N, D) embeddings, higher is better."""
        return self._scores64(features, cost_weight).to(torch.float32)

    @torch.jit.export
    def route_features(self, features: torch.Tensor, cost_weight: float) -> list[str]:
        """The chosen model's name per embedding (ties to the lower index)."""
        return self.arms.choose(self._scores64(features, cost_weight))

    @torch.jit.export
    def costs_features(self, features: torch.Tensor) -> torch.Tensor:
        """(N, K) float32 predicted USD per query of each model, at the policy's current prices."""
        return self.head.costs(self._hidden(features)).to(torch.float32)

    @torch.jit.export
    def scores_costs_features(self, features: torch.Tensor, cost_weight: float) -> torch.Tensor:
        """(N, 2K) float32: ``scores_features`` of (N, D) embeddings in the first K columns,
        ``costs_features`` in the last K (as the text policies' ``scores_costs``)."""
        weight = self.arms.weight(cost_weight)
        scores, costs = self.head.scores_costs(self._hidden(features), weight)
        return torch.cat((scores, costs), 1).to(torch.float32)

    @torch.jit.export
    def costs(self, queries: list[str]) -> torch.Tensor:
        """Refused: this policy needs embeddings."""
        raise ValueError(self.refusal)

    @torch.jit.export
    def scores_costs(self, queries: list[str], cost_weight: float) -> torch.Tensor:
        """Refused: this policy needs embeddings."""
        raise ValueError(self.refusal)

    @torch.jit.export
    def scores(self, queries: list[str], cost_weight: float) -> torch.Tensor:
        """Refused: this policy needs embeddings."""
        raise ValueError(self.refusal)

    @torch.jit.export
    def route(self, queries: list[str], cost_weight: float) -> list[str]:
        """Refused: this policy needs embeddings."""
        raise ValueError(self.refusal)

    def forward(self, queries: list[str]) -> torch.Tensor:
        """Refused: this policy needs embeddings."""
        raise ValueError(self.refusal)
