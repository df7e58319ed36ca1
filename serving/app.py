"""The FastAPI application of the router service (CONTRACTS.md §4).

Routes: ``POST /route``, ``POST /route/batch``, ``POST /feedback``, ``POST /v1/chat/completions``
(with ``--backends``), ``POST /admin/reload``, ``GET /healthz``, ``GET /metrics``. Every error
has the body ``{"error": {"type", "message"}}`` (see :mod:`serving.errors` for the statuses).

Decisions worth knowing:
- A query longer than ``--max-query-chars`` (Unicode code points) is answered **413**
  ``query_too_long``, like a body over ``--max-body-bytes`` (``payload_too_large``) and a batch
  over ``--max-batch`` (``batch_too_large``): size limits set by the operator, whose remedy is
  to send less, unlike a 422, which means the request is wrong.
- An empty query ``""`` is valid for the policy (CONTRACTS.md §2) but the service answers it
  422: routing nothing is always a client bug.
- ``cost_weight`` absent or ``null`` means the policy's ``default_cost_weight()``; otherwise it
  must be a JSON number (not a string or a boolean), finite and >= 0.
- ``allowed_models`` restricts the choice to those models (duplicates are harmless); ``/route``
  still reports the scores of every model. Ties go to the lower model index.
- Scoring runs inline on the event loop: one query takes a fraction of a millisecond, less than
  a hop to a worker thread. The single queries of concurrent ``/route`` and proxy requests are
  scored in one call (:mod:`serving.batching`). The policy is read once per request from the
  :class:`PolicySlot`, so a reload swaps it atomically without touching requests in flight.
- Valid ``/route`` and ``/route/batch`` requests are answered by :class:`LeanRoutes` without
  FastAPI's request handling (same models, same :class:`Router`); every other request, and
  every invalid one, goes through FastAPI.
- When scoring raises, the request is routed to ``--fallback-model`` (or, if that model is not
  allowed, the first allowed one), with propensity 1, empty ``scores``, and a ``scoring``
  fallback counted; without ``--fallback-model`` it is a 500.
"""

from __future__ import annotations

import asyncio
import email.message
import logging
import math
import os
import random
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.auth import AuthMiddleware
from serving.backends import load_backends
from serving.batching import ScoreBatcher
from serving.decisions import DecisionLog, choose, ranking
from serving.errors import (
    ApiError,
    SafeJSONResponse,
    error_response,
    install_error_handlers,
    internal_error_response,
)
from serving.metrics import Metrics, MetricsMiddleware
from serving.policy import LoadedPolicy, PolicyError, PolicySlot, check_serving_policy, load_policy
from serving.proxy import ChatProxy, ChatRequest, Usage, cost_weight_of, routing_text
from serving.settings import Settings

logger = logging.getLogger("routerl.serving")

#: A body larger than this is not even drained before the 413 (the connection is closed).
_DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


def _check_utf8(text: str, what: str) -> str:
    """Raise ``ValueError`` when ``text`` cannot be encoded as UTF-8 (a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (it contains a lone surrogate)") from None
    return text


def _check_query(value: str) -> str:
    """Reject the empty query and text that is not valid Unicode."""
    if value == "":
        raise ValueError("query is empty; send the text to route")
    return _check_utf8(value, "query")


class RoutingOptions(BaseModel):
    """Fields shared by ``/route`` and ``/route/batch``. Strict: no coercion, no extra keys."""

    model_config = ConfigDict(extra="forbid", strict=True)

    cost_weight: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        default=None,
        description="Quality given up to save one USD per query; default: the policy's own.",
    )
    allowed_models: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Choose only among these models (names from the policy's models()).",
    )

    @field_validator("allowed_models")
    @classmethod
    def _names_are_text(cls, value: list[str] | None) -> list[str] | None:
        """Reject model names that are not valid Unicode."""
        for name in value or []:
            _check_utf8(name, "a model name in allowed_models")
        return value


class RouteRequest(RoutingOptions):
    """Body of ``POST /route``."""

    query: str = Field(description="The text to route; must not be empty.")

    _query = field_validator("query")(_check_query)


class BatchRequest(RoutingOptions):
    """Body of ``POST /route/batch``."""

    queries: list[str] = Field(min_length=1, description="Texts to route; none may be empty.")

    @field_validator("queries")
    @classmethod
    def _queries_are_valid(cls, value: list[str]) -> list[str]:
        """Check every query like ``/route`` checks its one."""
        for query in value:
            _check_query(query)
        return value


class FeedbackRequest(BaseModel):
    """Body of ``POST /feedback``: the outcome of an earlier decision."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query_id: str = Field(min_length=1, max_length=200)
    quality: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    cost: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None


class ReloadRequest(BaseModel):
    """Optional body of ``POST /admin/reload``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    policy: str | None = Field(default=None, min_length=1, description="Path of the new policy.")


class PolicyInfo(BaseModel):
    """Which policy answered: file hash prefix and training-data fingerprint."""

    version: str
    fingerprint: str


class RouteResponse(BaseModel):
    """Body of a successful ``POST /route``."""

    query_id: str
    model: str
    scores: dict[str, float]
    score_kind: str
    policy: PolicyInfo


class BatchResponse(BaseModel):
    """Body of a successful ``POST /route/batch``."""

    query_ids: list[str]
    models: list[str]
    policy: PolicyInfo


class HealthResponse(BaseModel):
    """Body of ``GET /healthz``."""

    status: str
    policy: PolicyInfo


class ReloadResponse(BaseModel):
    """Body of a successful ``POST /admin/reload``."""

    status: str
    policy: PolicyInfo
    previous: PolicyInfo


def _is_json_content_type(value: str | None) -> bool:
    """True for ``application/json`` and ``application/*+json`` (parameters allowed)."""
    if not value:
        return False
    message = email.message.Message()
    message["content-type"] = value
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


async def require_json(request: Request) -> None:
    """Dependency: answer 415 unless the request declares a JSON body.

    FastAPI runs it before validating the body, so a non-JSON body gets 415, not 422. It is
    ``async`` because FastAPI runs a plain function dependency in a worker thread, a hop that
    would cost more than the whole routing decision.
    """
    content_type = request.headers.get("content-type")
    if not _is_json_content_type(content_type):
        got = f"got {content_type!r}" if content_type else "none was given"
        raise ApiError(415, f"Content-Type must be application/json; {got}")


async def require_json_if_body(request: Request) -> None:
    """Dependency: like :func:`require_json`, for routes whose body is optional."""
    if await request.body():
        await require_json(request)


class BodyLimitMiddleware:
    """ASGI middleware: answer 413 to a request body over ``max_body_bytes``.

    The body is read (and buffered, up to the limit) before the app sees it, so the limit also
    holds for chunked bodies without a ``Content-Length``. An oversized body is drained (up to
    64 MiB) before the 413 so that the client reads the answer instead of a broken pipe.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        """Wrap ``app`` with a body limit of ``max_body_bytes``."""
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer the body within the limit and replay it, or answer 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        too_large = declared.isdigit() and int(declared) > self.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away; nobody to answer
            body = message.get("body", b"")
            size += len(body)
            more_body = bool(message.get("more_body", False))
            if size > self.max_body_bytes:
                too_large = True
            if too_large:
                if size > _DRAIN_LIMIT_BYTES:
                    break
                continue
            chunks.append(body)
        if too_large:
            response = error_response(413, f"request body exceeds the limit of {self.max_body_bytes} bytes")
            await response(scope, receive, send)
            return
        await self.app(scope, replaying(b"".join(chunks), receive), send)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already read ``body`` to the app once, then defers to the server."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


#: ``Content-Type`` values that :class:`LeanRoutes` accepts as JSON without parsing the header.
_PLAIN_JSON = frozenset({b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8"})


def _declares_plain_json(scope: Scope) -> bool:
    """True when the request's ``Content-Type`` is exactly ``application/json`` (the common case)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.lower() in _PLAIN_JSON
    return False


class LeanRoutes:
    """ASGI middleware: answer valid ``POST /route`` and ``/route/batch`` without FastAPI.

    Why: FastAPI's dependency solving, body parsing and response handling cost more CPU than
    the routing decision itself. This path validates the body with the same pydantic models in
    one step (``model_validate_json``) and calls the same :class:`Router` methods as the FastAPI
    routes, so the decisions, the decision log and the metrics are the same. Every request it
    does not fully accept (another content type, a body that fails validation) is handed, body
    intact, to the FastAPI app, which gives the usual errors: the error answers exist once.
    It sits inside the body-limit, auth and metrics middlewares, which still see every request.
    """

    def __init__(self, app: ASGIApp, router: Router) -> None:
        """Serve ``router``'s routes in front of ``app`` (the FastAPI app)."""
        self.app = app
        self.routes: dict[str, tuple[type[RoutingOptions], Callable[[Any], Awaitable[dict[str, Any]]]]] = {
            "/route": (RouteRequest, router.route),
            "/route/batch": (BatchRequest, router.route_batch),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a valid routing request here; hand anything else to the app."""
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None or not _declares_plain_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        model, handler = route
        try:
            request = model.model_validate_json(body)
        except ValidationError:
            await self.app(scope, replaying(body, receive), send)
            return
        try:
            response = SafeJSONResponse(await handler(request))
        except ApiError as exc:
            response = exc.response()
        except Exception as exc:
            response = internal_error_response(scope["method"], scope["path"], exc)
        await response(scope, receive, send)


@dataclass(frozen=True)
class Decision:
    """One routed query: its id, chosen model index, propensity and scores (None: fallback)."""

    query_id: str
    index: int
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

    def check_length(self, queries: list[str]) -> None:
        """Answer 413 when a query is over ``--max-query-chars``."""
        limit = self.settings.max_query_chars
        for query in queries:
            if len(query) > limit:
                raise ApiError(413, f"query has {len(query)} characters; the limit is {limit}", "query_too_long")

    @staticmethod
    def allowed(policy: LoadedPolicy, names: list[str] | None) -> list[int]:
        """Sorted indices of ``names`` (all models when None); 422 for an unknown name."""
        if names is None:
            return list(range(len(policy.models)))
        index_of = {name: i for i, name in enumerate(policy.models)}
        unknown = [name for name in names if name not in index_of]
        if unknown:
            shown = ", ".join(repr(name[:100]) for name in unknown[:5])
            raise ApiError(
                422,
                f"invalid request: allowed_models: unknown model(s) {shown}; "
                f"the policy's models are {list(policy.models)}",
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
        fallback model), ε-greedy with ``--explore-epsilon``, and count it."""
        decisions = []
        for i in range(count):
            if rows is None:
                fallback = policy.models.index(self.settings.fallback_model or "")
                index = fallback if fallback in allowed else allowed[0]
                decision = Decision(uuid.uuid4().hex, index, 1.0, None)
            else:
                index, propensity = choose(rows[i], allowed, self.settings.explore_epsilon, self.rng)
                decision = Decision(uuid.uuid4().hex, index, propensity, rows[i])
            self.metrics.decided(policy.models[decision.index])
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
        chosen = policy.models[decision.index]
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
            "model": current.models[decision.index],
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
            "models": [current.models[d.index] for d in decisions],
            "policy": current.info,
        }


def create_app(
    policy: str | Path | LoadedPolicy,
    settings: Settings | None = None,
    handle_sighup: bool = False,
    shared_policy_file: Path | None = None,
) -> FastAPI:
    """Build the router service for ``policy`` (a path, or an already loaded policy).

    ``handle_sighup`` makes ``SIGHUP`` reload the policy file (main thread of ``serve.py`` only).
    ``shared_policy_file`` (a worker of ``serve.py --workers``, :mod:`serving.workers`): a
    successful ``POST /admin/reload`` writes the new policy's path there and sends ``SIGHUP`` to
    the supervisor, which forwards it to every worker; ``SIGHUP`` reloads from the path written
    there, when there is one.

    Raises:
        PolicyError: the policy is missing, invalid, or lacks a model the settings name.
        ValueError: the ``--backends`` file is invalid.
    """
    settings = settings or Settings()
    backends = load_backends(settings.backends) if settings.backends else {}
    required = [*backends, *([settings.fallback_model] if settings.fallback_model else [])]
    loaded = policy if isinstance(policy, LoadedPolicy) else load_policy(policy)
    slot = PolicySlot(check_serving_policy(loaded, required), required)
    metrics = Metrics()
    log = DecisionLog(settings.decision_log, settings.log_queries) if settings.decision_log else None
    router = Router(slot, settings, metrics, log)
    proxy = ChatProxy(backends, metrics) if backends else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Reload on SIGHUP while serving; close the proxy's connections and the log after."""
        if handle_sighup:
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: asyncio.ensure_future(_reload_on_signal(slot, shared_policy_file))
            )
        yield
        if proxy is not None:
            await proxy.aclose()
        if log is not None:
            log.close()

    app = FastAPI(
        title="routerl router",
        summary="Routes each query to an LLM with an exported routerl policy.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=SafeJSONResponse,
        lifespan=lifespan,
        # the service has its own metrics (/metrics); FastAPI's OpenTelemetry hooks would cost
        # a provider lookup on every request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.slot = slot
    app.state.metrics = metrics
    install_error_handlers(app)

    @app.api_route("/healthz", methods=["GET", "HEAD"], response_model=HealthResponse)
    async def healthz() -> SafeJSONResponse:
        """Liveness and the identity of the loaded policy."""
        return SafeJSONResponse({"status": "ok", "policy": slot.current.info})

    @app.get("/metrics")
    async def metrics_route() -> Response:
        """Prometheus text exposition of the service's metrics."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/route", response_model=RouteResponse, dependencies=[Depends(require_json)])
    async def route(body: RouteRequest) -> SafeJSONResponse:
        """Score one query with the policy and return the chosen model (see :class:`LeanRoutes`)."""
        return SafeJSONResponse(await router.route(body))

    @app.post("/route/batch", response_model=BatchResponse, dependencies=[Depends(require_json)])
    async def route_batch(body: BatchRequest) -> SafeJSONResponse:
        """Route many queries with one forward pass (see :class:`LeanRoutes`)."""
        return SafeJSONResponse(await router.route_batch(body))

    @app.post("/feedback", dependencies=[Depends(require_json)])
    async def feedback(body: FeedbackRequest) -> SafeJSONResponse:
        """Append the observed quality (and cost) of an earlier decision to the log."""
        if log is None:
            raise ApiError(409, "feedback needs a decision log: start serve.py with --decision-log", "no_decision_log")
        log.feedback(body.query_id, body.quality, body.cost)
        return SafeJSONResponse({"ok": True})

    @app.post("/admin/reload", response_model=ReloadResponse, dependencies=[Depends(require_json_if_body)])
    async def reload(body: ReloadRequest | None = None) -> SafeJSONResponse:
        """Swap in a new policy file (default: the current file again); 422 keeps the old one."""
        previous = slot.current
        try:
            loaded = await slot.reload(body.policy if body else None)
        except PolicyError as exc:
            raise ApiError(422, f"policy refused, the old one keeps serving: {exc}", "invalid_policy") from None
        logger.info("reloaded policy %s (version %s)", loaded.path, loaded.version)
        if shared_policy_file is not None:  # tell the other workers, through the supervisor
            shared_policy_file.write_text(str(loaded.path), encoding="utf-8")
            os.kill(os.getppid(), signal.SIGHUP)
        return SafeJSONResponse({"status": "reloaded", "policy": loaded.info, "previous": previous.info})

    if proxy is not None:

        @app.post("/v1/chat/completions", dependencies=[Depends(require_json)])
        async def chat_completions(body: ChatRequest) -> Response:
            """Route a chat request and forward it to the chosen model's backend."""
            current = slot.current
            cost_weight = cost_weight_of(body.model, current.default_cost_weight)
            text = routing_text(body, settings.route_on)
            router.check_length([text])
            allowed = router.allowed(current, [name for name in current.models if name in backends])
            (decision,) = router.decide(current, await router.score_one(current, text, cost_weight), 1, allowed)
            others = ranking(decision.scores, allowed) if decision.scores else allowed
            order = [current.models[decision.index]]
            order += [current.models[i] for i in others if i != decision.index]

            def on_served(model: str, usage: Usage | None) -> None:
                router.record(current, text, decision, cost_weight, model, usage)

            return await proxy.forward(order, body, {"x-routerl-query-id": decision.query_id}, on_served)

    routes = {route.path for route in app.routes if hasattr(route, "path")}
    app.add_middleware(LeanRoutes, router=router)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(AuthMiddleware, api_token=settings.api_token, admin_token=settings.admin_token)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=routes)
    return app


async def _reload_on_signal(slot: PolicySlot, shared_policy_file: Path | None) -> None:
    """Reload after ``SIGHUP`` (the path in ``shared_policy_file`` if any, else the current file); log the outcome."""
    path = None
    if shared_policy_file is not None and shared_policy_file.is_file():
        path = shared_policy_file.read_text(encoding="utf-8")
    try:
        loaded = await slot.reload(path)
    except PolicyError as exc:
        logger.error("SIGHUP reload refused, the old policy keeps serving: %s", exc)
        return
    logger.info("SIGHUP: reloaded policy %s (version %s)", loaded.path, loaded.version)
