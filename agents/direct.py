"""The supervised direct-method baseline: per-arm ridge regression of quality and cost.

The direct method (Dudík, Langford & Li, 2011, "Doubly robust policy evaluation and learning")
regresses each arm's outcome on the context and routes greedily on the predictions:

    θ_k^q = (λI + XᵀX)⁻¹ Xᵀ q_k,   θ_k^c = (λI + XᵀX)⁻¹ Xᵀ c_k,   choice = argmax_k xᵀθ_k^q − w · xᵀθ_k^c

That is exactly what :meth:`LinUCB.fit <agents.linucb.LinUCB.fit>` computes (its α only acts
while learning online), so :class:`DirectMethodRouter` is LinUCB with α = 0 under its own name
rather than a second implementation. Online, α = 0 makes ``learn`` purely greedy.
"""

from __future__ import annotations

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from agents.linucb import LinUCB, LinUCBConfig


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class DirectConfig:
    """Hyperparameters of the direct-method baseline."""

    ridge: float = 1.0  # λ: ridge regularisation of every arm's quality and cost regressions


class DirectMethodRouter(LinUCB):
    """Per-arm ridge regression, greedy on the predicted utility (LinUCB's fit, no exploration)."""

    name = "direct"

    def __init__(self, n_models: int, dimension: int, config: DirectConfig | None = None,
                 cost_weight: float = 0.0) -> None:
        self.direct = config or DirectConfig()
        super().__init__(n_models, dimension, LinUCBConfig(alpha=0.0, ridge=self.direct.ridge), cost_weight)
