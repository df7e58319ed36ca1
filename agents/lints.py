"""Linear Thompson sampling beside LinUCB: same ridge statistics, sampled instead of optimistic.

Agrawal & Goyal (2013), "Thompson sampling for contextual bandits with linear payoffs", ICML.
Per arm k the posterior of the reward parameters at cost weight w is Gaussian around the ridge
estimate that :class:`~agents.linucb.LinUCB` keeps (quality and cost models, one Gram matrix):

    θ̃_k ~ N(θ̂_k(w), v² A_k⁻¹),      θ̂_k(w) = θ_k^q − w · θ_k^c

and learning plays argmax_k xᵀθ̃_k. For the one context x of a step, xᵀθ̃_k is Gaussian with
mean xᵀθ̂_k(w) and variance v² xᵀA_k⁻¹x, so the sampled score is drawn exactly, without
factorising A_k⁻¹, as

    ũ_k = xᵀθ̂_k(w) + v · sqrt(xᵀA_k⁻¹x) · ξ_k,      ξ_k ~ N(0, 1) independent across arms

(LinUCB's bonus α · sqrt(xᵀA_k⁻¹x) with the constant α replaced by v ξ_k). Fitting from a log,
the Sherman–Morrison updates of :meth:`LinUCB.learn`, ``predict`` and the export are LinUCB's:
greedy θ̂ (no sampling), :class:`~policies.heads.UtilityHead`.
"""

from __future__ import annotations

import numpy as np
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from agents.base import State
from agents.linucb import LinUCB, LinUCBConfig


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class LinTSConfig:
    """Hyperparameters of linear Thompson sampling."""

    scale: float = 0.25  # v: posterior scale (Agrawal & Goyal's R sqrt(24 d ln(1/δ) / ε) is a bound; tune it)
    ridge: float = 1.0  # λ: ridge regularisation, A = λI + XᵀX


class LinTS(LinUCB):
    """LinUCB's statistics and face; learning draws from the posterior instead of adding a bonus."""

    name = "lints"

    def __init__(self, n_models: int, dimension: int, config: LinTSConfig | None = None,
                 cost_weight: float = 0.0) -> None:
        self.sampling = config or LinTSConfig()
        if self.sampling.scale < 0:
            raise ValueError(f"scale must be >= 0, got {self.sampling.scale}")
        super().__init__(n_models, dimension, LinUCBConfig(alpha=0.0, ridge=self.sampling.ridge), cost_weight)
        self._rng = np.random.default_rng(0)

    def upper_confidence(self, features: np.ndarray, cost_weight: float) -> np.ndarray:
        """The score :meth:`LinUCB.learn` maximises: here a posterior sample ũ_k per query and arm."""
        x = np.asarray(features, dtype=np.float64)
        width = np.sqrt(np.maximum(np.einsum("nd,kde,ne->nk", x, self.gram_inverse, x), 0.0))
        draws = self._rng.standard_normal(width.shape)
        return self.scores(x, cost_weight) + self.sampling.scale * width * draws

    def _seed_exploration(self, seed: int | None) -> None:
        """Seed the Thompson draws with the env's seed; ``None`` (resuming) continues them."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def state_dict(self) -> State:
        """:meth:`LinUCB.state_dict` and the generator of the Thompson draws."""
        return {**super().state_dict(), "draws": self._rng.bit_generator.state}

    def load_state_dict(self, state: State) -> None:
        """Continue from :meth:`state_dict`, the draws included."""
        super().load_state_dict(state)
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["draws"]
