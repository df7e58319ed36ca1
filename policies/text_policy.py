"""The exported routing policy: text in, model out, in one TorchScript module (docs/contracts.md §2).

scores(queries, w) = head(tfidf(queries) @ text_map + extras(queries) @ dense_map, w)

``featurizer`` is the TorchScript twin of the training featurizer (sparse tf-idf and the dense
extras: length, log length, bias); ``text_map`` (V, m) is the agent's first linear map with the
featurizer's projection folded in, ``dense_map`` (3, m) its rows for the extras; ``head`` turns
the m outputs and the cost weight into K scores, and ``costs`` into the K predicted USD costs.
Everything is computed in float64; ``scores``, ``costs`` and ``scores_costs`` return float32 and
``route`` takes the argmax of the float64 scores (ties to the lower index).
"""

import torch

from policies.arms import Arms
from policies.priced import PricedPolicy
from policies.scripted_featurizer import ScriptedFeaturizer


class TextRoutingPolicy(PricedPolicy):
    """Featurizer + linear map + head, with the arms and trade-off defaults."""

    text_map: torch.Tensor
    dense_map: torch.Tensor

    def __init__(
        self,
        featurizer: ScriptedFeaturizer,
        text_map: torch.Tensor,
        dense_map: torch.Tensor,
        head: torch.nn.Module,
        arms: Arms,
    ) -> None:
        super().__init__(head, arms)
        self.featurizer = featurizer
        self.register_buffer("text_map", text_map.to(torch.float64))
        self.register_buffer("dense_map", dense_map.to(torch.float64))

    def _hidden(self, queries: list[str]) -> torch.Tensor:
        """z (N, m) = tfidf @ text_map, as one weighted ``embedding_bag`` sum of text_map rows, plus extras @ dense_map.

        Few tensor ops whatever the batch size: a single query is bound by op dispatch (µs per op).
        """
        cols, offsets, values, extras = self.featurizer.shared_bags(queries)
        # embedding_bag(weight, indices, offsets, scale_grad_by_freq, mode 0 = sum, sparse, per_sample_weights)
        text = torch.embedding_bag(self.text_map, cols, offsets, False, 0, False, values)[0]
        return torch.addmm(text, extras, self.dense_map)

    def _scores64(self, queries: list[str], cost_weight: float) -> torch.Tensor:
        """(N, K) float64 scores at the checked ``cost_weight``."""
        weight = self.arms.weight(cost_weight)
        return self.head(self._hidden(queries), weight)

    @torch.jit.export
    def scores(self, queries: list[str], cost_weight: float) -> torch.Tensor:
        """(N, K) float32, higher is better; their meaning is the metadata's ``score_kind``."""
        return self._scores64(queries, cost_weight).to(torch.float32)

    @torch.jit.export
    def costs(self, queries: list[str]) -> torch.Tensor:
        """(N, K) float32 predicted USD per query of each model, at the policy's current prices."""
        return self.head.costs(self._hidden(queries)).to(torch.float32)

    @torch.jit.export
    def scores_costs(self, queries: list[str], cost_weight: float) -> torch.Tensor:
        """(N, 2K) float32 from one featurization: ``scores(queries, cost_weight)`` in the first K
        columns, ``costs(queries)`` in the last K. One tensor, not two: a service asks this for
        every request, and one tensor crosses into Python several µs faster than a pair."""
        weight = self.arms.weight(cost_weight)
        scores, costs = self.head.scores_costs(self._hidden(queries), weight)
        return torch.cat((scores, costs), 1).to(torch.float32)

    @torch.jit.export
    def route(self, queries: list[str], cost_weight: float) -> list[str]:
        """The chosen model's name per query: the best-scoring one the rules allow (``rule_mask``, §2.9)."""
        if len(queries) == 0:
            return []
        return self.arms.choose(self._scores64(queries, cost_weight), self.arms.allowed(queries))

    def forward(self, queries: list[str]) -> torch.Tensor:
        """(N,) int64 model indices at the default cost weight, among the models the rules allow."""
        if len(queries) == 0:
            return torch.zeros(0, dtype=torch.int64)
        return self.arms.best(self._scores64(queries, self.arms.default_weight), self.arms.allowed(queries))
