"""The MLP router: one multi-output network predicts every model's quality (P(good answer) for 0/1 quality).

RouteLLM and LLMRouter ship such a router: the query's features → one ReLU hidden layer → a
logistic output per model (:mod:`agents.quality_network`, where training, targets and tuning are
described), with the per-model cost of :class:`agents.peers.RidgeCostModel`; utility =
estimated quality − w · estimated cost. The hidden size and the weight decay are chosen by k-fold
cross-validated log loss on the training split, from the grids of ``agent.mlp``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass

from agents.quality_network import NetworkConfig, QualityNetworkRouter


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MlpConfig(NetworkConfig):
    """``agent.mlp``: the hidden sizes searched, beside :class:`NetworkConfig`'s λ grid and folds."""

    hidden_sizes: Annotated[tuple[PositiveInt, ...], Field(min_length=1)] = (8, 32)  # ReLU units candidates


class MlpRouter(QualityNetworkRouter):
    """ReLU hidden layer, a logistic output per model, ridge cost; ``fit`` / ``predict`` like the other agents."""

    name = "mlp"
    activation = "relu"
    config: MlpConfig

    def __init__(
        self, n_models: int, dimension: int, config: MlpConfig | None = None, cost_weight: float = 0.0
    ) -> None:
        super().__init__(n_models, dimension, config or MlpConfig(), cost_weight)

    @property
    def widths(self) -> tuple[int, ...]:
        """The hidden sizes of ``agent.mlp``."""
        return tuple(self.config.hidden_sizes)
