"""Supervised routers the literature compares against, tuned by cross-validation on the training split.

* :class:`NearestNeighbourRouter`: RouterBench's k-nearest-neighbours baseline (Hu et al., 2024,
  arXiv:2403.12031): a query's per-model quality and cost are the means over its k most similar
  training queries (cosine similarity of the features); k by 5-fold cross-validated squared error.
* :class:`LogisticRouter`: one logistic regression per model for P(quality = 1 | query) (quality
  binarised at 0.5 when it is graded), with C by 5-fold cross-validated log loss
  (scikit-learn's ``LogisticRegressionCV``), and the per-model cost of :class:`RidgeCostModel`.

Both score utility = estimated quality − w · estimated cost, so one fit serves every cost weight,
and both export through the same "features → linear map → head" path as LinUCB. The MLP and
matrix-factorisation peers (:mod:`agents.mlp`, :mod:`agents.factorisation`) share the cost model
and :class:`SupervisedRouter`, whose token mode estimates tokens and prices them.
scikit-learn (a main dependency) is imported where a fit needs it, which keeps importing the agents fast.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from agents.base import Agent, TrainingTask
from policies.heads import (
    LogisticUtilityHead,
    NearestNeighbourHead,
    TokenLogisticUtilityHead,
    TokenNearestNeighbourHead,
)

if TYPE_CHECKING:
    from agents.callbacks import Callback


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class PeerConfig:
    """Hyperparameter grids searched by cross-validation on the training split."""

    neighbours: tuple[int, ...] = (5, 10, 20, 40, 80)  # k candidates for the kNN router
    inverse_regularisation: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # C candidates
    folds: int = 5  # cross-validation folds
    seed: int = 0  # fold assignment


@dataclass(frozen=True)
class RidgeCostModel:
    """Per-model cost = features · ``weights`` + ``bias``: one multi-output ridge regression.

    The ridge strength is chosen from ``ALPHAS`` by efficient leave-one-out error of the USD cost
    (scikit-learn's ``RidgeCV``, the same strength for every model). Shared by the supervised peers.

    In token mode (:meth:`fit_tokens`, docs/contracts.md §2.10) the regression's targets are each
    model's prompt and completion tokens, [in_1 … in_K | out_1 … out_K], at the strength chosen on
    the USD cost, and the cost is those estimates priced with ``prices``. Ridge regression is
    linear in its targets, so where the log's cost is its priced tokens, the priced estimate at the
    training prices is the USD model's estimate: the decisions change only when the prices do.
    """

    weights: np.ndarray  # (d, K) USD, or (d, 2K) tokens in token mode
    bias: np.ndarray  # (K,) or (2K,)
    prices: np.ndarray | None = None  # (K, 2) USD per 1M input and output tokens, in token mode

    ALPHAS: ClassVar[tuple[float, ...]] = (0.01, 0.1, 1.0, 10.0)

    @classmethod
    def fit(cls, features: np.ndarray, cost: np.ndarray) -> RidgeCostModel:
        """Fit on (N, d) features and (N, K) cost."""
        from sklearn.linear_model import RidgeCV

        x, cost = np.asarray(features, dtype=np.float64), np.asarray(cost, dtype=np.float64)
        return cls._of(RidgeCV(alphas=cls.ALPHAS).fit(x, cost), x.shape[1], cost.shape[1])

    @classmethod
    def fit_tokens(
        cls, features: np.ndarray, cost: np.ndarray, tokens: np.ndarray, prices: np.ndarray
    ) -> RidgeCostModel:
        """Token mode: (N, K, 2) prompt and completion tokens, priced by ``prices`` (K, 2); λ chosen on ``cost``."""
        from sklearn.linear_model import Ridge, RidgeCV

        x = np.asarray(features, dtype=np.float64)
        alpha = float(RidgeCV(alphas=cls.ALPHAS).fit(x, np.asarray(cost, dtype=np.float64)).alpha_)
        targets = np.hstack([tokens[:, :, 0], tokens[:, :, 1]]).astype(np.float64)
        model = cls._of(Ridge(alpha=alpha).fit(x, targets), x.shape[1], targets.shape[1])
        return cls(model.weights, model.bias, np.asarray(prices, dtype=np.float64))

    @classmethod
    def _of(cls, ridge: Any, dimension: int, outputs: int) -> RidgeCostModel:
        """The fitted scikit-learn ridge's (d, outputs) weights and intercepts."""
        weights = np.asarray(ridge.coef_, dtype=np.float64).T.reshape(dimension, outputs)
        return cls(weights, np.asarray(ridge.intercept_, dtype=np.float64).reshape(outputs))

    @property
    def cost_mode(self) -> str:
        """``"tokens"`` when the model estimates tokens and prices them, else ``"usd"``."""
        return "usd" if self.prices is None else "tokens"

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(N, K) estimated cost (USD; in token mode the estimated tokens at ``prices``)."""
        estimate = np.asarray(features, dtype=np.float64) @ self.weights + self.bias
        return estimate if self.prices is None else priced_tokens(estimate, self.prices)

    def folded(self) -> np.ndarray:
        """(d, K) weights, (d, 2K) in token mode, with the intercepts added to the last row (the bias column of 1)."""
        weights = self.weights.copy()
        weights[-1] += self.bias
        return weights


def priced_tokens(tokens: np.ndarray, prices: np.ndarray) -> np.ndarray:
    """(N, K) USD of [prompt | completion] tokens (N, 2K) at ``prices`` (K, 2) USD per 1M tokens."""
    k = prices.shape[0]
    return (tokens[:, :k] * prices[:, 0] + tokens[:, k:] * prices[:, 1]) / 1e6


def _logistic_cv_options() -> dict[str, Any]:
    """Arguments that keep ``LogisticRegressionCV`` quiet and its meaning fixed across scikit-learn versions.

    scikit-learn 1.8 warns (FutureWarning) that ``l1_ratios`` will default to (0.0,) and that the
    fitted attributes change with ``use_legacy_attributes``; it asks for both to be given. Older
    versions (pyproject allows ≥ 1.3) have no ``use_legacy_attributes`` and would warn that
    ``l1_ratios`` is unused by an L2 penalty, so they get neither. The fit is plain L2 either way.
    """
    from sklearn.linear_model import LogisticRegressionCV

    if "use_legacy_attributes" in inspect.signature(LogisticRegressionCV).parameters:
        return {"l1_ratios": (0.0,), "use_legacy_attributes": False}
    return {}


def _unit(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


class SupervisedRouter(Agent):
    """What the supervised routers share: one fit on the full table, utility scores, and token mode.

    In a token-mode run (:attr:`agents.base.TrainingTask.prices`, docs/contracts.md §2.10),
    :meth:`train` fits as usual and then estimates each model's prompt and completion tokens
    instead of its USD cost (:meth:`learn_tokens`); the exported head prices them with a table it
    carries, which the service can replace without a retrain. ``fit`` alone is always USD mode.
    """

    score_kind = "utility"
    token_mode = ("fit",)
    cost_model: RidgeCostModel

    def train(self, task: TrainingTask, callbacks: Sequence[Callback] = ()) -> SupervisedRouter:
        """``fit`` on the training split; in token mode, then :meth:`learn_tokens` from its token counts."""
        train = task.train
        self.fit(train.features, train.log.quality, train.log.cost)
        if task.prices is not None:
            self.learn_tokens(train.features, train.log.cost, task.token_counts(), task.prices)
        return self

    def learn_tokens(self, features: np.ndarray, cost: np.ndarray, tokens: np.ndarray, prices: np.ndarray) -> None:
        """Estimate (N, K, 2) ``tokens`` priced by ``prices`` (K, 2) in place of the cost: the ridge cost model's."""
        self.cost_model = RidgeCostModel.fit_tokens(features, cost, tokens, prices)

    @property
    def cost_mode(self) -> str:
        """The cost model's mode: ``"tokens"`` after :meth:`learn_tokens`, else ``"usd"``."""
        return self.cost_model.cost_mode


class Peer(SupervisedRouter):
    """What kNN and logistic regression share: the ``agent.peers`` grids."""

    def __init__(
        self, n_models: int, dimension: int, config: PeerConfig | None = None, cost_weight: float = 0.0
    ) -> None:
        super().__init__(n_models, dimension, cost_weight)
        self.config = config or PeerConfig()


class NearestNeighbourRouter(Peer):
    """kNN over the query features; ``fit`` / ``predict`` like the other agents."""

    name = "knn"

    def fit(self, features: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> NearestNeighbourRouter:
        """Store the training set and choose k by cross-validated squared error of quality."""
        self.train_features = np.asarray(features, dtype=np.float64)
        self.quality, self.cost = np.asarray(quality, dtype=np.float64), np.asarray(cost, dtype=np.float64)
        folds = np.random.default_rng(self.config.seed).integers(self.config.folds, size=len(features))
        unit = _unit(self.train_features)
        candidates = [k for k in self.config.neighbours if k < len(features)] or [1]
        errors = np.zeros(len(candidates))
        for fold in range(self.config.folds):
            held, kept = folds == fold, folds != fold
            if not held.any() or kept.sum() <= max(candidates):
                continue
            order = np.argsort(-(unit[held] @ unit[kept].T), axis=1, kind="stable")
            for i, k in enumerate(candidates):
                estimate = self.quality[kept][order[:, :k]].mean(axis=1)
                errors[i] += ((estimate - self.quality[held]) ** 2).sum()
        self.k = candidates[int(np.argmin(errors))]  # neighbours averaged per query
        self.prices: np.ndarray | None = None  # (K, 2) in token mode (learn_tokens), with self.tokens
        self.steps_done = len(features)
        return self

    def learn_tokens(self, features: np.ndarray, cost: np.ndarray, tokens: np.ndarray, prices: np.ndarray) -> None:
        """Average the neighbours' (N, K, 2) ``tokens`` and price them with ``prices`` (K, 2) in place of their cost."""
        self.tokens, self.prices = np.asarray(tokens, dtype=np.float64), np.asarray(prices, dtype=np.float64)

    @property
    def cost_mode(self) -> str:
        """``"tokens"`` after :meth:`learn_tokens`, else ``"usd"``."""
        return "usd" if self.prices is None else "tokens"

    def _estimates(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        similarity = _unit(np.asarray(features, dtype=np.float64)) @ _unit(self.train_features).T
        neighbours = np.argsort(-similarity, axis=1, kind="stable")[:, : self.k]
        if self.prices is None:
            return self.quality[neighbours].mean(axis=1), self.cost[neighbours].mean(axis=1)
        tokens = self.tokens[neighbours].mean(axis=1)  # (N, K, 2)
        return self.quality[neighbours].mean(axis=1), priced_tokens(np.hstack([tokens[:, :, 0], tokens[:, :, 1]]),
                                                                    self.prices)

    def scores(self, features: np.ndarray, cost_weight: float) -> np.ndarray:
        """Utility per model: neighbours' mean quality − w × their mean cost."""
        quality, cost = self._estimates(features)
        return quality - cost_weight * cost

    def linear_map(self) -> np.ndarray:
        """Identity: the head needs the features themselves."""
        return np.eye(self.train_features.shape[1])

    def head(self) -> torch.nn.Module:
        """The exported head: cosine kNN over the stored training features (their tokens, in token mode)."""
        train, quality = torch.from_numpy(self.train_features), torch.from_numpy(self.quality)
        if self.prices is None:
            return NearestNeighbourHead(train, quality, torch.from_numpy(self.cost), self.k)
        return TokenNearestNeighbourHead(train, quality, torch.from_numpy(self.tokens), self.k,
                                         torch.from_numpy(self.prices))


class LogisticRouter(Peer):
    """Per-model logistic regression for quality and ridge regression for cost."""

    name = "logistic"

    def fit(self, features: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> LogisticRouter:
        """Fit one cross-validated logistic regression per model and the ridge cost model."""
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import KFold

        x = np.asarray(features, dtype=np.float64)
        folds = KFold(self.config.folds, shuffle=True, random_state=self.config.seed)
        n_models = quality.shape[1]
        self.quality_weights = np.zeros((x.shape[1], n_models))
        self.quality_bias = np.zeros(n_models)
        self.chosen_c: list[float] = []
        for arm in range(n_models):
            labels = (quality[:, arm] >= 0.5).astype(int)
            if labels.min() == labels.max():  # one class only: a constant logit
                self.quality_bias[arm] = 8.0 if labels[0] else -8.0
                self.chosen_c.append(float("nan"))
                continue
            model = LogisticRegressionCV(
                Cs=list(self.config.inverse_regularisation), cv=folds, scoring="neg_log_loss", max_iter=2000,
                **_logistic_cv_options(),
            ).fit(x, labels)
            self.quality_weights[:, arm] = model.coef_[0]
            self.quality_bias[arm] = model.intercept_[0]
            self.chosen_c.append(float(np.ravel(model.C_)[0]))  # a float, or (1,) with the legacy attributes
        self.cost_model = RidgeCostModel.fit(x, cost)
        self.steps_done = len(x)
        return self

    def scores(self, features: np.ndarray, cost_weight: float) -> np.ndarray:
        """Utility per model: P(good answer) − w × estimated cost."""
        x = np.asarray(features, dtype=np.float64)
        probability = 1.0 / (1.0 + np.exp(-(x @ self.quality_weights + self.quality_bias)))
        return probability - cost_weight * self.cost_model.predict(x)

    def linear_map(self) -> np.ndarray:
        """[logit weights | cost weights]; the intercepts ride on the features' bias column."""
        logits = self.quality_weights.copy()
        logits[-1] += self.quality_bias
        return np.hstack([logits, self.cost_model.folded()])

    def head(self) -> torch.nn.Module:
        """sigmoid(logit) − w · cost (the cost priced estimated tokens, in token mode)."""
        if self.cost_model.prices is None:
            return LogisticUtilityHead(self.quality_weights.shape[1])
        return TokenLogisticUtilityHead(torch.from_numpy(self.cost_model.prices))
