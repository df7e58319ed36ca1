"""One hidden layer from the query features to each model's expected quality: the MLP and MF routers' network.

    h = act(x W + c),     logit_k = h · V_k + b_k,     E[quality_k | x] = sigmoid(logit_k)

(for 0/1 quality, the probability of a good answer).

* ``act`` = ReLU: a multi-output MLP router (one network, a logistic output per model), as
  RouteLLM and LLMRouter ship (:mod:`agents.mlp`).
* ``act`` = identity and no ``c``: a matrix factorisation, logit = v_kᵀ (P x) + b_k with the rank-r
  projection P = W and the model embeddings v_k = V_k (RouteLLM's MF router, Ong et al., 2024,
  arXiv:2406.18665; :mod:`agents.factorisation`). Weight decay on both factors is a trace-norm
  penalty on their product: min ½(‖P‖² + ‖V‖²) over PVᵀ = M is ‖M‖_* (Srebro et al., 2005).

**Training.** Full batch, by L-BFGS with a strong-Wolfe line search (deterministic: no sampling),
on the mean binary cross-entropy over (query, model) cells plus λ/2 (‖W‖² + ‖V‖²) (biases are not
decayed). The features are standardised inside the fit (zero mean, unit variance; constant columns
as they are) and the standardisation is folded back into W and c, so the fitted network takes raw
features. The initial weights are Glorot-uniform from a generator seeded by ``seed``.

**Targets.** The quality itself, clipped to [0, 1]: 0/1 quality is the Bernoulli outcome, and
graded quality is fitted by the same cross-entropy (the fractional logit of Papke & Wooldridge,
1996), so sigmoid(logit) estimates the expected quality, the reward's own term. Binarising graded
quality at 0.5 (as :class:`agents.peers.LogisticRouter` does) lost AIQ under 5-fold cross-validation
on RouteProfile's graded log: −0.008 [−0.017, −0.002] for mlp, −0.003 [−0.013, +0.002] for mf
(paired bootstrap; on 0/1 quality the two are the same).

**Tuning.** The width (hidden units or rank) and λ are chosen from the configured grids by k-fold
cross-validation on the training data only: the grid point with the lowest held-out log loss
(the first in grid order on a tie); the network is then refitted on all of it.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field, NonNegativeFloat, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass

from agents.peers import RidgeCostModel, SupervisedRouter
from policies.heads import HiddenLayerUtilityHead, TokenHiddenLayerUtilityHead

Activation = Literal["relu", "identity"]


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class NetworkConfig:
    """What the network routers share: the weight-decay grid and the cross-validation that tunes it."""

    # λ candidates of mean BCE + λ/2 (‖W‖² + ‖V‖²), on standardised features
    weight_decay: Annotated[tuple[NonNegativeFloat, ...], Field(min_length=1)] = (3e-3, 1e-2, 3e-2)
    folds: Annotated[int, Field(ge=2)] = 5  # cross-validation folds (on the training split)
    seed: int = 0  # fold assignment and initial weights
    # L-BFGS iterations per fit (it stops earlier when converged); 200 changed the held-out log loss of
    # RouterBench's and RouteProfile's fits by under 0.003 and took twice as long
    iterations: PositiveInt = 100
    # torch threads while fitting: the matrices are thin (N × d, d ≈ 19), and on a shared machine a
    # second thread waiting for a busy core made a fit several times slower (as agent.ppo.threads)
    threads: PositiveInt = 1


@dataclass(frozen=True)
class QualityNetwork:
    """A fitted network on raw features: quality logits = act(x W + c) V + b (arrays float64)."""

    first: np.ndarray  # W (d, h), the standardisation folded in
    first_bias: np.ndarray  # c (h,)
    second: np.ndarray  # V (h, K)
    second_bias: np.ndarray  # b (K,)
    activation: Activation

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(N, K) logits of the expected quality per model."""
        hidden = np.asarray(features, dtype=np.float64) @ self.first + self.first_bias
        if self.activation == "relu":
            hidden = np.maximum(hidden, 0.0)
        return hidden @ self.second + self.second_bias

    def folded_first(self) -> np.ndarray:
        """(d, h) W with c added to the last row (the features' bias column of 1)."""
        first = self.first.copy()
        first[-1] += self.first_bias
        return first


def quality_targets(quality: np.ndarray) -> np.ndarray:
    """(N, K) cross-entropy targets: the quality clipped to [0, 1] (an estimated table may leave it)."""
    return np.clip(np.asarray(quality, dtype=np.float64), 0.0, 1.0)


def log_loss(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed binary cross-entropy of ``targets`` under sigmoid(``logits``), computed stably."""
    return float((np.logaddexp(0.0, logits) - targets * logits).sum())


def _glorot(fan_in: int, fan_out: int, generator: torch.Generator) -> torch.Tensor:
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    uniform = torch.rand(fan_in, fan_out, generator=generator, dtype=torch.float64)
    return ((2.0 * uniform - 1.0) * bound).requires_grad_()


def fit_network(
    features: np.ndarray, targets: np.ndarray, width: int, decay: float, activation: Activation, config: NetworkConfig
) -> QualityNetwork:
    """Fit the network of ``width`` hidden units at weight decay ``decay`` (module docstring)."""
    x = np.asarray(features, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    constant = scale < 1e-12
    mean[constant], scale[constant] = 0.0, 1.0
    inputs = torch.from_numpy((x - mean) / scale)
    labels = torch.from_numpy(np.asarray(targets, dtype=np.float64))
    generator = torch.Generator().manual_seed(config.seed)
    first, second = _glorot(x.shape[1], width, generator), _glorot(width, labels.shape[1], generator)
    rate = labels.mean(dim=0).clamp(1e-3, 1 - 1e-3)
    second_bias = torch.log(rate / (1 - rate)).requires_grad_()
    first_bias = torch.zeros(width, dtype=torch.float64, requires_grad=activation == "relu")
    parameters = [first, second, second_bias] + ([first_bias] if activation == "relu" else [])
    optimiser = torch.optim.LBFGS(
        parameters, max_iter=config.iterations, history_size=10, line_search_fn="strong_wolfe",
        tolerance_grad=1e-5, tolerance_change=1e-9,
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        hidden = inputs @ first + first_bias
        if activation == "relu":
            hidden = torch.relu(hidden)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(hidden @ second + second_bias, labels)
        loss = loss + 0.5 * decay * (first.square().sum() + second.square().sum())
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        optimiser.step(closure)  # type: ignore[no-untyped-call]
    finally:
        torch.set_num_threads(threads)
    weights = first.detach().numpy() / scale[:, None]
    return QualityNetwork(
        first=weights,
        first_bias=first_bias.detach().numpy() - mean @ weights,
        second=second.detach().numpy().copy(),
        second_bias=second_bias.detach().numpy().copy(),
        activation=activation,
    )


@dataclass(frozen=True)
class Selection:
    """The cross-validated grid: held-out mean log loss per (width, λ), and the chosen pair."""

    widths: tuple[int, ...]
    decays: tuple[float, ...]
    log_loss: np.ndarray  # (len(widths), len(decays)), mean per held-out cell
    width: int
    decay: float


def select(
    features: np.ndarray, targets: np.ndarray, widths: tuple[int, ...], activation: Activation, config: NetworkConfig
) -> Selection:
    """k-fold cross-validation of every (width, λ) on the training data: the lowest held-out log loss."""
    x = np.asarray(features, dtype=np.float64)
    fold_of = np.random.default_rng(config.seed).permutation(len(x)) % config.folds
    decays = tuple(float(decay) for decay in config.weight_decay)
    losses = np.zeros((len(widths), len(decays)))
    for fold in range(min(config.folds, len(x))):
        held, kept = fold_of == fold, fold_of != fold
        if not kept.any():  # a log of one query: nothing to learn from
            continue
        for i, width in enumerate(widths):
            for j, decay in enumerate(decays):
                network = fit_network(x[kept], targets[kept], width, decay, activation, config)
                losses[i, j] += log_loss(network.logits(x[held]), targets[held])
    losses /= targets.size
    best_width, best_decay = np.unravel_index(int(np.argmin(losses)), losses.shape)
    return Selection(tuple(widths), decays, losses, widths[best_width], decays[best_decay])


class QualityNetworkRouter(SupervisedRouter):
    """A supervised router: the network's expected quality per model − w · the ridge cost model's estimate."""

    activation: ClassVar[Activation]

    def __init__(self, n_models: int, dimension: int, config: NetworkConfig, cost_weight: float = 0.0) -> None:
        super().__init__(n_models, dimension, cost_weight)
        self.config = config

    @property
    @abstractmethod
    def widths(self) -> tuple[int, ...]:
        """The width candidates of the configuration (hidden units, or rank)."""

    def fit(self, features: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> QualityNetworkRouter:
        """Choose (width, λ) by cross-validation, refit the network on every row, and fit the cost model."""
        x, targets = np.asarray(features, dtype=np.float64), quality_targets(quality)
        self.selection = select(x, targets, self.widths, self.activation, self.config)
        self.network = fit_network(x, targets, self.selection.width, self.selection.decay, self.activation,
                                   self.config)
        self.cost_model = RidgeCostModel.fit(x, cost)
        self.steps_done = len(x)
        return self

    def scores(self, features: np.ndarray, cost_weight: float) -> np.ndarray:
        """Utility per model: expected quality − w × estimated cost."""
        quality = 1.0 / (1.0 + np.exp(-self.network.logits(features)))
        return quality - cost_weight * self.cost_model.predict(features)

    def linear_map(self) -> np.ndarray:
        """[W | cost weights] (d, h + K); the biases ride on the features' bias column."""
        return np.hstack([self.network.folded_first(), self.cost_model.folded()])

    def head(self) -> torch.nn.Module:
        """sigmoid(act(z_h) V + b) − w · z_cost (z_cost priced estimated tokens, in token mode)."""
        second, bias = torch.from_numpy(self.network.second), torch.from_numpy(self.network.second_bias)
        relu = self.network.activation == "relu"
        if self.cost_model.prices is None:
            return HiddenLayerUtilityHead(second, bias, relu=relu)
        return TokenHiddenLayerUtilityHead(second, bias, relu, torch.from_numpy(self.cost_model.prices))
