"""The native engine's scoring heads: :mod:`policies.heads` in numpy, from the portable file (no torch).

Each function takes the first linear map's outputs z (N, m) float64 and the (checked) cost weight,
and returns ``(scores, costs)``, both (N, K) float64, with the formulas of the head of the same
kind (their docstrings there; :data:`policies.portable.HEAD_KINDS` lists the kinds). A kind and its
``token_`` twin share a function, with the cost part taken as USD (:func:`usd`) or priced
(:func:`priced`). The prices of a "tokens" head are read from ``prices`` at each call, so that replacing them
(:meth:`policies.native.NativePolicy.set_prices`) changes the next call, as in the artifact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from policies.portable import TOKEN_PREFIX, PortablePolicy

#: A head: (z (N, m), cost weight) → (scores, costs), both (N, K) float64.
Head = Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), as ``torch.sigmoid`` computes it: exactly 1.0 once exp(-x) is below half an ulp
    (so saturated models tie, and ties go to the lower index in both engines), 0.0 when exp(-x) overflows."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


#: The cost part of z (or of a neighbour's mean outcome) → (N, K) USD: the part itself in "usd" mode,
#: priced estimated tokens in "tokens" mode (:func:`priced`).
Cost = Callable[[np.ndarray], np.ndarray]


def usd(part: np.ndarray) -> np.ndarray:
    """The cost part is already USD per model."""
    return part


def price_matrix(prices: np.ndarray) -> np.ndarray:
    """(2K, K): the token part of z times it is each model's USD cost at ``prices`` (K, 2) per 1M tokens."""
    return np.vstack([np.diag(prices[:, 0]), np.diag(prices[:, 1])]) / 1e6


def priced(prices: Callable[[], np.ndarray]) -> Cost:
    """[prompt tokens | completion tokens] (N, 2K) → USD at ``prices()``, the current :func:`price_matrix`.

    Read at each call, so that replacing the prices changes the next call; one product prices
    every model at once.
    """
    return lambda part: part @ prices()


def utility(k: int, cost_of: Cost) -> Head:
    """z = [quality | cost part] → quality − w · cost."""

    def head(z: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
        cost = cost_of(z[:, k:])
        return z[:, :k] - weight * cost, cost

    return head


def logistic_utility(k: int, cost_of: Cost) -> Head:
    """z = [quality logits | cost part] → sigmoid(logit) − w · cost."""

    def head(z: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
        cost = cost_of(z[:, k:])
        return _sigmoid(z[:, :k]) - weight * cost, cost

    return head


def hidden_layer_utility(hidden: int, relu: bool, second: np.ndarray, bias: np.ndarray, cost_of: Cost) -> Head:
    """z = [hidden pre-activations | cost part] → sigmoid(act(z_h) V + b) − w · cost."""

    def head(z: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
        pre = z[:, :hidden]
        if relu:
            pre = np.maximum(pre, 0.0)
        cost = cost_of(z[:, hidden:])
        return _sigmoid(pre @ second + bias) - weight * cost, cost

    return head


def nearest_neighbour(k: int, train_unit: np.ndarray, quality: np.ndarray, outcome: np.ndarray, cost_of: Cost) -> Head:
    """z = dense features → mean quality and cost of the k most cosine-similar training queries.

    ``outcome`` is each training query's cost part: USD (N_train, K), or [prompt | completion]
    tokens (N_train, 2K), averaged over the neighbours and then priced. The k largest similarities
    are taken as ``torch.topk`` takes them; among equal similarities at the k-th place the choice
    may differ, which changes the mean only when their outcomes differ.
    """

    def head(z: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
        unit = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        similarity = unit @ train_unit.T
        neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        mean_cost = cost_of(outcome[neighbours].mean(axis=1))
        return quality[neighbours].mean(axis=1) - weight * mean_cost, mean_cost

    return head


def mlp_logit(header: dict[str, Any], portable: PortablePolicy) -> Head:
    """The preference-conditioned actor: act(z + f(w) u + b₁), then its layers; costs are the mean training costs."""
    low, high = float(header["low"]), float(header["high"])
    activation = np.tanh if header["activation"] == "tanh" else (lambda x: np.maximum(x, 0.0))
    column, first_bias = portable.head_tensor("weight_column"), portable.head_tensor("first_bias")
    mean_cost = portable.head_tensor("mean_cost")
    layers = [
        (portable.head_tensor(f"layers.{i}.weight").T, portable.head_tensor(f"layers.{i}.bias"))
        for i in range(int(header["layers"]))
    ]

    def head(z: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
        clamped = min(max(weight, 0.0), high)
        feature = math.log1p(clamped / low) / math.log1p(high / low)
        hidden = z + feature * column + first_bias
        for matrix, bias in layers:
            hidden = activation(hidden) @ matrix + bias
        return hidden, np.broadcast_to(mean_cost, (z.shape[0], mean_cost.shape[0]))

    return head


def build_head(portable: PortablePolicy, prices: Callable[[], np.ndarray]) -> Head:
    """The head the portable file describes (``prices``: the current :func:`price_matrix` of a "tokens" head)."""
    header = portable.header["head"]
    kind = str(header["kind"])
    if kind == "mlp_logit":
        return mlp_logit(header, portable)
    cost_of = priced(prices) if kind.startswith(TOKEN_PREFIX) else usd
    kind = kind.removeprefix(TOKEN_PREFIX)
    if kind == "utility":
        return utility(int(header["n_models"]), cost_of)
    if kind == "logistic_utility":
        return logistic_utility(int(header["n_models"]), cost_of)
    if kind == "hidden_layer_utility":
        second, bias = portable.head_tensor("second"), portable.head_tensor("second_bias")
        return hidden_layer_utility(int(header["hidden"]), bool(header["relu"]), second, bias, cost_of)
    train_unit, quality = portable.head_tensor("train_unit"), portable.head_tensor("quality")
    if cost_of is usd:
        outcome = portable.head_tensor("cost")
    else:
        outcome = np.hstack([portable.head_tensor("prompt_tokens"), portable.head_tensor("completion_tokens")])
    return nearest_neighbour(int(header["k"]), train_unit, quality, outcome, cost_of)
