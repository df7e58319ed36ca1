"""Scoring heads: from the first linear map's outputs z (N, m) and a cost weight to scores (N, K).

Every agent reduces to "features → one linear map → a small head" (docs/architecture.md, one decision
rule), which lets the exporter fold the featurizer's projection into the linear map.
"""

import math

import torch


class UtilityHead(torch.nn.Module):
    """z = [estimated quality | estimated cost] (N, 2K) → utility = quality − w · cost.

    ``score_kind`` "utility", as LinUCB and the other linear agents give.
    """

    n_models: int

    def __init__(self, n_models: int) -> None:
        super().__init__()
        self.n_models = n_models

    def forward(self, z: torch.Tensor, cost_weight: float) -> torch.Tensor:
        """Utility per arm at ``cost_weight``."""
        return torch.sub(z[:, : self.n_models], z[:, self.n_models :], alpha=cost_weight)


class LogisticUtilityHead(torch.nn.Module):
    """z = [quality logits | estimated cost] (N, 2K) → sigmoid(logit) − w · cost (``score_kind`` "utility")."""

    n_models: int

    def __init__(self, n_models: int) -> None:
        super().__init__()
        self.n_models = n_models

    def forward(self, z: torch.Tensor, cost_weight: float) -> torch.Tensor:
        """Estimated probability of a good answer minus the weighted estimated cost."""
        return torch.sigmoid(z[:, : self.n_models]) - cost_weight * z[:, self.n_models :]


class HiddenLayerUtilityHead(torch.nn.Module):
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

    def forward(self, z: torch.Tensor, cost_weight: float) -> torch.Tensor:
        """Estimated quality per model (a probability of a good answer) minus the weighted estimated cost."""
        hidden = z[:, : self.hidden]
        if self.relu:
            hidden = torch.relu(hidden)
        return torch.sigmoid(hidden @ self.second + self.second_bias) - cost_weight * z[:, self.hidden :]


class NearestNeighbourHead(torch.nn.Module):
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
        norms = train_features.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.register_buffer("train_unit", (train_features / norms).to(torch.float64))
        self.register_buffer("quality", quality.to(torch.float64))
        self.register_buffer("cost", cost.to(torch.float64))
        self.k = k

    def forward(self, z: torch.Tensor, cost_weight: float) -> torch.Tensor:
        """Utility per model from the k most similar training queries."""
        unit = z / torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp_min(1e-12)
        neighbours = torch.topk(unit @ self.train_unit.T, self.k, dim=1).indices
        return self.quality[neighbours].mean(dim=1) - cost_weight * self.cost[neighbours].mean(dim=1)


class MlpLogitHead(torch.nn.Module):
    """A preference-conditioned actor's logits from its first layer's text part (``score_kind`` "logit").

    The actor is an MLP on the observation [x, f(w)] (features, then the cost-weight feature of
    :class:`envs.rewards.PreferenceConfig`). Its first layer W₁[x, f(w)] + b₁ splits into the
    text part z = x W₁[:, :d]ᵀ, which the exporter folds into the linear map, and the weight
    column u = W₁[:, d], kept here:

        w' = clamp(w, 0, high),     f(w') = log1p(w' / low) / log1p(high / low)
        h₁ = act(z + f(w') u + b₁),     h_{l+1} = act(W_l h_l + b_l),     logits = W_L h_L + b_L

    ``layers`` are the actor's linear layers after the first, the last one giving the K logits.
    Weights above ``high`` were never trained on, so they are clamped (docs/contracts.md §2).
    """

    low: float
    high: float
    activation: str
    weight_column: torch.Tensor
    first_bias: torch.Tensor

    def __init__(
        self,
        weight_column: torch.Tensor,
        first_bias: torch.Tensor,
        layers: list[torch.nn.Linear],
        activation: str,
        low: float,
        high: float,
    ) -> None:
        super().__init__()
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}")
        self.register_buffer("weight_column", weight_column.detach().to(torch.float64).clone())
        self.register_buffer("first_bias", first_bias.detach().to(torch.float64).clone())
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

    def forward(self, z: torch.Tensor, cost_weight: float) -> torch.Tensor:
        """(N, K) actor logits at the clamped ``cost_weight``."""
        weight = min(max(cost_weight, 0.0), self.high)
        feature = math.log1p(weight / self.low) / math.log1p(self.high / self.low)
        hidden = z + feature * self.weight_column + self.first_bias
        for layer in self.layers:
            hidden = layer(self._act(hidden))
        return hidden
