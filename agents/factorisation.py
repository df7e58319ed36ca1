"""The matrix-factorisation router, in the spirit of RouteLLM's MF router (Ong et al., 2024, arXiv:2406.18665).

    logit P(quality = 1 | query x, model m) = v_mᵀ (P x) + b_m     (graded quality: logit E[quality])

with a learned rank-r projection P of the query features and an embedding v_m per model, trained
by binary cross-entropy with weight decay (:mod:`agents.quality_network`, the identity-activation
case: training, targets and tuning are described there). Cost per model by
:class:`agents.peers.RidgeCostModel`; utility = estimated quality − w · estimated cost. The rank and the
weight decay are chosen by k-fold cross-validated log loss on the training split, from the grids
of ``agent.mf``. RouteLLM trains on pairwise preferences between two models; here every model's
own outcome on every query is known, so each cell is one Bernoulli observation.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, NonNegativeFloat, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass

from agents.quality_network import NetworkConfig, QualityNetworkRouter


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class FactorisationConfig(NetworkConfig):
    """``agent.mf``: the ranks searched, beside :class:`NetworkConfig`'s λ grid and folds."""

    ranks: Annotated[tuple[PositiveInt, ...], Field(min_length=1)] = (2, 4, 8)  # r candidates of P (r × d)
    # λ candidates: a rank-r bilinear model needs less decay than the MLP (its CV optimum on RouterBench is ~1e-3)
    weight_decay: Annotated[tuple[NonNegativeFloat, ...], Field(min_length=1)] = (1e-4, 1e-3, 1e-2)


class MatrixFactorisationRouter(QualityNetworkRouter):
    """Query projection and model embeddings, ridge cost; ``fit`` / ``predict`` like the other agents."""

    name = "mf"
    activation = "identity"
    config: FactorisationConfig

    def __init__(
        self, n_models: int, dimension: int, config: FactorisationConfig | None = None, cost_weight: float = 0.0
    ) -> None:
        super().__init__(n_models, dimension, config or FactorisationConfig(), cost_weight)

    @property
    def widths(self) -> tuple[int, ...]:
        """The ranks of ``agent.mf``."""
        return tuple(self.config.ranks)
