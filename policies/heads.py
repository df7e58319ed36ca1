"""Scoring heads: from the first linear map's outputs z (N, m) and a cost weight to scores (N, K).

Every agent reduces to "features → one linear map → a small head" (docs/architecture.md, one decision
rule), which lets the exporter fold the featurizer's projection into the linear map.

Every head also gives its predicted USD cost per model (N, K) from the same z: ``scores_costs(z, w)``
returns both, ``forward(z, w)`` is its first half, so the scores of the two agree exactly. A head
whose costs are token estimates priced by a table it carries (:class:`TokenPricedHead` and its
subclasses, ``cost_mode`` "tokens") can have that table replaced (``set_prices``); the others estimate USD
directly (``cost_mode`` "usd") and refuse (docs/contracts.md §2.10).
"""

import math

import torch


class CostHead(torch.nn.Module):
    """Base of every head: ``forward`` is ``scores_costs``' scores; by default no price table ("usd").

    Subclasses implement ``scores_costs(z, cost_weight) -> (scores, costs)``, both (N, K) float64;
    :class:`TokenPricedHead` also overrides the price methods.
    """

    def forward(self, z: torch.Tensor, cost_weight: float) -> torch.Tensor:
        """(N, K) scores at ``cost_weight``."""
        return self.scores_costs(z, cost_weight)[0]

    def costs(self, z: torch.Tensor) -> torch.Tensor:
        """(N, K) predicted USD per query."""
        return self.scores_costs(z, 0.0)[1]

    def prices(self) -> torch.Tensor:
        """An empty (0, 2) table: the costs are USD estimates, not priced tokens."""
        return torch.zeros(0, 2, dtype=torch.float64)

    def set_prices(self, prices: torch.Tensor) -> None:
        """Refused: there is no price table to replace (the message is docs/contracts.md §2.10's)."""
        raise ValueError("this policy was trained on USD costs (cost_mode 'usd'); it has no price table to replace")

    def scores_costs(self, z: torch.Tensor, cost_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, costs), both (N, K) float64: every subclass defines it."""
        raise NotImplementedError("a head must define scores_costs")


class UtilityHead(CostHead):
    """z = [estimated quality | estimated cost] (N, 2K) → utility = quality − w · cost.

    ``score_kind`` "utility", as LinUCB and the other linear agents give.
    """

    n_models: int

    def __init__(self, n_models: int) -> None:
        super().__init__()
        self.n_models = n_models

    def scores_costs(self, z: torch.Tensor, cost_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Utility per arm at ``cost_weight``, and the estimated cost (the second half of z)."""
        quality, cost = z.split(self.n_models, 1)  # one op for both views: one query is bound by op dispatch
        return torch.sub(quality, cost, alpha=cost_weight), cost


class TokenPricedHead(CostHead):
    """Base of the heads whose cost part of z is estimated tokens, priced with the table they carry.

    The cost part is [prompt tokens | completion tokens] (N, 2K) per query, and

        cost_k = (p_in,k · tokens_in,k + p_out,k · tokens_out,k) / 1e6 USD

    with ``price_table`` (K, 2) USD per one million (input, output) tokens (docs/contracts.md §1.5).
    Regression is linear in its target, so at the training prices this cost is the USD estimate a
    head fitted on the priced costs gives; a new table (``set_prices``) reprices every model at
    once, with no retraining (``cost_mode`` "tokens").
    """

    n_models: int
    price_table: torch.Tensor
    price_columns: tuple[torch.Tensor, torch.Tensor]

    def __init__(self, prices: torch.Tensor) -> None:
        super().__init__()
        self.n_models = int(prices.shape[0])
        self.register_buffer("price_table", _checked_prices(prices.detach().to(torch.float64), self.n_models))
        self.price_columns = _columns(self.price_table)

    def _priced(self, prompt: torch.Tensor, completion: torch.Tensor) -> torch.Tensor:
        """USD (N, K) of the estimated prompt and completion tokens (N, K each) at the current prices.

        One view op for the table rather than one per column, and the sums in place (the same
        float64 operations): one query is bound by op dispatch (~2 µs an op).
        """
        input_price, output_price = self.price_columns  # read once: a concurrent set_prices swaps both at once
        return (prompt * input_price).add_(completion * output_price).div_(1e6)

    def prices(self) -> torch.Tensor:
        """(K, 2) float64 USD per one million (input, output) tokens, in model order (a copy)."""
        return self.price_table.clone()

    def set_prices(self, prices: torch.Tensor) -> None:
        """Replace the table (K, 2), finite and >= 0 (else ValueError); the next call prices with it."""
        table = _checked_prices(prices.to(torch.float64).clone(), self.n_models)
        self.price_table = table
        self.price_columns = _columns(table)


class TokenUtilityHead(TokenPricedHead):
    """z = [quality | prompt tokens | completion tokens] (N, 3K) → quality − w · cost at the carried prices.

    LinUCB's and LinTS's head in token mode (:class:`TokenPricedHead`; ``score_kind`` "utility").
    """

    def costs(self, z: torch.Tensor) -> torch.Tensor:
        """(N, K) predicted USD per query at the current prices."""
        parts = z.split(self.n_models, 1)
        return self._priced(parts[1], parts[2])

    def scores_costs(self, z: torch.Tensor, cost_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Utility per arm at ``cost_weight``, and the priced cost."""
        parts = z.split(self.n_models, 1)
        cost = self._priced(parts[1], parts[2])
        return torch.sub(parts[0], cost, alpha=cost_weight), cost


class TokenLogisticUtilityHead(TokenUtilityHead):
    """z = [quality logits | prompt tokens | completion tokens] (N, 3K) → sigmoid(logit) − w · priced cost.

    :class:`LogisticUtilityHead` in token mode (:class:`TokenPricedHead`).
    """

    def scores_costs(self, z: torch.Tensor, cost_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Estimated probability of a good answer minus the weighted priced cost; the cost."""
        parts = z.split(self.n_models, 1)
        cost = self._priced(parts[1], parts[2])
        return torch.sigmoid(parts[0]) - cost_weight * cost, cost


def _columns(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (input, output) price columns of a (K, 2) table, as views kept beside it (one op fewer a call)."""
    return table[:, 0], table[:, 1]


def _checked_prices(prices: torch.Tensor, n_models: int) -> torch.Tensor:
    """``prices`` if it is (K, 2), finite and >= 0; ValueError otherwise."""
    if prices.dim() != 2 or prices.shape[0] != n_models or prices.shape[1] != 2:
        raise ValueError("prices must be a (K, 2) tensor: USD per 1M input and output tokens per model")
    if not bool(torch.isfinite(prices).all()) or bool((prices < 0).any()):
        raise ValueError("prices must be finite and >= 0 (USD per 1M tokens)")
    return prices


class LogisticUtilityHead(CostHead):
    """z = [quality logits | estimated cost] (N, 2K) → sigmoid(logit) − w · cost (``score_kind`` "utility")."""

    n_models: int

    def __init__(self, n_models: int) -> None:
        super().__init__()
        self.n_models = n_models

    def scores_costs(self, z: torch.Tensor, cost_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Estimated probability of a good answer minus the weighted estimated cost; the cost."""
        logits, cost = z.split(self.n_models, 1)
        return torch.sigmoid(logits) - cost_weight * cost, cost


def _hidden_layer_quality(hidden: torch.Tensor, second: torch.Tensor, bias: torch.Tensor, relu: bool) -> torch.Tensor:
    """sigmoid(act(z_h) V + b): each model's expected quality from the hidden pre-activations z_h."""
    if relu:
        hidden = torch.relu(hidden)
    return torch.sigmoid(hidden @ second + bias)


class HiddenLayerUtilityHead(CostHead):
    """z = [hidden pre-activations (N, h) | estimated cost (N, K)] → sigmoid(act(z_h) V + b) − w · cost.

    The MLP router (act = ReLU) and the matrix-factorisation router (act = identity: z_h = P x, the
    rows of Vᵀ the model embeddings), :mod:`agents.quality_network`; ``score_kind`` "utility".
    """

    relu: bool
    hidden: int
    second: torch.Tensor
    second_bias: torch.Tensor

    def __init__(self, second: torch.Tensor, second_bias: torch.Tensor, relu: bool) -> None:
        super().__init__()
        self.register_buffer("second", second.detach().to(torch.float64).clone())
        self.register_buffer("second_bias", second_bias.detach().to(torch.float64).clone())
        self.hidden = int(second.shape[0])
        self.relu = relu

    def scores_costs(self, z: torch.Tensor, cost_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Estimated quality per model (a probability of a good answer) minus the weighted estimated cost; the cost."""
        hidden, cost = z.tensor_split([self.hidden], 1)  # one op for both views
        quality = _hidden_layer_quality(hidden, self.second, self.second_bias, self.relu)
        return quality - cost_weight * cost, cost


class TokenHiddenLayerUtilityHead(TokenPricedHead):
    """z = [hidden pre-activations (N, h) | prompt tokens | completion tokens] → sigmoid(act(z_h) V + b) − w · cost.

    :class:`HiddenLayerUtilityHead` in token mode (:class:`TokenPricedHead`).
    """

    relu: bool
    hidden: int
    second: torch.Tensor
    second_bias: torch.Tensor

    def __init__(self, second: torch.Tensor, second_bias: torch.Tensor, relu: bool, prices: torch.Tensor) -> None:
        super().__init__(prices)
        self.register_buffer("second", second.detach().to(torch.float64).clone())
        self.register_buffer("second_bias", second_bias.detach().to(torch.float64).clone())
        self.hidden = int(second.shape[0])
        self.relu = relu

    def scores_costs(self, z: torch.Tensor, cost_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Estimated quality per model minus the weighted priced cost; the cost."""
        parts = z.tensor_split([self.hidden, self.hidden + self.n_models], 1)
        cost = self._priced(parts[1], parts[2])
        quality = _hidden_layer_quality(parts[0], self.second, self.second_bias, self.relu)
        return quality - cost_weight * cost, cost


def _unit_rows(rows: torch.Tensor) -> torch.Tensor:
    """Each row divided by its Euclidean norm (rows of norm 0 stay 0)."""
    return rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min(1e-12)


def _nearest(z: torch.Tensor, train_unit: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k) indices of the k training queries most cosine-similar to each row of z."""
    return torch.topk(_unit_rows(z) @ train_unit.T, k, dim=1).indices


class NearestNeighbourHead(CostHead):
    """z = the query's dense features (N, d) → mean outcome of its k nearest training queries.

    Cosine similarity against the stored training features; each model's quality and cost are
    averaged over the k neighbours, and utility = quality − w · cost (``score_kind`` "utility").
    """

    k: int
    train_unit: torch.Tensor
    quality: torch.Tensor
    cost: torch.Tensor

    def __init__(self, train_features: torch.Tensor, quality: torch.Tensor, cost: torch.Tensor, k: int) -> None:
        super().__init__()
        self.register_buffer("train_unit", _unit_rows(train_features).to(torch.float64))
        self.register_buffer("quality", quality.to(torch.float64))
        self.register_buffer("cost", cost.to(torch.float64))
        self.k = k

    def scores_costs(self, z: torch.Tensor, cost_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Utility per model from the k most similar training queries, and their mean cost."""
        neighbours = _nearest(z, self.train_unit, self.k)
        cost = self.cost[neighbours].mean(dim=1)
        return self.quality[neighbours].mean(dim=1) - cost_weight * cost, cost


class TokenNearestNeighbourHead(TokenPricedHead):
    """:class:`NearestNeighbourHead` in token mode: the neighbours' mean tokens, priced (:class:`TokenPricedHead`).

    The mean of priced tokens is the priced mean tokens (pricing is linear), so at the training
    prices the cost is the neighbours' mean cost wherever the log's cost is its priced tokens.
    """

    k: int
    train_unit: torch.Tensor
    quality: torch.Tensor
    prompt_tokens: torch.Tensor
    completion_tokens: torch.Tensor

    def __init__(
        self, train_features: torch.Tensor, quality: torch.Tensor, tokens: torch.Tensor, k: int, prices: torch.Tensor
    ) -> None:
        """``tokens`` (N_train, K, 2): each training query's prompt and completion tokens per model."""
        super().__init__(prices)
        self.register_buffer("train_unit", _unit_rows(train_features).to(torch.float64))
        self.register_buffer("quality", quality.to(torch.float64))
        self.register_buffer("prompt_tokens", tokens[:, :, 0].to(torch.float64).contiguous())
        self.register_buffer("completion_tokens", tokens[:, :, 1].to(torch.float64).contiguous())
        self.k = k

    def scores_costs(self, z: torch.Tensor, cost_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Utility per model from the k most similar training queries, and their mean tokens priced."""
        neighbours = _nearest(z, self.train_unit, self.k)
        cost = self._priced(self.prompt_tokens[neighbours].mean(dim=1), self.completion_tokens[neighbours].mean(dim=1))
        return self.quality[neighbours].mean(dim=1) - cost_weight * cost, cost


class MlpLogitHead(CostHead):
    """A preference-conditioned actor's logits from its first layer's text part (``score_kind`` "logit").

    The actor is an MLP on the observation [x, f(w)] (features, then the cost-weight feature of
    :class:`envs.rewards.PreferenceConfig`). Its first layer W₁[x, f(w)] + b₁ splits into the
    text part z = x W₁[:, :d]ᵀ, which the exporter folds into the linear map, and the weight
    column u = W₁[:, d], kept here:

        w' = clamp(w, 0, high),     f(w') = log1p(w' / low) / log1p(high / low)
        h₁ = act(z + f(w') u + b₁),     h_{l+1} = act(W_l h_l + b_l),     logits = W_L h_L + b_L

    ``layers`` are the actor's linear layers after the first, the last one giving the K logits.
    Weights above ``high`` were never trained on, so they are clamped (docs/contracts.md §2).

    The actor has no per-query cost estimate: its ``costs`` are each model's mean training cost
    ``mean_cost`` (K,) USD, the same for every query (docs/contracts.md §2.10).
    """

    low: float
    high: float
    activation: str
    weight_column: torch.Tensor
    first_bias: torch.Tensor
    mean_cost: torch.Tensor

    def __init__(
        self,
        weight_column: torch.Tensor,
        first_bias: torch.Tensor,
        layers: list[torch.nn.Linear],
        activation: str,
        low: float,
        high: float,
        mean_cost: torch.Tensor,
    ) -> None:
        super().__init__()
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}")
        self.register_buffer("weight_column", weight_column.detach().to(torch.float64).clone())
        self.register_buffer("first_bias", first_bias.detach().to(torch.float64).clone())
        self.register_buffer("mean_cost", mean_cost.detach().to(torch.float64).clone())
        self.layers = torch.nn.ModuleList()
        for layer in layers:
            copy = torch.nn.Linear(layer.in_features, layer.out_features, dtype=torch.float64)
            copy.load_state_dict(
                {"weight": layer.weight.detach().to(torch.float64), "bias": layer.bias.detach().to(torch.float64)}
            )
            copy.requires_grad_(False)
            self.layers.append(copy)
        self.activation = activation
        self.low = float(low)
        self.high = float(high)

    def _act(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(hidden) if self.activation == "tanh" else torch.relu(hidden)

    def costs(self, z: torch.Tensor) -> torch.Tensor:
        """(N, K): each model's mean training cost, for every query."""
        return self.mean_cost.expand(z.shape[0], self.mean_cost.shape[0])

    def scores_costs(self, z: torch.Tensor, cost_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, K) actor logits at the clamped ``cost_weight``, and the mean training costs."""
        weight = min(max(cost_weight, 0.0), self.high)
        feature = math.log1p(weight / self.low) / math.log1p(self.high / self.low)
        hidden = z + feature * self.weight_column + self.first_bias
        for layer in self.layers:
            hidden = layer(self._act(hidden))
        return hidden, self.costs(z)
