"""Capacity: a maximum share of the traffic per model, held by one Lagrange multiplier per capped model.

**Problem.** With a policy's scores ``s_ik`` (higher is better; at its cost weight, quality − w·cost
for a ``utility`` policy) of N queries and caps ``c_k`` on the share of the queries model k may
take, routing under the caps is the assignment problem

    max_x Σ_i Σ_k x_ik s_ik   s.t.   Σ_k x_ik = 1,   x_ik = 0 where a rule forbids k,
                                     Σ_i x_ik <= ⌊c_k N⌋ for every capped k,   x >= 0,

(integral at its vertices: a transportation problem). Its Lagrangian dual, with a multiplier
``λ_k >= 0`` per capped model (0 for the others),

    D(λ) = Σ_i max_{k allowed} (s_ik − λ_k) + Σ_k λ_k ⌊c_k N⌋,

is minimised by the multipliers, and routing every query to ``argmax_k (s_ik − λ_k)`` is optimal
for the caps when it meets them and a multiplier is positive only where its cap binds
(complementary slackness; Boyd & Vandenberghe, *Convex Optimization*, 2004, §5.5.2): among all
routings within the caps it keeps the most of the policy's own score, i.e. it gives up as little
of what the policy expects to gain as the caps allow. Learning the multipliers on a sample of
queries and routing new ones by them is the dual-price scheme of online allocation (Devanur &
Hayes, EC 2009; Agrawal, Wang & Ye, *Operations Research* 62(4), 2014): the shares on new queries
miss the caps by sampling error only, which shrinks as 1/√N.

**Solver** (:meth:`Capacity.fit`): coordinate descent on D, exact in each coordinate (Gauss–Seidel
best responses, as in the auction algorithm: Bertsekas, *Annals of Operations Research* 14, 1988).
With the other multipliers fixed, query i goes to k exactly when its margin
``m_ik = s_ik − max_{j≠k allowed} (s_ij − λ_j)`` exceeds ``λ_k``, so the least ``λ_k`` keeping at most
``⌊c_k N⌋`` queries is the (⌊c_k N⌋+1)-th largest margin (0 when that is negative; a hair above it,
so that ties go elsewhere). Raising a multiplier only raises the other models' margins, so from
λ = 0 every sweep raises each multiplier or leaves it, up to the least fixed point: every capped
model at or under its cap, a positive multiplier only at a binding cap — the optimum above.

**Feasibility.** Caps that no routing can meet are refused up front, with the option named: every
model capped with caps summing below 1 (:func:`policies.capacity.check_caps`), or rule overrides
that leave more queries only capped models than their caps take (a linear program, scipy's HiGHS).

The report's ``capacity`` section (:class:`CapacityPlan`, docs/contracts.md §3.5): the multipliers,
fitted on the queries the policy learned from at its operating weight, and on the test split each
capped model's share and the quality and cost, with the caps and without.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linprog

from data.routing_log import RoutingLog
from data.schema import DataError
from evaluation.metrics import route_metrics
from policies.capacity import capacity_metadata, check_caps

#: A multiplier is set this far (times the scores' spread) above the margin it must exceed, so that ties go elsewhere.
TIE_BREAK = 1e-9
#: Most sweeps over the capped models; the multipliers stop moving long before on every log tried.
MAX_SWEEPS = 1000
#: A router's (N, K) scores on some queries at a cost weight.
Scores = Callable[[float], np.ndarray]


@dataclass(frozen=True)
class Capacity:
    """Caps on the share of the queries per model (``capacity`` of the run configuration).

    Attributes:
        models: every model, in the policy's order.
        max_share: {model: maximum share in (0, 1]}; models not named have no cap. Checked at
            construction (a :class:`data.schema.DataError` naming ``capacity``).
    """

    models: tuple[str, ...]
    max_share: Mapping[str, float]

    def __post_init__(self) -> None:
        """Refuse an unknown model, a share outside (0, 1] and caps that cannot hold whatever the queries."""
        try:
            check_caps(self.max_share, self.models, "capacity")
        except ValueError as exc:
            raise DataError(str(exc)) from None

    @property
    def caps(self) -> np.ndarray:
        """(K,) each model's cap; 1 (no constraint) for a model without one."""
        return np.array([self.max_share.get(name, 1.0) for name in self.models], dtype=float)

    def fit(self, scores: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """The (K,) multipliers that hold the caps on these queries (module docstring).

        ``scores``: (N, K) finite where allowed; ``allowed``: (N, K) bool, the models each query may
        go to (rule overrides; None: all), at least one per query.

        Raises:
            DataError: the caps cannot hold on these queries (rules leave too many queries only capped models).
        """
        scores, allowed = self._checked(scores, allowed)
        n = len(scores)
        limits = np.floor(self.caps * n + 1e-9)
        self._check_feasible(allowed, limits)
        masked = np.where(allowed, scores, -np.inf)
        spread = float(np.std(scores[allowed])) or 1.0
        capped = [k for k in range(len(self.models)) if limits[k] < n]
        multipliers = np.zeros(len(self.models))
        for _ in range(MAX_SWEEPS):
            previous = multipliers.copy()
            for k in capped:
                multipliers[k] = _least_multiplier(masked, multipliers, k, int(limits[k]), spread)
            if np.array_equal(previous, multipliers):
                break
        return multipliers

    def route(self, scores: np.ndarray, multipliers: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """(N,) ``argmax_k (s_ik − λ_k)`` among each query's allowed models (ties to the lower index)."""
        offset = np.asarray(scores, dtype=float) - multipliers
        return np.argmax(offset if allowed is None else np.where(allowed, offset, -np.inf), axis=1)

    def metadata(self, multipliers: np.ndarray) -> dict[str, dict[str, float]]:
        """The exported policy's ``capacity`` (:func:`policies.capacity.capacity_metadata`)."""
        caps = check_caps(self.max_share, self.models, "capacity")
        return capacity_metadata(caps, dict(zip(self.models, multipliers.tolist(), strict=True)))

    def _checked(self, scores: np.ndarray, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``scores`` as float (N, K) and ``allowed`` as bool (N, K), or ValueError saying what is wrong."""
        scores = np.asarray(scores, dtype=float)
        shape = (len(scores), len(self.models))
        if scores.ndim != 2 or scores.shape != shape or not len(scores):
            raise ValueError(f"scores must be (N >= 1, {len(self.models)}), got {scores.shape}")
        allowed = np.ones(shape, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
        if allowed.shape != shape or not allowed.any(axis=1).all():
            raise ValueError(f"allowed must be ({shape[0]}, {shape[1]}) with a model for every query")
        if not np.isfinite(scores[allowed]).all():
            raise ValueError("scores must be finite where a model is allowed")
        return scores, allowed

    def _check_feasible(self, allowed: np.ndarray, limits: np.ndarray) -> None:
        """DataError unless some routing of these queries (a fractional one suffices: the problem is a
        transportation problem) sends each to an allowed model within the caps: a linear program over
        the queries grouped by their allowed models."""
        patterns, counts = np.unique(allowed, axis=0, return_counts=True)
        cells = np.argwhere(patterns)  # (pattern, model) of every variable
        each_query = np.zeros((len(patterns), len(cells)))
        each_query[cells[:, 0], np.arange(len(cells))] = 1
        each_model = np.zeros((len(self.models), len(cells)))
        each_model[cells[:, 1], np.arange(len(cells))] = 1
        found = linprog(
            np.zeros(len(cells)), A_ub=each_model, b_ub=limits, A_eq=each_query, b_eq=counts, method="highs"
        )
        if found.status == 2:
            raise DataError(
                f"capacity: the caps {dict(self.max_share)} cannot hold with the rule overrides: more of the "
                f"{len(allowed)} queries may go only to capped models than their caps take"
            )


def _least_multiplier(masked: np.ndarray, multipliers: np.ndarray, k: int, limit: int, spread: float) -> float:
    """The least λ_k >= 0 that sends at most ``limit`` queries to k, the other multipliers fixed.

    Query i goes to k when its margin s_ik − max_{j≠k}(s_ij − λ_j) exceeds λ_k: λ_k is the
    (limit+1)-th largest margin, a hair above it (:data:`TIE_BREAK`), or 0 when that is negative.
    """
    others = masked - multipliers
    others[:, k] = -np.inf
    with np.errstate(invalid="ignore"):  # inf − inf: k is forbidden and alone; never the case after the checks
        margins = masked[:, k] - others.max(axis=1)
    threshold = np.partition(margins, len(margins) - limit - 1)[len(margins) - limit - 1]
    return max(0.0, float(threshold) + TIE_BREAK * spread) if threshold >= 0 else 0.0


def _shares(actions: np.ndarray, models: tuple[str, ...]) -> dict[str, float]:
    return dict(zip(models, (np.bincount(actions, minlength=len(models)) / max(len(actions), 1)).tolist(), strict=True))


@dataclass(frozen=True)
class CapacityPlan:
    """What :func:`evaluation.evaluate.evaluate` needs for the report's ``capacity`` section.

    Attributes:
        capacity: the caps.
        fit_scores, fit_allowed: the router's scores on the queries its multipliers are fitted on
            (those the policy learned from) and the models each may go to (None: all).
        test_scores, test_allowed: the same on the evaluated log's queries.
    """

    capacity: Capacity
    fit_scores: Scores
    fit_allowed: np.ndarray | None
    test_scores: Scores
    test_allowed: np.ndarray | None

    def run(self, table: RoutingLog, actions: np.ndarray, cost_weight: float) -> dict[str, Any]:
        """The section: multipliers fitted at ``cost_weight``; on ``table`` (the evaluated log's outcomes)
        the capped models' shares, quality and cost of ``actions`` (the router without caps) and with them."""
        capacity, models = self.capacity, self.capacity.models
        fit_scores = self.fit_scores(cost_weight)
        multipliers = capacity.fit(fit_scores, self.fit_allowed)
        fitted = _shares(capacity.route(fit_scores, multipliers, self.fit_allowed), models)
        capped = capacity.route(self.test_scores(cost_weight), multipliers, self.test_allowed)
        routed = {"without": actions, "with": capped}
        shares = {case: _shares(chosen, models) for case, chosen in routed.items()}
        measured = {case: route_metrics(table, chosen, cost_weight) for case, chosen in routed.items()}
        return {
            "cost_weight": cost_weight,
            "fitted_on_queries": len(fit_scores),
            "models": {
                name: {
                    "max_share": share,
                    "multiplier": float(multipliers[models.index(name)]),
                    "fitted_share": fitted[name],
                    "test_share_without": shares["without"][name],
                    "test_share_with": shares["with"][name],
                }
                for name, share in capacity.max_share.items()
            },
            **{
                f"test_{case}": {
                    **{key: measured[case][key] for key in ("mean_quality", "mean_cost", "mean_reward")},
                    "share_per_model": shares[case],
                }
                for case in routed
            },
        }


def exported_capacity(section: dict[str, Any] | None) -> dict[str, dict[str, float]] | None:
    """The exported policy's metadata ``capacity`` from the report's section (None: no caps)."""
    if section is None:
        return None
    models = section["models"]
    return capacity_metadata(
        {name: entry["max_share"] for name, entry in models.items()},
        {name: entry["multiplier"] for name, entry in models.items()},
    )


def capacity_lines(report: dict[str, Any]) -> list[str]:
    """``report.md``'s capacity section: each capped model's share on the test split, then quality and cost."""
    section = report.get("capacity")
    if section is None:
        return []
    lines = [
        "",
        "## Capacity",
        "",
        f"Multipliers fitted on {section['fitted_on_queries']} training queries at cost weight "
        f"{section['cost_weight']:g}; applied by serve.py (policy.pt's own route does not), which holds the caps "
        "on live traffic. Test split:",
        "",
        "| model | max share | multiplier | share without | share with |",
        "|---|---|---|---|---|",
    ]
    for name, entry in section["models"].items():
        lines.append(
            f"| {name} | {entry['max_share']:.3f} | {entry['multiplier']:.4g} | {entry['test_share_without']:.3f} | "
            f"{entry['test_share_with']:.3f} |"
        )
    lines += ["", "| routing | mean quality | mean cost | mean reward |", "|---|---|---|---|"]
    for name, key in (("without caps", "test_without"), ("with caps", "test_with")):
        row = section[key]
        lines.append(f"| {name} | {row['mean_quality']:.4f} | {row['mean_cost']:.6f} | {row['mean_reward']:.4f} |")
    return lines
