"""The router service's app factory: ``create_app(policy, settings) -> FastAPI`` (docs/contracts.md §4).

Routes: ``POST /route``, ``POST /route/batch``, ``POST /feedback``, ``POST /v1/chat/completions``
(with ``--backends``), ``POST /admin/reload``, ``GET /healthz``, ``GET /metrics``, and the
dashboard under ``/ui`` (:mod:`serving.ui`). Every error
has the body ``{"error": {"type", "message"}}`` (see :mod:`serving.errors` for the statuses).

This module only wires the parts together: the bodies are in :mod:`serving.schemas`, the
routing decisions in :mod:`serving.router`, the middleware in :mod:`serving.middleware`,
:mod:`serving.auth` and :mod:`serving.metrics`, the proxy in :mod:`serving.proxy`. A new route
is declared here and does its work in one of those modules.

Decisions worth knowing:
- A body over ``--max-body-bytes`` is answered **413** ``payload_too_large``
  (:class:`serving.middleware.BodyLimitMiddleware`), like the other size limits
  (:mod:`serving.router`).
- Valid ``/route`` and ``/route/batch`` requests are answered by
  :class:`serving.middleware.LeanRoutes` without FastAPI's request handling (same models, same
  :class:`serving.router.Router`); every other request, and every invalid one, goes through
  FastAPI.
- ``POST /feedback`` without ``--decision-log`` is answered **409** ``no_decision_log``; a
  ``cost`` over ``--max-feedback-cost`` **422** (:meth:`serving.router.Router.feedback`).
- A body not received within ``--body-timeout`` is answered **408** ``request_timeout``
  (:class:`serving.middleware.BodyLimitMiddleware`); the request's head and the connections
  themselves are bounded in :mod:`serving.connections`, below the app.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from policies.cascade_artifact import load_cascade
from serving.auth import AuthMiddleware
from serving.backends import load_backends
from serving.caller import caller_of
from serving.capacity import CapacityController
from serving.cascade import CascadeProxy, is_cascade_model
from serving.dashboard import Dashboard
from serving.decisions import DecisionLog
from serving.errors import ApiError, SafeJSONResponse, install_error_handlers
from serving.metrics import Metrics, MetricsMiddleware
from serving.middleware import BodyLimitMiddleware, LeanRoutes, require_json, require_json_if_body
from serving.policy import (
    LoadedPolicy,
    NativePolicy,
    PolicyError,
    PolicySlot,
    ServingPolicy,
    check_serving_policy,
    load_engine_policy,
)
from serving.pricing import PriceDocument
from serving.proxy import ChatProxy, ChatRequest
from serving.router import Router
from serving.schemas import (
    BatchRequest,
    BatchResponse,
    FeedbackRequest,
    HealthResponse,
    ReloadRequest,
    ReloadResponse,
    RouteRequest,
    RouteResponse,
)
from serving.settings import Settings
from serving.spending import Spending
from serving.tenants import Tenant, load_tenants
from serving.ui import add_ui_routes
from serving.workers import POLICY_FILE

logger = logging.getLogger("routerl.serving")


@dataclass(frozen=True)
class Service:
    """The parts of one running service that its routes and its lifespan share.

    Attributes:
        settings: the service flags and tokens.
        slot: the current policy, swapped atomically by a reload.
        metrics: the service's Prometheus metrics.
        log: the decision log (``--decision-log``), or None.
        router: the routing logic of ``/route``, ``/route/batch`` and the proxy.
        proxy: the chat proxy (``--backends``), or None.
        cascade: the cascade the proxy runs for ``model: cascade`` (``--cascade``), or None.
        tenants: the tenants by token (``--tenants``), empty without.
        state_dir: the supervisor's state folder shared by the workers of ``serve.py --workers``
            (:mod:`serving.workers`), or None (a single process).
    """

    settings: Settings
    slot: PolicySlot
    metrics: Metrics
    log: DecisionLog | None
    router: Router
    proxy: ChatProxy | None
    cascade: CascadeProxy | None
    tenants: dict[str, Tenant]
    state_dir: Path | None

    @property
    def shared_policy_file(self) -> Path | None:
        """Where a worker writes a reloaded policy's path for the other workers (None: one process)."""
        return self.state_dir / POLICY_FILE if self.state_dir is not None else None

    @classmethod
    def build(cls, policy: str | Path | ServingPolicy, settings: Settings, state_dir: Path | None) -> Service:
        """Load and check the policy, read the backends, tenants and prices, open the decision log.

        Raises:
            PolicyError: the policy is invalid or cannot serve these settings.
            ValueError: the backends, tenants, prices file or capacity caps are invalid (one line).
        """
        backends = load_backends(settings.backends) if settings.backends else {}
        engine = settings.engine
        loaded = policy if isinstance(policy, LoadedPolicy | NativePolicy) else load_engine_policy(policy, engine)
        known = (*loaded.models, *(settings.explore_new_models or ()))
        tenants = load_tenants(settings.tenants, known) if settings.tenants else {}
        required = [*settings.required_models(backends), *(m for t in tenants.values() for m in t.models or ())]
        needs_costs = settings.budget is not None or any(t.budget is not None for t in tenants.values())
        check_serving_policy(loaded, required, needs_costs)
        metrics = Metrics()
        spending = Spending.build(settings, tenants.values(), known, loaded, state_dir)
        slot = PolicySlot(loaded, required, needs_costs, spending.pricing.apply)
        log = DecisionLog(settings.decision_log, settings.log_queries) if settings.decision_log else None
        capacity = CapacityController.build(settings, loaded, state_dir)
        router = Router(slot, settings, metrics, log, spending, capacity)
        if spending.budget is not None or capacity is not None:
            metrics.before_render = lambda: _observe(spending, capacity, metrics)
        proxy = ChatProxy(backends, metrics) if backends else None
        cascade = _cascade(settings, router, proxy)
        return cls(settings, slot, metrics, log, router, proxy, cascade, tenants, state_dir)

    async def replace_prices(self, body: PriceDocument) -> SafeJSONResponse:
        """Take a new price table (``PUT /admin/prices``); 422 names a model the service does not route to."""
        current = self.slot.current
        try:
            table = body.table(self.router.models(current), "prices")
        except ValueError as exc:
            raise ApiError(422, f"invalid request: {exc}") from None
        pricing = self.router.spending.pricing
        routing = pricing.replace(table, current)
        return SafeJSONResponse(
            {
                "status": "replaced",
                "cost_mode": current.cost_mode,
                "routing_follows": routing,
                "prices": {name: {"input": a, "output": b} for name, (a, b) in sorted(pricing.table.items())},
            }
        )

    async def reload(self, body: ReloadRequest | None) -> SafeJSONResponse:
        """Swap in the policy file ``body`` names (default: the current file again); 422 keeps the
        old one. A worker then tells the other workers, through the supervisor."""
        previous = self.slot.current
        try:
            loaded = await self.slot.reload(body.policy if body else None)
        except PolicyError as exc:
            raise ApiError(422, f"policy refused, the old one keeps serving: {exc}", "invalid_policy") from None
        logger.info("reloaded policy %s (version %s)", loaded.path, loaded.version)
        if self.shared_policy_file is not None:  # tell the other workers, through the supervisor
            self.shared_policy_file.write_text(str(loaded.path), encoding="utf-8")
            os.kill(os.getppid(), signal.SIGHUP)
        return SafeJSONResponse({"status": "reloaded", "policy": loaded.info, "previous": previous.info})

    async def reload_on_signal(self) -> None:
        """Reload after ``SIGHUP`` (the path in ``shared_policy_file`` if any, else the current file); log it."""
        path = None
        if self.shared_policy_file is not None and self.shared_policy_file.is_file():
            path = self.shared_policy_file.read_text(encoding="utf-8")
        try:
            loaded = await self.slot.reload(path)
        except PolicyError as exc:
            logger.error("SIGHUP reload refused, the old policy keeps serving: %s", exc)
            return
        logger.info("SIGHUP: reloaded policy %s (version %s)", loaded.path, loaded.version)

    def lifespan(self, handle_sighup: bool) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
        """The app's lifespan: reload on ``SIGHUP`` while serving (if ``handle_sighup``); close the
        proxy's connections and the decision log after."""

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            if handle_sighup:
                asyncio.get_running_loop().add_signal_handler(
                    signal.SIGHUP, lambda: asyncio.ensure_future(self.reload_on_signal())
                )
            yield
            if self.proxy is not None:
                await self.proxy.aclose()
            if self.log is not None:
                self.log.close()

        return lifespan


def _observe(spending: Spending, capacity: CapacityController | None, metrics: Metrics) -> None:
    """Set the gauges of the state kept in shared memory (the live budget, the capacity) before ``/metrics``."""
    spending.observe(metrics)
    if capacity is not None:
        capacity.observe(metrics)


def _cascade(settings: Settings, router: Router, proxy: ChatProxy | None) -> CascadeProxy | None:
    """The ``--cascade`` file loaded for the proxy, or None without one.

    Raises:
        PolicyError: the file is not a valid cascade.
        ValueError: there is no proxy (``--backends``), or one of its models has no backend.
    """
    if settings.cascade is None:
        return None
    if proxy is None:
        raise ValueError(f"--cascade {settings.cascade}: the cascade runs in the proxy, which needs --backends")
    return CascadeProxy(load_cascade(settings.cascade), router, proxy)


def _add_routes(app: FastAPI, service: Service) -> None:
    """Declare the service's routes on ``app`` (the proxy's only with ``--backends``)."""
    slot, router, proxy = service.slot, service.router, service.proxy

    @app.api_route("/healthz", methods=["GET", "HEAD"], response_model=HealthResponse)
    async def healthz() -> SafeJSONResponse:
        """Liveness and the identity of the loaded policy."""
        return SafeJSONResponse({"status": "ok", "policy": slot.current.info, "engine": slot.current.engine})

    @app.get("/metrics")
    async def metrics_route() -> Response:
        """Prometheus text exposition of the service's metrics."""
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/route", response_model=RouteResponse, dependencies=[Depends(require_json)])
    async def route(body: RouteRequest, request: Request) -> SafeJSONResponse:
        """Score one query with the policy and return the chosen model (see :class:`LeanRoutes`)."""
        return SafeJSONResponse(await router.route(body, caller_of(request.scope)))

    @app.post("/route/batch", response_model=BatchResponse, dependencies=[Depends(require_json)])
    async def route_batch(body: BatchRequest, request: Request) -> SafeJSONResponse:
        """Route many queries with one forward pass (see :class:`LeanRoutes`)."""
        return SafeJSONResponse(await router.route_batch(body, caller_of(request.scope)))

    @app.post("/feedback", dependencies=[Depends(require_json)])
    async def feedback(body: FeedbackRequest) -> SafeJSONResponse:
        """Append the observed quality (and cost) of an earlier decision to the log."""
        router.feedback(body)
        return SafeJSONResponse({"ok": True})

    @app.put("/admin/prices", dependencies=[Depends(require_json)])
    async def prices(body: PriceDocument) -> SafeJSONResponse:
        """Replace prices (models not named keep theirs); token-mode policies route at them at once."""
        return await service.replace_prices(body)

    @app.post("/admin/reload", response_model=ReloadResponse, dependencies=[Depends(require_json_if_body)])
    async def reload(body: ReloadRequest | None = None) -> SafeJSONResponse:
        """Swap in a new policy file (default: the current file again); 422 keeps the old one."""
        return await service.reload(body)

    if proxy is not None:

        cascade = service.cascade

        @app.post("/v1/chat/completions", dependencies=[Depends(require_json)])
        async def chat_completions(body: ChatRequest, request: Request) -> Response:
            """Route a chat request and forward it to the chosen model's backend (or run the cascade)."""
            if cascade is not None and is_cascade_model(body.model):
                return await cascade.answer(body, caller_of(request.scope))
            return await router.route_chat(body, proxy, caller_of(request.scope))


def create_app(
    policy: str | Path | ServingPolicy,
    settings: Settings | None = None,
    handle_sighup: bool = False,
    state_dir: Path | None = None,
) -> FastAPI:
    """Build the router service for ``policy`` (a path, or an already loaded policy).

    ``handle_sighup`` makes ``SIGHUP`` reload the policy file (main thread of ``serve.py`` only).
    ``state_dir`` (a worker of ``serve.py --workers``, :mod:`serving.workers`): the folder the
    workers share. A successful ``POST /admin/reload`` writes the new policy's path there and
    sends ``SIGHUP`` to the supervisor, which forwards it to every worker; ``SIGHUP`` reloads from
    the path written there, when there is one. The live budget, the sessions and the price table
    live in a memory-mapped file there (:mod:`serving.shared_memory`).

    Raises:
        PolicyError: the policy is missing, invalid, or lacks a model the settings name.
        ValueError: the ``--backends``, ``--tenants`` or ``--prices`` file is invalid.
    """
    settings = settings or Settings()
    service = Service.build(policy, settings, state_dir)
    app = FastAPI(
        title="routerl router",
        summary="Routes each query to an LLM with an exported routerl policy.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=SafeJSONResponse,
        lifespan=service.lifespan(handle_sighup),
        # the service has its own metrics (/metrics); FastAPI's OpenTelemetry hooks would cost
        # a provider lookup on every request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.slot = service.slot
    app.state.metrics = service.metrics
    install_error_handlers(app)
    _add_routes(app, service)
    add_ui_routes(app, Dashboard(service.slot, service.metrics, service.router, settings), service.router)
    routes = {route.path for route in app.routes if hasattr(route, "path")}
    app.add_middleware(LeanRoutes, router=service.router)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout)
    app.add_middleware(
        AuthMiddleware, api_token=settings.api_token, admin_token=settings.admin_token, tenants=service.tenants
    )
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, routes=routes)
    return app
