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
"""

from __future__ import annotations

import logging
import math
import random
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from serving.batching import ScoreBatcher
from serving.decisions import DecisionLog, Exploration, ranking
from serving.errors import ApiError
from serving.metrics import Metrics
from serving.policy import LoadedPolicy, PolicySlot
from serving.proxy import ChatProxy, ChatRequest, Usage, cost_weight_of, routing_text
from serving.schemas import BatchRequest, FeedbackRequest, RouteRequest
from serving.settings import Settings

logger = logging.getLogger("routerl.serving")


@dataclass(frozen=True)
class Decision:
    """One routed query: its id, chosen model (index and name), propensity and scores (None: fallback)."""

    query_id: str
    index: int
    model: str
    propensity: float
    scores: list[float] | None


class Router:
    """The routing logic shared by ``/route``, ``/route/batch`` and the proxy."""

    def __init__(self, slot: PolicySlot, settings: Settings, metrics: Metrics, log: DecisionLog | None) -> None:
        """Route with ``slot``'s policy; record decisions in ``metrics`` and ``log``."""
        self.slot = slot
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self.rng = random.Random(settings.explore_seed)
        self.batcher = ScoreBatcher()
        exploration = Exploration.of(settings, slot.current.models)
        exploration.check_floor(len(slot.current.models))  # a ValueError stops the start (exit 2)
        self._rule = (slot.current, exploration, (*slot.current.models, *exploration.new_models))

    def _rule_of(self, policy: LoadedPolicy) -> tuple[LoadedPolicy, Exploration, tuple[str, ...]]:
        """``(policy, its exploration rule, its models then the new ones)``, built once per policy."""
        if policy is not self._rule[0]:
            exploration = Exploration.of(self.settings, policy.models)
            try:
                exploration.check_floor(len(policy.models))
            except ValueError as exc:
                logger.warning("policy %s: %s; the floor is capped at 1/K_f per request", policy.version, exc)
            self._rule = (policy, exploration, (*policy.models, *exploration.new_models))
        return self._rule

    def exploration(self, policy: LoadedPolicy) -> Exploration:
        """The exploration rule for ``policy`` (built again after a reload: model indices may move,
        and a new model the policy now knows becomes one of its floored models).

        A reloaded policy with more models can leave an all-models floor no room (``K·P >= 1``):
        it is then capped per request (:class:`Exploration`), with a warning here.
        """
        return self._rule_of(policy)[1]

    def models(self, policy: LoadedPolicy) -> tuple[str, ...]:
        """The names a decision's index refers to: ``policy``'s models, then the new models it lacks."""
        return self._rule_of(policy)[2]

    def check_length(self, queries: list[str]) -> None:
        """Answer 413 when a query is over ``--max-query-chars``."""
        limit = self.settings.max_query_chars
        for query in queries:
            if len(query) > limit:
                raise ApiError(413, f"query has {len(query)} characters; the limit is {limit}", "query_too_long")

    def allowed(self, policy: LoadedPolicy, names: list[str] | None) -> list[int]:
        """Sorted indices of ``names`` (all models, new ones included, when None); 422 for a name
        that is neither the policy's nor a new model."""
        models = self.models(policy)
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

    def score(self, policy: LoadedPolicy, queries: list[str], cost_weight: float) -> list[list[float]] | None:
        """Scores per query, in one call; None when scoring failed and ``--fallback-model`` answers."""
        try:
            rows: list[list[float]] | Exception = policy.scores(queries, cost_weight).tolist()
        except Exception as exc:
            rows = exc
        return self.checked(policy, len(queries), cost_weight, rows)

    async def score_one(self, policy: LoadedPolicy, query: str, cost_weight: float) -> list[list[float]] | None:
        """Like :meth:`score` for one query, batched with concurrent requests (:mod:`serving.batching`)."""
        try:
            rows: list[list[float]] | Exception = [await self.batcher.scores(policy, query, cost_weight)]
        except Exception as exc:
            rows = exc
        return self.checked(policy, 1, cost_weight, rows)

    def checked(
        self, policy: LoadedPolicy, count: int, cost_weight: float, rows: list[list[float]] | Exception
    ) -> list[list[float]] | None:
        """``rows`` if scoring of ``count`` queries worked; None if it failed and the fallback answers.

        Non-finite scores at a weight above the default are the client's doing (422); a failure
        without ``--fallback-model`` is re-raised (500).
        """
        try:
            if isinstance(rows, Exception):
                raise rows
            if all(math.isfinite(value) for row in rows for value in row):
                return rows
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

    def decide(
        self, policy: LoadedPolicy, rows: list[list[float]] | None, count: int, allowed: list[int]
    ) -> list[Decision]:
        """Choose a model for each of ``count`` queries from their ``rows`` of scores (None: the
        fallback model) with the exploration rule, and count it."""
        _, exploration, models = self._rule_of(policy)
        decisions = []
        for i in range(count):
            if rows is None:
                fallback = policy.models.index(self.settings.fallback_model or "")
                index = fallback if fallback in allowed else allowed[0]
                decision = Decision(uuid.uuid4().hex, index, models[index], 1.0, None)
            else:
                index, propensity = exploration.choose(rows[i], allowed, self.rng)
                decision = Decision(uuid.uuid4().hex, index, models[index], propensity, rows[i])
            self.metrics.decided(decision.model)
            decisions.append(decision)
        return decisions

    def record(
        self,
        policy: LoadedPolicy,
        query: str,
        decision: Decision,
        cost_weight: float,
        model: str | None = None,
        usage: Usage | None = None,
    ) -> None:
        """Append the decision to the log (if any); ``model``: the one served, if different."""
        if self.log is None:
            return
        chosen = decision.model
        extra: dict[str, object] = {}
        if usage is not None:
            extra.update(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
        if model is not None and model != chosen:
            extra["fallback_from"] = chosen
        self.log.decision(
            query_id=decision.query_id,
            query=query,
            model=model or chosen,
            propensity=decision.propensity,
            cost_weight=cost_weight,
            policy_version=policy.version,
            **extra,
        )

    async def route(self, body: RouteRequest) -> dict[str, Any]:
        """Answer ``POST /route``: score one query, choose, log; the response body."""
        current = self.slot.current
        self.check_length([body.query])
        cost_weight = current.default_cost_weight if body.cost_weight is None else body.cost_weight
        allowed = self.allowed(current, body.allowed_models)
        (decision,) = self.decide(current, await self.score_one(current, body.query, cost_weight), 1, allowed)
        self.record(current, body.query, decision, cost_weight)
        return {
            "query_id": decision.query_id,
            "model": decision.model,
            "scores": dict(zip(current.models, decision.scores or [], strict=False)),
            "score_kind": current.score_kind,
            "policy": current.info,
        }

    async def route_batch(self, body: BatchRequest) -> dict[str, Any]:
        """Answer ``POST /route/batch``: route every query with one forward pass; the response body."""
        current = self.slot.current
        if len(body.queries) > self.settings.max_batch:
            raise ApiError(
                413,
                f"batch has {len(body.queries)} queries; the limit is {self.settings.max_batch}",
                "batch_too_large",
            )
        self.check_length(body.queries)
        cost_weight = current.default_cost_weight if body.cost_weight is None else body.cost_weight
        allowed = self.allowed(current, body.allowed_models)
        decisions = self.decide(current, self.score(current, body.queries, cost_weight), len(body.queries), allowed)
        for query, decision in zip(body.queries, decisions, strict=True):
            self.record(current, query, decision, cost_weight)
        return {
            "query_ids": [d.query_id for d in decisions],
            "models": [d.model for d in decisions],
            "policy": current.info,
        }

    def feedback(self, body: FeedbackRequest) -> None:
        """Answer ``POST /feedback``: append the outcome to the decision log.

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

    async def route_chat(self, body: ChatRequest, proxy: ChatProxy) -> Response:
        """Answer ``POST /v1/chat/completions``: route the chat's text among the models that have a
        backend (new models included), then forward it through ``proxy`` in ranking order (the
        chosen model first, new models that were not chosen last)."""
        current = self.slot.current
        cost_weight = cost_weight_of(body.model, current.default_cost_weight)
        text = routing_text(body, self.settings.route_on)
        self.check_length([text])
        models = self.models(current)
        allowed = self.allowed(current, [name for name in models if name in proxy.backends])
        (decision,) = self.decide(current, await self.score_one(current, text, cost_weight), 1, allowed)
        others = ranking(decision.scores, allowed) if decision.scores else allowed
        order = [decision.model] + [models[i] for i in others if i != decision.index]

        def on_served(model: str, usage: Usage | None) -> None:
            self.record(current, text, decision, cost_weight, model, usage)

        return await proxy.forward(order, body, {"x-routerl-query-id": decision.query_id}, on_served)
