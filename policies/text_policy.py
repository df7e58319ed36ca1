"""The exported routing policy: text in, model out, in one TorchScript module (docs/contracts.md §2).

scores(queries, w) = head(z, w) − Σ_j w_j · objective_j,   z = tfidf(queries) @ text_map + extras(queries) @ dense_map

``featurizer`` is the TorchScript twin of the training featurizer (sparse tf-idf and the dense
extras: length, log length, bias); ``text_map`` (V, m) is the agent's first linear map with the
featurizer's projection folded in, ``dense_map`` (3, m) its rows for the extras; ``head`` turns
the first ``head_width`` of the m outputs and the cost weight into K scores, and ``costs`` into the
K predicted USD costs. A policy that estimates costs beside USD (§2.13: latency, energy) has J·K
more columns, objective by objective, and takes a weight per objective (:meth:`Arms.weights`).
Everything is computed in float64; ``scores``, ``costs`` and ``scores_costs`` return float32 and
``route`` takes the argmax of the float64 scores (ties to the lower index).
"""

import torch

from policies.arms import Arms, Weights
from policies.priced import PricedPolicy
from policies.scripted_featurizer import ScriptedFeaturizer


class TextRoutingPolicy(PricedPolicy):
    """Featurizer + linear map + head, with the arms and trade-off defaults."""

    text_map: torch.Tensor
    dense_map: torch.Tensor
    head_width: int
    objective_columns: int

    def __init__(
        self,
        featurizer: ScriptedFeaturizer,
        text_map: torch.Tensor,
        dense_map: torch.Tensor,
        head: torch.nn.Module,
        arms: Arms,
    ) -> None:
        """The last ``len(arms.objective_names)`` · K columns of the maps are the objectives' estimates."""
        super().__init__(head, arms)
        self.featurizer = featurizer
        self.register_buffer("text_map", text_map.to(torch.float64))
        self.register_buffer("dense_map", dense_map.to(torch.float64))
        self.objective_columns = len(arms.objective_names) * len(arms.model_names)
        self.head_width = int(text_map.shape[1]) - self.objective_columns
        if self.head_width <= 0:
            raise ValueError(
                f"the maps have {text_map.shape[1]} columns, the objectives alone take {self.objective_columns}"
            )

    def _hidden(self, queries: list[str]) -> torch.Tensor:
        """z (N, m) = tfidf @ text_map, as one weighted ``embedding_bag`` sum of text_map rows, plus extras @ dense_map.

        Few tensor ops whatever the batch size: a single query is bound by op dispatch (µs per op).
        """
        cols, offsets, values, extras = self.featurizer.shared_bags(queries)
        # embedding_bag(weight, indices, offsets, scale_grad_by_freq, mode 0 = sum, sparse, per_sample_weights)
        text = torch.embedding_bag(self.text_map, cols, offsets, False, 0, False, values)[0]
        return torch.addmm(text, extras, self.dense_map)

    def _head_part(self, z: torch.Tensor) -> torch.Tensor:
        """The head's columns of z (all of them for a USD-only policy: no op)."""
        if self.objective_columns == 0:
            return z
        return z.narrow(1, 0, self.head_width)

    def _objectives(self, z: torch.Tensor) -> torch.Tensor:
        """(N, J, K) the estimated costs beside USD, from z's last J·K columns."""
        k = len(self.arms.model_names)
        return z.narrow(1, self.head_width, self.objective_columns).reshape(z.shape[0], -1, k)

    def _scores_costs64(
        self, queries: list[str], weights: Weights
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, K) float64 scores at the checked ``weights``, (N, K) predicted USD costs, and z."""
        weight, extra = self.arms.weights(weights)
        z = self._hidden(queries)
        scores, costs = self.head.scores_costs(self._head_part(z), weight)
        return self._less_objectives(scores, z, extra), costs, z

    def _scores64(self, queries: list[str], weights: Weights) -> torch.Tensor:
        """(N, K) float64 scores at the checked ``weights``."""
        weight, extra = self.arms.weights(weights)
        z = self._hidden(queries)
        return self._less_objectives(self.head(self._head_part(z), weight), z, extra)

    def _less_objectives(self, scores: torch.Tensor, z: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        """scores − Σ_j w_j · objective_j (N, K); the scores themselves when every w_j is 0 (``extra`` None)."""
        if extra is None:
            return scores
        return scores - (self._objectives(z) * extra.view(1, -1, 1)).sum(1)

    @torch.jit.export
    def objectives(self) -> list[str]:
        """The objectives a weight may be given for (§2.13): ``usd``, then those estimated, then ``carbon``."""
        return self.arms.objectives()

    @torch.jit.export
    def scores(self, queries: list[str], cost_weight: Weights) -> torch.Tensor:
        """(N, K) float32, higher is better; their meaning is the metadata's ``score_kind``.

        ``cost_weight``: the USD weight, or a weight per objective (§2.13).
        """
        return self._scores64(queries, cost_weight).to(torch.float32)

    @torch.jit.export
    def costs(self, queries: list[str]) -> torch.Tensor:
        """(N, K) float32 predicted USD per query of each model, at the policy's current prices."""
        return self.head.costs(self._head_part(self._hidden(queries))).to(torch.float32)

    @torch.jit.export
    def objective_costs(self, queries: list[str]) -> torch.Tensor:
        """(N, J, K) float32 predicted costs beside USD, in ``objectives()`` order after ``usd`` (J = 0: none)."""
        z = self._hidden(queries)
        if self.objective_columns == 0:
            return torch.zeros(z.shape[0], 0, len(self.arms.model_names), dtype=torch.float32)
        return self._objectives(z).to(torch.float32)

    @torch.jit.export
    def scores_costs(self, queries: list[str], cost_weight: Weights) -> torch.Tensor:
        """(N, 2K) float32 from one featurization: ``scores(queries, cost_weight)`` in the first K
        columns, ``costs(queries)`` in the last K. One tensor, not two: a service asks this for
        every request, and one tensor crosses into Python several µs faster than a pair."""
        scores, costs, _ = self._scores_costs64(queries, cost_weight)
        return torch.cat((scores, costs), 1).to(torch.float32)

    @torch.jit.export
    def scores_objective_costs(self, queries: list[str], cost_weight: Weights) -> torch.Tensor:
        """(N, (2 + J)K) float32 from one featurization: ``scores_costs(queries, cost_weight)``, then
        ``objective_costs(queries)`` flattened objective by objective (a service counts what it routes)."""
        scores, costs, z = self._scores_costs64(queries, cost_weight)
        parts = [scores, costs]
        if self.objective_columns > 0:
            parts.append(z.narrow(1, self.head_width, self.objective_columns))
        return torch.cat(parts, 1).to(torch.float32)

    @torch.jit.export
    def route(self, queries: list[str], cost_weight: Weights) -> list[str]:
        """The chosen model's name per query: the best-scoring one the rules allow (``rule_mask``, §2.9).

        ``cost_weight``: the USD weight, or a weight per objective (§2.13).
        """
        if len(queries) == 0:
            return []
        return self.arms.choose(self._scores64(queries, cost_weight), self.arms.allowed(queries))

    def forward(self, queries: list[str]) -> torch.Tensor:
        """(N,) int64 model indices at the default weights, among the models the rules allow."""
        if len(queries) == 0:
            return torch.zeros(0, dtype=torch.int64)
        return self.arms.best(self._scores64(queries, self.arms.default_weight), self.arms.allowed(queries))

