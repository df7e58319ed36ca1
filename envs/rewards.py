"""Reward shapes of the routing environments.

    reward = quality − w × cost − latency_weight × latency_ms / 1000

with cost in USD per query (docs/contracts.md §2) and latency in seconds. Where w comes from:

* **fixed**: ``RewardConfig.cost_weight``.
* **budget** (:class:`BudgetConfig`): w is a Lagrange multiplier λ of the constraint
  E[cost] <= B, learned online by projected dual ascent (:class:`CostMultiplier`), so that the
  policy's mean cost ends at the budget. The env exposes the current λ as ``cost_weight``; the
  averaged λ̄ becomes the exported policy's default cost weight.
* **preference** (:class:`PreferenceConfig`): w is drawn per episode and given to the policy as
  one extra observation feature, so that one policy serves every trade-off.
"""

from __future__ import annotations

import numpy as np
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

STRICT = ConfigDict(extra="forbid")


@pydantic_dataclass(frozen=True, config=STRICT)
class BudgetConfig:
    """Mean-cost constraint E[cost] <= budget, enforced by a multiplier λ learned online.

    Projected stochastic dual ascent on the Lagrangian E[quality − λ (cost − B)], one update
    per batch of n steps with costs c_i (n = 1 for RoutingEnv, the batch for the VecEnv):

        λ ← max(0, λ + η_t Σ_i (c_i − B) / B²),      η_t = step / (1 + t / decay_steps)^decay

    t = steps seen so far. Dividing by B² makes ``step`` dimensionless: λ is measured in units
    of 1/B (quality per USD at the budget scale) and (c − B)/B is the relative overspend, so a
    step that is 10 % over budget raises λ·B by 0.1·η_t. The decaying step (Robbins–Monro,
    η_t ∝ 1/t for ``decay`` = 1) lets λ settle. The last iterate still jitters with the
    per-query costs, and the greedy policy's mean cost is a steep function of λ, so the final
    cost weight is the polynomial-decay average of the iterates (Shamir & Zhang, 2013,
    "Stochastic gradient descent for non-smooth optimization", ICML), over updates u = 1, 2, …:

        λ̄_u = λ̄_{u−1} + (ξ + 1) / (u + ξ) · (λ_u − λ̄_{u−1}),      ξ = ``averaging``

    ξ = 0 is the plain running mean; ξ > 0 weights iterate u roughly ∝ u^ξ, forgetting the
    transient from the initial λ while still averaging the jitter of the late iterates.
    Note that λ balances the cost of the actions *played* while learning (exploration
    included); a learner that explores less at the end leaves its greedy policy nearer B.
    """

    budget: float  # B: target mean cost, USD per query (> 0)
    step: float = 0.02  # η: dimensionless step size (per step, on the relative overspend)
    decay: float = 1.0  # exponent of the step decay (0 = constant step, 1 = 1/t)
    decay_steps: float = 1000.0  # τ: steps before the step size starts to decay
    averaging: float = 3.0  # ξ of the polynomial-decay average λ̄ (0 = plain mean of all iterates)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.budget) and self.budget > 0):
            raise ValueError(f"budget must be finite and > 0 USD per query, got {self.budget}")
        if not self.step > 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        if not 0 <= self.decay <= 1:
            raise ValueError(f"decay must be in [0, 1], got {self.decay}")
        if not self.decay_steps > 0:
            raise ValueError(f"decay_steps must be > 0, got {self.decay_steps}")
        if not self.averaging >= 0:
            raise ValueError(f"averaging must be >= 0, got {self.averaging}")


def break_even_weights(mean_quality: np.ndarray, mean_cost: np.ndarray) -> np.ndarray:
    """The single models' break-even cost weights, in quality per USD.

    For models i, j with c_i < c_j and q_i < q_j (mean cost and quality), the utilities
    q − w · c are equal at w_ij = (q_j − q_i) / (c_j − c_i): below it the dearer, better model
    wins, above it the cheaper one. Empty when no model is both dearer and better than another.
    """
    quality, cost = np.asarray(mean_quality, dtype=float), np.asarray(mean_cost, dtype=float)
    dearer = cost[None, :] > cost[:, None]
    better = quality[None, :] > quality[:, None]
    rows, columns = np.nonzero(dearer & better)
    return (quality[columns] - quality[rows]) / (cost[columns] - cost[rows])


def trade_off_span(mean_quality: np.ndarray, mean_cost: np.ndarray) -> tuple[float, float]:
    """The cost weights at which a log's single models trade quality for cost, a decade beyond each end.

    [min w_ij / 10, max w_ij × 10] of :func:`break_even_weights`: below the smallest the best
    model wins among the single models, above the largest the cheapest; a router deciding per
    query changes its choices over roughly the same span. Without a break-even weight (one model
    is cheapest and best), the span is a decade either side of 1 / (largest mean cost). The
    evaluation's frontier sweep (``evaluation.frontier.cost_weight_grid``) and PPO's training
    weights (``agents.ppo``) both cover this span.
    """
    weights = break_even_weights(mean_quality, mean_cost)
    if len(weights) == 0:
        weights = np.array([1.0 / max(float(np.max(mean_cost)), 1e-12)])
    return float(np.min(weights)) / 10.0, float(np.max(weights)) * 10.0


@pydantic_dataclass(frozen=True, config=STRICT)
class PreferenceConfig:
    """Cost weight drawn per episode and shown to the policy (preference conditioning).

    With probability ``zero_share`` w = 0 (quality only), else log-uniform on [low, high]:
    w = exp(U(ln low, ln high)). The policy sees w as one feature appended to the observation,

        f(w) = log1p(w / low) / log1p(high / low)   ∈ [0, 1],  f(0) = 0, f(high) = 1,

    which is monotone, finite at w = 0 and roughly uniform in log w over [low, high].
    """

    low: float = 1.0  # smallest positive cost weight drawn (quality per USD)
    high: float = 10000.0  # largest cost weight drawn
    zero_share: float = 0.1  # share of episodes with w = 0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.high) and 0 < self.low < self.high):
            raise ValueError(f"need 0 < low < high < inf, got low={self.low}, high={self.high}")
        if not 0 <= self.zero_share <= 1:
            raise ValueError(f"zero_share must be in [0, 1], got {self.zero_share}")

    @classmethod
    def spanning(cls, mean_quality: np.ndarray, mean_cost: np.ndarray, zero_share: float = 0.1) -> PreferenceConfig:
        """[low, high] = :func:`trade_off_span` of the single models' mean quality and cost."""
        low, high = trade_off_span(mean_quality, mean_cost)
        return cls(low=low, high=high, zero_share=zero_share)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n cost weights: 0 with probability ``zero_share``, else log-uniform on [low, high]."""
        weights = np.exp(rng.uniform(np.log(self.low), np.log(self.high), size=n))
        return np.where(rng.random(n) < self.zero_share, 0.0, weights)

    def encode(self, weights: np.ndarray | float) -> np.ndarray:
        """The observation feature f(w) = log1p(w / low) / log1p(high / low), float32."""
        w = np.asarray(weights, dtype=np.float64)
        return (np.log1p(w / self.low) / np.log1p(self.high / self.low)).astype(np.float32)


@pydantic_dataclass(frozen=True, config=STRICT)
class RewardConfig:
    """reward = quality − w × cost − latency_weight × latency_ms / 1000 (see the module docstring).

    ``cost_weight`` is w for the fixed shape, the initial λ with ``budget``; it must be left at 0
    with ``preference`` (w is drawn). ``budget`` and ``preference`` exclude each other.
    """

    cost_weight: float = 0.0  # w: quality given up to save one USD per query
    latency_weight: float = 0.0  # quality given up per second of latency (needs latency_ms in the log)
    budget: BudgetConfig | None = None  # learn w as the multiplier of a mean-cost budget
    preference: PreferenceConfig | None = None  # draw w per episode and append it to the observation

    def __post_init__(self) -> None:
        if not (np.isfinite(self.cost_weight) and self.cost_weight >= 0):
            raise ValueError(f"cost_weight must be finite and >= 0, got {self.cost_weight}")
        if not (np.isfinite(self.latency_weight) and self.latency_weight >= 0):
            raise ValueError(f"latency_weight must be finite and >= 0, got {self.latency_weight}")
        if self.budget is not None and self.preference is not None:
            raise ValueError("budget and preference exclude each other (one learns w, the other draws it)")
        if self.preference is not None and self.cost_weight != 0:
            raise ValueError("with preference the cost weight is drawn per episode; leave cost_weight at 0")


class CostMultiplier:
    """The online Lagrange multiplier λ of a :class:`BudgetConfig` (projected dual ascent)."""

    def __init__(self, config: BudgetConfig, initial: float = 0.0) -> None:
        self.config = config
        self.value = float(initial)  # λ_t: the current multiplier, used as the cost weight
        self.average = float(initial)  # λ̄_t: polynomial-decay average, the final cost weight
        self.steps = 0  # t: costs seen so far
        self.updates = 0  # number of updates (batches)

    def update(self, costs: np.ndarray) -> None:
        """One dual step on a batch of per-step costs (USD)."""
        config = self.config
        eta = config.step / (1.0 + self.steps / config.decay_steps) ** config.decay
        overspend = float(np.sum(costs) - config.budget * np.size(costs))
        self.value = max(0.0, self.value + eta * overspend / config.budget**2)
        self.steps += int(np.size(costs))
        self.updates += 1
        xi = config.averaging
        self.average += (xi + 1.0) / (self.updates + xi) * (self.value - self.average)

    def state_dict(self) -> dict[str, float | int]:
        """λ, λ̄ and the step counts: what a checkpoint keeps to continue the dual ascent."""
        return {"value": self.value, "average": self.average, "steps": self.steps, "updates": self.updates}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        """Continue from a :meth:`state_dict`."""
        self.value, self.average = float(state["value"]), float(state["average"])
        self.steps, self.updates = int(state["steps"]), int(state["updates"])
