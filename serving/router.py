"""The routing logic shared by ``/route``, ``/route/batch`` and the chat proxy (docs/contracts.md §4).

:class:`Router` turns a validated request into decisions: it checks the size limits and the
allowed models, scores the queries with the current policy, chooses a model per query
(greedy, or an exploration draw of :class:`serving.decisions.Exploration`: ``--explore``), counts
the choice and appends it to the decision log. The FastAPI routes (:mod:`serving.app`) and the fast path
(:class:`serving.middleware.LeanRoutes`) both call it, so a decision is made one way only.

Decisions worth knowing:
- A query longer than ``--max-query-chars`` (Unicode code points) is answered **413**
  ``query_too_long``, like a batch over ``--max-batch`` (``batch_too_large``): size limits set
  by the operator, whose remedy is to send less, unlike a 422, which means the request is wrong.
- ``allowed_models`` restricts the choice to those models; ``/route`` still reports the scores
  of every model. Ties go to the lower model index.
- The models of ``--explore-new-models`` that the policy does not know are chosen, logged and
  counted like the policy's (after them in index order), may be named in ``allowed_models``, and
  have no entry in ``scores``: the policy cannot score them.
- Scoring runs inline on the event loop: one query takes a fraction of a millisecond, less than
  a hop to a worker thread. The single queries of concurrent ``/route`` and proxy requests are
  scored in one call (:mod:`serving.batching`). The policy is read once per request from the
  :class:`PolicySlot`, so a reload swaps it atomically without touching requests in flight.
- ``POST /feedback`` with a ``cost`` above ``--max-feedback-cost`` (USD per query) is answered
  **422** ``invalid_request``: no single LLM call costs that much, so it is a client's unit or
  arithmetic mistake, and one absurd cost would dominate training.
- When scoring raises, the request is routed to ``--fallback-model`` (or, if that model is not
  allowed, the first allowed one), with propensity 1, empty ``scores``, and a ``scoring``
  fallback counted; without ``--fallback-model`` it is a 500.
- Which models a query may go to, by precedence: the tenant's ``models`` (:mod:`serving.tenants`:
  naming another in ``allowed_models`` is a 422), then the request's ``allowed_models``, then the
  policy's rule overrides (``rule_mask``, docs/contracts.md §2): a rule's set narrows the allowed
  models, and a rule that would leave none is set aside for that query (counted in
  ``routerl_rule_conflicts_total``: the tenant's and the caller's limits are never broken). Then
  the session (:mod:`serving.sessions`) or the exploration rule chooses among them.
- The cost weight: the request's ``cost_weight``, else the tenant's, else the policy's default.
  Under a live budget (:mod:`serving.budget`) it is the budget's weight, or the request's if that
  is larger (a caller may ask to spend less, not more); the weight used is in the decision log.
- Weights per objective (docs/contracts.md §2.13): a request's ``weights`` (``/route``,
  ``/route/batch``) or ``model: "router:usd=300,latency=0.5"`` (the proxy). Its ``usd`` is the cost
  weight above (the budget and the tenant apply to it as to ``cost_weight``); the others go to the
  policy as they are, and one the policy does not estimate is a 422 naming those it does. Such a
  request is scored alone, not in a micro-batch; the decision log records its ``weights``.
- Capacity (:mod:`serving.capacity`): each capped model's multiplier is subtracted from its score
  before the choice, so every rule above chooses among ``score − λ``, and ``/route``'s ``scores``
  are those; every decision then moves the multipliers.
"""

from __future__ import annotations

import logging
import math
import random
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from serving.batching import ScoreBatcher, Scored
from serving.budget import Charge
from serving.caller import Caller
from serving.capacity import CapacityController
from serving.decisions import DecisionLog, Exploration, best, ranking
from serving.errors import ApiError
from serving.metrics import Metrics
from serving.objectives import Weights, requested_usd, scored_weights, usd_weight
from serving.policy import PolicySlot, ServingPolicy
from serving.proxy import ChatProxy, ChatRequest, Usage, cost_weight_of, routing_text
from serving.recent import RecentDecisions
from serving.schemas import BatchRequest, FeedbackRequest, RouteRequest
from serving.settings import Settings
from serving.spending import Spending

logger = logging.getLogger("routerl.serving")

NO_CALLER = Caller()


@dataclass(frozen=True)
class Decision:
    """One routed query: its id, chosen model (index and name), propensity, scores (None: fallback),
    the models it was chosen among (rules applied), whether a session's rule chose it, and whether
    an exploration draw chose another model than the greedy one."""

    query_id: str
    index: int
    model: str
    propensity: float
    scores: list[float] | None
    allowed: list[int]
    session_turn: bool = False
    explored: bool = False


def _predicted_cost(index: int, scored: Scored | None, row: int) -> float:
    """The policy's predicted cost of model ``index`` for query ``row``; for a new model (no
    prediction) or a scoring fallback, the mean over the models the policy scored (0 without
    costs), until the actual cost corrects it."""
    costs = scored.costs[row] if scored is not None and scored.costs is not None else []
    if index < len(costs):
        return costs[index]
    return sum(costs) / len(costs) if costs else 0.0


class Router:
    """The routing logic shared by ``/route``, ``/route/batch`` and the proxy."""

    def __init__(
        self,
        slot: PolicySlot,
        settings: Settings,
        metrics: Metrics,
        log: DecisionLog | None,
        spending: Spending | None = None,
        capacity: CapacityController | None = None,
    ) -> None:
        """Route with ``slot``'s policy; record decisions in ``metrics`` and ``log``; spend as
        ``spending`` says (default: :meth:`Spending.none`); hold ``capacity``'s caps (None: none)."""
        self.slot = slot
        self.capacity = capacity
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self.spending = spending or Spending.none()
        self.rng = random.Random(settings.explore_seed)
        self.batcher = ScoreBatcher()
        self.recent = RecentDecisions(settings.log_queries)
        exploration = Exploration.of(settings, slot.current.models)
        exploration.check_floor(len(slot.current.models))  # a ValueError stops the start (exit 2)
        self._rule = (slot.current, exploration, (*slot.current.models, *exploration.new_models))

    def _rule_of(self, policy: ServingPolicy) -> tuple[ServingPolicy, Exploration, tuple[str, ...]]:
        """``(policy, its exploration rule, its models then the new ones)``, built once per policy."""
        if policy is not self._rule[0]:
            exploration = Exploration.of(self.settings, policy.models)
            try:
                exploration.check_floor(len(policy.models))
            except ValueError as exc:
                logger.warning("policy %s: %s; the floor is capped at 1/K_f per request", policy.version, exc)
            self._rule = (policy, exploration, (*policy.models, *exploration.new_models))
        return self._rule

    def exploration(self, policy: ServingPolicy) -> Exploration:
        """The exploration rule for ``policy`` (built again after a reload: model indices may move,
        and a new model the policy now knows becomes one of its floored models).

        A reloaded policy with more models can leave an all-models floor no room (``K·P >= 1``):
        it is then capped per request (:class:`Exploration`), with a warning here.
        """
        return self._rule_of(policy)[1]

    def models(self, policy: ServingPolicy) -> tuple[str, ...]:
        """The names a decision's index refers to: ``policy``'s models, then the new models it lacks."""
        return self._rule_of(policy)[2]

    def check_length(self, queries: list[str]) -> None:
        """Answer 413 when a query is over ``--max-query-chars``."""
        limit = self.settings.max_query_chars
        for query in queries:
            if len(query) > limit:
                raise ApiError(413, f"query has {len(query)} characters; the limit is {limit}", "query_too_long")

    def allowed(self, policy: ServingPolicy, names: list[str] | None, caller: Caller = NO_CALLER) -> list[int]:
        """Sorted indices of ``names`` (all models, new ones included, when None) among the caller's
        tenant's models; 422 for a name that is neither the policy's nor a new model, or that the
        tenant may not use."""
        models = self.models(policy)
        tenant = caller.tenant
        if tenant is not None and tenant.models is not None:
            refused = [name for name in names or () if name not in tenant.models]
            if refused:
                shown = ", ".join(repr(name[:100]) for name in refused[:5])
                raise ApiError(
                    422,
                    f"invalid request: allowed_models: model(s) {shown} not allowed for tenant {tenant.name!r}; "
                    f"its models are {list(tenant.models)}",
                )
            names = names or [name for name in tenant.models if name in models]
        if names is None:
            return list(range(len(models)))
        index_of = {name: i for i, name in enumerate(models)}
        unknown = [name for name in names if name not in index_of]
        if unknown:
            shown = ", ".join(repr(name[:100]) for name in unknown[:5])
            new = models[len(policy.models) :]
            raise ApiError(
                422,
                f"invalid request: allowed_models: unknown model(s) {shown}; the policy's models are "
                f"{list(policy.models)}" + (f", and the new models (--explore-new-models) {list(new)}" if new else ""),
            )
        return sorted({index_of[name] for name in names})

    def current(self) -> ServingPolicy:
        """The policy to route this request with, priced at the service's current table."""
        policy = self.slot.current
        self.spending.pricing.follow(policy)
        return policy

    def cost_weight(self, policy: ServingPolicy, requested: float | None, caller: Caller) -> tuple[float, int | None]:
        """The weight to score at, and the live budget's account charged (None: no budget).

        The request's weight, else the tenant's, else the policy's; under a budget the budget's
        weight, or the request's when larger (module docstring).
        """
        tenant = caller.tenant
        account = self.spending.account(tenant)
        if account is not None:
            weight = self.spending.weight(account)
            return (weight if requested is None or requested < weight else requested), account
        if requested is not None:
            return requested, None
        if tenant is not None and tenant.cost_weight is not None:
            return tenant.cost_weight, None
        return policy.default_cost_weight, None

    def score(
        self, policy: ServingPolicy, queries: list[str], cost_weight: Weights, with_costs: bool
    ) -> Scored | None:
        """Scores (and costs) per query, in one call; None when scoring failed and ``--fallback-model`` answers."""
        try:
            scored: Scored | Exception = Scored.of(policy, queries, cost_weight, with_costs)
        except Exception as exc:
            scored = exc
        return self.checked(policy, len(queries), cost_weight, scored)

    async def score_one(
        self, policy: ServingPolicy, query: str, cost_weight: Weights, with_costs: bool
    ) -> Scored | None:
        """Like :meth:`score` for one query, batched with concurrent requests (:mod:`serving.batching`) at a
        USD weight; at weights per objective, alone."""
        if isinstance(cost_weight, dict):
            return self.score(policy, [query], cost_weight, with_costs)
        try:
            scored: Scored | Exception = await self.batcher.scored(policy, query, cost_weight, with_costs)
        except Exception as exc:
            scored = exc
        return self.checked(policy, 1, cost_weight, scored)

    def checked(
        self, policy: ServingPolicy, count: int, weights: Weights, scored: Scored | Exception
    ) -> Scored | None:
        """``scored`` if scoring of ``count`` queries worked; None if it failed and the fallback answers.

        Non-finite scores at a weight above the default are the client's doing (422); a failure
        without ``--fallback-model`` is re-raised (500).
        """
        cost_weight = usd_weight(weights)
        try:
            if isinstance(scored, Exception):
                raise scored
            if all(math.isfinite(value) for row in scored.scores for value in row):
                return scored
            if isinstance(weights, dict):  # finite at its defaults (probed at load): the request's weights overflow
                raise ApiError(
                    422, f"invalid request: weights: {weights!r} are too large; the policy's scores overflow at them"
                )
            if cost_weight > policy.default_cost_weight:
                raise ApiError(
                    422,
                    f"invalid request: cost_weight: {cost_weight!r} is too large; "
                    "the policy's scores overflow at this weight",
                )
            raise RuntimeError(f"policy returned non-finite scores at cost_weight={cost_weight}")
        except ApiError:
            raise
        except Exception:
            if self.settings.fallback_model is None:
                raise
            logger.exception("scoring failed; routing to --fallback-model")
            self.metrics.fallbacks.labels("scoring").inc(count)
            return None

    def ruled(self, policy: ServingPolicy, queries: list[str], allowed: list[int]) -> list[list[int]]:
        """The allowed models of each query once the policy's rule overrides narrowed ``allowed``.

        A query that no rule matches (its mask is all true) keeps ``allowed``; a rule that would
        leave no model is set aside for that query and counted (precedence: module docstring).
        Models past the policy's (new models) are outside every rule's set.
        """
        if not policy.metadata.get("rules"):
            return [allowed] * len(queries)
        result = []
        for mask in policy.rule_mask(queries).tolist():
            narrowed = allowed if all(mask) else [index for index in allowed if index < len(mask) and mask[index]]
            if not narrowed:
                self.metrics.rule_conflicts.inc()
                narrowed = allowed
            result.append(narrowed)
        return result

    def _choose(self, policy: ServingPolicy, scores: list[float], allowed: list[int], caller: Caller) -> Decision:
        """One query's decision from its scores: the session's rule on a later turn, else the
        exploration rule (and remember the session's model)."""
        _, exploration, models = self._rule_of(policy)
        sessions = self.spending.sessions
        scored = [index for index in allowed if index < len(scores)]
        if sessions is not None and caller.session is not None:
            previous = sessions.previous(caller.tenant_name, caller.session, models)
            if previous is not None and previous in scored:
                index = sessions.choose(scores, scored, previous)
                sessions.remember(caller.tenant_name, caller.session, models[index])
                return Decision(uuid.uuid4().hex, index, models[index], 1.0, scores, allowed, session_turn=True)
        index, propensity = exploration.choose(scores, allowed, self.rng)
        if sessions is not None and caller.session is not None:
            sessions.remember(caller.tenant_name, caller.session, models[index])
        explored = propensity < 1.0 and (not scored or index != best(scores, scored))
        return Decision(uuid.uuid4().hex, index, models[index], propensity, scores, allowed, explored=explored)

    def decide(
        self,
        policy: ServingPolicy,
        queries: list[str],
        scored: Scored | None,
        allowed: list[int],
        caller: Caller = NO_CALLER,
        account: int | None = None,
    ) -> list[Decision]:
        """Choose a model for each query from its scores (``scored`` None: the fallback model),
        within the rules, the session and the capacity multipliers; count it and charge its predicted cost
        to ``account``."""
        models = self.models(policy)
        decisions = []
        charges = []
        capacity = self.capacity.begin(policy) if self.capacity is not None else None
        for i, allowed_here in enumerate(self.ruled(policy, queries, allowed) if scored else [allowed] * len(queries)):
            if scored is None:
                fallback = policy.models.index(self.settings.fallback_model or "")
                index = fallback if fallback in allowed_here else allowed_here[0]
                decision = Decision(uuid.uuid4().hex, index, models[index], 1.0, None, allowed_here)
            else:
                scores = scored.scores[i] if capacity is None else capacity.offset(scored.scores[i])
                decision = self._choose(policy, scores, allowed_here, caller)
            if capacity is not None:
                capacity.count(scored.scores[i] if scored else None, allowed_here, decision.index)
            if account is not None:
                charges.append(Charge(account, _predicted_cost(decision.index, scored, i)))
            self.metrics.decided(decision.model, caller.tenant_name)
            if scored is not None and scored.objective_costs is not None and decision.index < len(scored.scores[i]):
                self.metrics.routed_objectives(
                    policy.estimated_objectives, decision.model, decision.index, scored.objective_costs[i]
                )
            if decision.explored:
                self.metrics.explored.inc()
            if self.log is not None:  # feedback needs the log: count it by model (serving.metrics)
                self.metrics.remember_decision(decision.query_id, decision.model)
            decisions.append(decision)
        if charges:
            self.spending.book([d.query_id for d in decisions], charges)
        if capacity is not None:
            capacity.book()
        return decisions

    def record(
        self,
        policy: ServingPolicy,
        query: str,
        decision: Decision,
        cost_weight: float,
        caller: Caller = NO_CALLER,
        model: str | None = None,
        usage: Usage | None = None,
        weights: Weights | None = None,
    ) -> None:
        """Append the decision to the log (if any) and the dashboard's latest decisions; ``model``:
        the one served, if different; ``weights``: the weights per objective it was scored at, if any."""
        self.recent.add(model or decision.model, cost_weight, decision.explored, query)
        if self.log is None:
            return
        chosen = decision.model
        extra: dict[str, object] = {}
        if usage is not None:
            extra.update(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
        if model is not None and model != chosen:
            extra["fallback_from"] = chosen
        if caller.tenant is not None:
            extra["tenant"] = caller.tenant.name
        if decision.session_turn:
            extra["session_turn"] = True
        if isinstance(weights, dict):
            extra["weights"] = weights
        self.log.decision(
            query_id=decision.query_id,
            query=query,
            model=model or chosen,
            propensity=decision.propensity,
            cost_weight=cost_weight,
            policy_version=policy.version,
            **extra,
        )

    async def route(self, body: RouteRequest, caller: Caller = NO_CALLER) -> dict[str, Any]:
        """Answer ``POST /route``: score one query, choose, log; the response body."""
        current = self.current()
        self.check_length([body.query])
        allowed = self.allowed(current, body.allowed_models, caller)
        cost_weight, account = self.cost_weight(current, requested_usd(body.cost_weight, body.weights), caller)
        weights = scored_weights(current, cost_weight, body.weights)
        scored = await self.score_one(current, body.query, weights, account is not None)
        (decision,) = self.decide(current, [body.query], scored, allowed, caller, account)
        self.record(current, body.query, decision, cost_weight, caller, weights=weights)
        return {
            "query_id": decision.query_id,
            "model": decision.model,
            "scores": dict(zip(current.models, decision.scores or [], strict=False)),
            "score_kind": current.score_kind,
            "policy": current.info,
        }

    async def route_batch(self, body: BatchRequest, caller: Caller = NO_CALLER) -> dict[str, Any]:
        """Answer ``POST /route/batch``: route every query with one forward pass; the response body.

        The queries of a batch are not a conversation: a session header does not apply here.
        """
        current = self.current()
        if len(body.queries) > self.settings.max_batch:
            raise ApiError(
                413,
                f"batch has {len(body.queries)} queries; the limit is {self.settings.max_batch}",
                "batch_too_large",
            )
        self.check_length(body.queries)
        caller = Caller(caller.tenant)
        allowed = self.allowed(current, body.allowed_models, caller)
        cost_weight, account = self.cost_weight(current, requested_usd(body.cost_weight, body.weights), caller)
        weights = scored_weights(current, cost_weight, body.weights)
        scored = self.score(current, body.queries, weights, account is not None)
        decisions = self.decide(current, body.queries, scored, allowed, caller, account)
        for query, decision in zip(body.queries, decisions, strict=True):
            self.record(current, query, decision, cost_weight, caller, weights=weights)
        return {
            "query_ids": [d.query_id for d in decisions],
            "models": [d.model for d in decisions],
            "policy": current.info,
        }

    def feedback(self, body: FeedbackRequest) -> None:
        """Answer ``POST /feedback``: append the outcome to the decision log, and correct the live
        budget with the reported cost.

        409 without ``--decision-log``; 422 for a cost over ``--max-feedback-cost``.
        """
        if self.log is None:
            raise ApiError(409, "feedback needs a decision log: start serve.py with --decision-log", "no_decision_log")
        limit = self.settings.max_feedback_cost
        if body.cost is not None and body.cost > limit:
            raise ApiError(
                422,
                f"invalid request: cost: {body.cost:g} USD is over the limit of {limit:g} USD per query "
                "(--max-feedback-cost)",
            )
        self.log.feedback(body.query_id, body.quality, body.cost)
        self.metrics.fed_back(body.query_id, body.quality)
        if body.cost is not None:
            self.spending.correct(body.query_id, body.cost, self.metrics)

    async def route_chat(self, body: ChatRequest, proxy: ChatProxy, caller: Caller = NO_CALLER) -> Response:
        """Answer ``POST /v1/chat/completions``: route the chat's text among the models that have a
        backend (new models included), then forward it through ``proxy`` in ranking order (the
        chosen model first, new models that were not chosen last; a backend's failure falls back
        only to models the tenant, the rules and the backends allow)."""
        current = self.current()
        user = (body.model_extra or {}).get("user")
        caller = caller.with_session(user if isinstance(user, str) else None)
        requested = cost_weight_of(body.model)
        objectives = requested if isinstance(requested, dict) else None
        text = routing_text(body, self.settings.route_on)
        self.check_length([text])
        models = self.models(current)
        allowed = self.allowed(current, None, caller)
        allowed = [index for index in allowed if models[index] in proxy.backends]
        if not allowed:
            raise ApiError(422, f"invalid request: tenant {caller.tenant_name!r} has no model with a backend")
        cost_weight, account = self.cost_weight(current, requested_usd(requested, objectives), caller)
        weights = scored_weights(current, cost_weight, objectives)
        scored = await self.score_one(current, text, weights, account is not None)
        (decision,) = self.decide(current, [text], scored, allowed, caller, account)
        others = ranking(decision.scores, decision.allowed) if decision.scores else decision.allowed
        order = [decision.model] + [models[i] for i in others if i != decision.index]

        def on_served(model: str, usage: Usage | None) -> None:
            self.record(current, text, decision, cost_weight, caller, model, usage, weights)
            if usage is not None:
                actual = self.spending.pricing.usage_cost(model, usage.prompt_tokens, usage.completion_tokens, current)
                if actual is not None:
                    self.spending.correct(decision.query_id, actual, self.metrics)

        return await proxy.forward(order, body, {"x-routerl-query-id": decision.query_id}, on_served)

