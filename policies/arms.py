"""What every exported policy says about its arms and trade-off (docs/contracts.md §2), in TorchScript.

Both policy kinds (text, embedding) hold one :class:`Arms`: the model names, the default cost
weight, the weight check (finite and >= 0; clamped into ``cost_weight_range`` for a policy
conditioned on the weight), the rule overrides (:class:`policies.rules.RuleSet`, §2.9) and the
decision (argmax over the models the rules allow, ties to the lower index).

**Weights per objective** (§2.13). A policy that estimates costs beside USD (latency, energy:
``objective_names``) is asked at a weight per objective, read by :mod:`policies.objective_weights`;
a bare number is the USD weight, as before.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from policies.objective_weights import objective_names, read_weights
from policies.rules import RuleSet, from_canonical

#: What the weights of a policy's ``scores``, ``scores_costs`` and ``route`` may be: a USD weight, or one per objective.
Weights = float | dict[str, float]


class Arms(torch.nn.Module):
    """Model names, the default weight and its range, the rule overrides, and the argmax decision."""

    model_names: list[str]
    default_weight: float
    weight_low: float
    weight_high: float
    clamp_weight: bool
    objective_names: list[str]
    objective_defaults: list[float]
    carbon_per_wh: float
    default_objective_weights: torch.Tensor | None

    def __init__(
        self,
        models: list[str],
        default_cost_weight: float,
        cost_weight_range: list[float],
        clamp_cost_weight: bool,
        rules: Sequence[Mapping[str, Any]] = (),
        objectives: Sequence[str] = (),
        objective_defaults: Sequence[float] = (),
        carbon_per_wh: float = 0.0,
    ) -> None:
        """``rules``: the metadata's canonical rules (:func:`policies.rules.canonical`), compiled here.

        ``objectives``: the costs beside USD the policy estimates, in the order of its columns;
        ``objective_defaults`` their default weights (zeros when empty); ``carbon_per_wh`` gCO2e per
        Wh (0: no carbon weight).
        """
        super().__init__()
        self.model_names = list(models)
        self.default_weight = float(default_cost_weight)
        self.weight_low = float(cost_weight_range[0])
        self.weight_high = float(cost_weight_range[1])
        self.clamp_weight = clamp_cost_weight
        self.rules = RuleSet(from_canonical(rules), self.model_names)
        self.objective_names = list(objectives)
        defaults = [float(value) for value in objective_defaults] or [0.0] * len(self.objective_names)
        if len(defaults) != len(self.objective_names) or not all(math.isfinite(v) and v >= 0 for v in defaults):
            raise ValueError("objective_defaults must give one finite weight >= 0 per objective")
        self.objective_defaults = defaults
        self.carbon_per_wh = float(carbon_per_wh)
        # None when every default is 0: a bare USD weight then scores exactly as a USD-only policy
        self.default_objective_weights = (
            torch.tensor(defaults, dtype=torch.float64) if any(v > 0 for v in defaults) else None
        )

    def objectives(self) -> list[str]:
        """The objectives a weight may be given for (:func:`policies.objective_weights.objective_names`)."""
        return objective_names(self.objective_names, self.carbon_per_wh)

    def weights(self, weights: Weights) -> tuple[float, torch.Tensor | None]:
        """(the checked USD weight, the (J,) weights of the other objectives or None when all are 0).

        A number is the USD weight; a mapping gives a weight per objective
        (:func:`policies.objective_weights.read_weights`, whose ValueError names what it refuses).
        """
        if isinstance(weights, float):
            return self.weight(weights), self.default_objective_weights
        usd, extra = read_weights(
            weights, self.default_weight, self.objective_names, self.objective_defaults, self.carbon_per_wh
        )
        if any([value > 0.0 for value in extra]):
            return self.weight(usd), torch.tensor(extra, dtype=torch.float64)
        return self.weight(usd), None

    def weight(self, cost_weight: float) -> float:
        """Refuse a weight that is not finite and >= 0; clamp it into the range when asked."""
        if math.isnan(cost_weight) or math.isinf(cost_weight) or cost_weight < 0.0:
            raise ValueError("cost_weight must be finite and >= 0 (quality given up per USD per query)")
        if self.clamp_weight:
            return min(max(cost_weight, self.weight_low), self.weight_high)
        return cost_weight

    def allowed(self, queries: list[str]) -> torch.Tensor | None:
        """The rules' (N, K) mask of the models each query may go to; None when the policy has no rules.

        None rather than an all-true mask: one query is bound by tensor-op dispatch (~2 µs an op),
        and without rules every model is allowed, so there is nothing to build or apply.
        """
        if self.rules.n_rules == 0:
            return None
        return self.rules(queries)

    def best(self, scores: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) int64: the best-scoring model per row among the ``allowed`` ones (N, K bool; None: all).

        Ties go to the lower index; disallowed models score -inf, so with finite scores one of the
        allowed models (every row allows at least one) is always chosen.
        """
        if allowed is not None:
            scores = scores.masked_fill(torch.logical_not(allowed), float("-inf"))
        return torch.argmax(scores, dim=1)

    def choose(self, scores: torch.Tensor, allowed: torch.Tensor | None = None) -> list[str]:
        """The name of :meth:`best`'s model per row."""
        if scores.shape[0] == 0:
            return []
        chosen: list[int] = self.best(scores, allowed).tolist()
        return [self.model_names[index] for index in chosen]


class ArmsPolicy(torch.nn.Module):
    """Base of the exported policies: a scoring head, the arms, and the methods about them."""

    def __init__(self, head: torch.nn.Module, arms: Arms) -> None:
        super().__init__()
        self.head = head
        self.arms = arms

    @torch.jit.export
    def models(self) -> list[str]:
        """The arms, in index order."""
        return self.arms.model_names

    @torch.jit.export
    def default_cost_weight(self) -> float:
        """The trade-off the policy was trained or calibrated for."""
        return self.arms.default_weight

    @torch.jit.export
    def rule_mask(self, queries: list[str]) -> torch.Tensor:
        """(N, K) bool: the models each query may go to, by the first rule that matches it (all: none does)."""
        return self.arms.rules(queries)
