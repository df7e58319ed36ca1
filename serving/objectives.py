"""Weights per objective in the service (docs/contracts.md §2.13, §4.3): what a request asks, what the policy scores at.

A request gives a weight per objective as ``/route``'s and ``/route/batch``'s ``weights`` or the
proxy's ``model: "router:usd=300,latency=0.5"``. Its ``usd`` is the cost weight (the tenant's and
the live budget's rules apply to it as to ``cost_weight``, :meth:`serving.router.Router.cost_weight`);
the others go to the policy as they are. An objective the policy does not estimate is a 422 that
names those it does.
"""

from __future__ import annotations

from serving.errors import ApiError
from serving.policy import ServingPolicy

#: What a policy scores at: the USD weight alone, or a weight per objective.
Weights = float | dict[str, float]


def requested_usd(cost_weight: Weights | None, objectives: dict[str, float] | None) -> float | None:
    """The USD weight a request asks for: ``objectives``' ``usd``, else its ``cost_weight`` (None: the default)."""
    if objectives is not None and "usd" in objectives:
        return objectives["usd"]
    return cost_weight if not isinstance(cost_weight, dict) else None


def scored_weights(policy: ServingPolicy, cost_weight: float, objectives: dict[str, float] | None) -> Weights:
    """What ``policy`` scores at: ``cost_weight`` alone, or with the request's weights of other objectives.

    Raises:
        ApiError: 422 naming an objective the policy does not estimate, and those it does.
    """
    others = {name: weight for name, weight in (objectives or {}).items() if name != "usd"}
    if not others:
        return cost_weight
    known = policy.objectives()
    unknown = sorted(set(others) - set(known))
    if unknown:
        raise ApiError(
            422, f"invalid request: weights: unknown objective(s) {unknown}; this policy's objectives are {known}"
        )
    return {"usd": cost_weight, **others}


def usd_weight(weights: Weights) -> float:
    """The USD weight of what a policy scores at."""
    return weights["usd"] if isinstance(weights, dict) else weights
