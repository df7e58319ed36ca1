"""Prometheus metrics of the service (``GET /metrics``), with ``prometheus_client``.

Each app has its own registry, so that several apps in one process never share counters:

- ``routerl_requests_total{route, status}``: every HTTP request, by route template and status
  (a path that matches no route is counted as ``route="unmatched"``, so that scanners cannot
  grow the label set; a request whose client left before it was answered as status 499,
  nginx's "client closed request", not as a server error).
- ``routerl_request_duration_seconds{route}``: latency histogram.
- ``routerl_decisions_total{model}``: models chosen (``/route``, ``/route/batch``, proxy).
- ``routerl_estimated_latency_seconds_total{model}`` and ``routerl_estimated_energy_wh_total{model}``:
  what the policy estimates the queries routed to each model take in seconds and Wh (a policy that
  estimates them, docs/contracts.md §2.13; a negative linear estimate counts 0).
- ``routerl_fallbacks_total{reason}``: ``scoring`` (the policy failed, ``--fallback-model``
  answered) and ``backend`` (a proxied backend failed and the next-best model was tried).
- ``routerl_connections_refused_total{reason}``: connections refused or closed before the app
  could answer (:mod:`serving.connections`): ``header_timeout``, ``headers_too_large``,
  ``too_many_connections``, ``body_timeout``, ``invalid_http``.
- ``routerl_tenant_decisions_total{tenant, model}``: decisions per tenant (``--tenants``).
- ``routerl_rule_conflicts_total``: queries whose matching rule override left no allowed model,
  so it was set aside (:mod:`serving.router`).
- ``routerl_explored_decisions_total``: decisions whose model is not the greedy choice (an
  exploration draw, ``--explore``), so that explored / decided is the share explored.
- ``routerl_feedback_total{model}`` and ``routerl_feedback_quality_total{model}``: ``POST /feedback``
  records and the sum of their quality, by the model the decision chose (``unknown`` when this
  process did not make the decision or has forgotten it: it remembers its latest
  :data:`REMEMBERED_DECISIONS`); their ratio is the mean quality per model.
- The live budget (``--budget``, tenants' budgets; :mod:`serving.budget`), per ``account`` (the
  tenant, ``""`` for ``--budget``): ``routerl_budget_usd`` (the target, USD per query),
  ``routerl_budget_cost_weight`` (the weight it routes at now), ``routerl_budget_mean_cost_usd``
  (mean cost of about the last 1,000 queries, predictions corrected by actual costs),
  ``routerl_budget_spend_usd`` (spent so far, the same way; a gauge, since a correction can
  lower it: ``deriv(routerl_budget_spend_usd[5m])`` is the spend rate in USD per second),
  ``routerl_budget_queries`` (queries routed under it) and
  ``routerl_budget_corrections_total{result}`` (actual costs received: ``applied``, or
  ``unmatched`` when the decision's prediction was not found).
- Capacity (``--capacity``, the exported policy's caps; :mod:`serving.capacity`), per capped
  ``model``: ``routerl_capacity_max_share`` (its cap), ``routerl_capacity_multiplier`` (the offset
  subtracted from its score now), ``routerl_capacity_share`` (its share of about the last
  1,000 decisions) and ``routerl_capacity_decisions`` (decisions counted, by every worker together).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Set by ``serve.py --workers``: where every worker process writes its metric values.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Status counted for a request whose client went away before it was answered (nginx's convention).
CLIENT_CLOSED_REQUEST = 499
#: Latency buckets in seconds: the interesting range of a router is 0.5 ms to a few seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
#: Decisions whose model a process remembers, to count feedback by model (about 100 bytes each).
REMEMBERED_DECISIONS = 100_000
#: The model a feedback is counted under when its decision is not remembered.
UNKNOWN_MODEL = "unknown"


class Metrics:
    """The service's counters and histogram in their own registry."""

    def __init__(self) -> None:
        """Create the metrics in a fresh registry."""
        self.registry = CollectorRegistry()
        self.requests = self._counter("routerl_requests", "HTTP requests by route and status.", "route", "status")
        self.latency = Histogram(
            "routerl_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decisions = self._counter("routerl_decisions", "Routing decisions by chosen model.", "model")
        self.fallbacks = self._counter(
            "routerl_fallbacks", "Fallbacks by reason (scoring, backend, cascade).", "reason"
        )
        self.cascade_calls = self._counter(
            "routerl_cascade_calls", "Calls the cascade made (--cascade), by model.", "model"
        )
        self.connections_refused = self._counter(
            "routerl_connections_refused",
            "Connections refused or closed before the app answered, by reason.",
            "reason",
        )
        self.tenant_decisions = self._counter(
            "routerl_tenant_decisions", "Routing decisions by tenant and chosen model.", "tenant", "model"
        )
        self.rule_conflicts = self._counter(
            "routerl_rule_conflicts", "Queries whose rule override left no allowed model (set aside)."
        )
        self.explored = self._counter(
            "routerl_explored_decisions", "Decisions whose model is not the greedy choice (exploration)."
        )
        self.feedback = self._counter("routerl_feedback", "Feedback records by the decision's model.", "model")
        self.feedback_quality = self._counter(
            "routerl_feedback_quality", "Sum of the quality of the feedback records, by the decision's model.", "model"
        )
        #: query_id -> model of this process's latest decisions (for feedback by model).
        self.decided_models: OrderedDict[str, str] = OrderedDict()
        self.budget_corrections = self._counter(
            "routerl_budget_corrections", "Actual costs given to the live budget, by result.", "result"
        )
        self.budget = self._gauge("routerl_budget_usd", "Live budget: target mean cost per query (USD).")
        self.budget_weight = self._gauge("routerl_budget_cost_weight", "Live budget: the cost weight routed at now.")
        self.budget_mean_cost = self._gauge(
            "routerl_budget_mean_cost_usd", "Live budget: mean cost per query of about the last 1,000 queries (USD)."
        )
        self.budget_spend = self._gauge("routerl_budget_spend_usd", "Live budget: USD spent so far (corrected).")
        self.budget_queries = self._gauge("routerl_budget_queries", "Live budget: queries routed under it.")
        self.capacity_max_share = self._gauge("routerl_capacity_max_share", "Capacity: the model's cap.", "model")
        self.capacity_multiplier = self._gauge(
            "routerl_capacity_multiplier", "Capacity: the multiplier subtracted from the model's score now.", "model"
        )
        self.capacity_share = self._gauge(
            "routerl_capacity_share", "Capacity: the model's share of about the last 1,000 decisions.", "model"
        )
        self.capacity_decisions = self._gauge(
            "routerl_capacity_decisions", "Capacity: decisions counted (every worker's).", "model"
        )
        # what the policy estimates each routed query costs beside USD (docs/contracts.md §2.13), by objective
        self.estimated = {
            "latency": self._counter(
                "routerl_estimated_latency_seconds", "Latency the policy estimates for the routed queries.", "model"
            ),
            "energy": self._counter(
                "routerl_estimated_energy_wh", "Energy (Wh) the policy estimates for the routed queries.", "model"
            ),
        }
        #: Called before each exposition: sets the gauges of state kept elsewhere (the budget's).
        self.before_render: Callable[[], None] | None = None
        self._request_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self._decision_children: dict[tuple[str, str], tuple[Counter, Counter | None]] = {}

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        """A counter with ``labels`` in this service's registry."""
        return Counter(name, documentation, list(labels), registry=self.registry)

    def _gauge(self, name: str, documentation: str, label: str = "account") -> Gauge:
        """A gauge by budget ``account`` (or capped ``model``); with several workers the most recent value
        of any of them (the state is shared, so each worker writes the same)."""
        return Gauge(name, documentation, [label], registry=self.registry, multiprocess_mode="mostrecent")

    def observe_capacity(self, snapshot: Iterable[Mapping[str, float | str]]) -> None:
        """Set the capacity gauges from :meth:`serving.capacity.CapacityController.snapshot`."""
        for cap in snapshot:
            model = str(cap["model"])
            self.capacity_max_share.labels(model).set(float(cap["max_share"]))
            self.capacity_multiplier.labels(model).set(float(cap["multiplier"]))
            self.capacity_share.labels(model).set(float(cap["share"]))
            self.capacity_decisions.labels(model).set(float(cap["decisions"]))

    def observe_budget(self, snapshot: Iterable[Mapping[str, float | str]]) -> None:
        """Set the live budget's gauges from :meth:`serving.budget.BudgetController.snapshot`."""
        for account in snapshot:
            name = str(account["account"])
            self.budget.labels(name).set(float(account["budget"]))
            self.budget_weight.labels(name).set(float(account["cost_weight"]))
            self.budget_mean_cost.labels(name).set(float(account["mean_cost"]))
            self.budget_spend.labels(name).set(float(account["spend"]))
            self.budget_queries.labels(name).set(float(account["queries"]))

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one request of ``route`` answered with ``status`` and time it."""
        children = self._request_children.get((route, status))
        if children is None:  # label lookups take a lock: done once per (route, status)
            children = (self.requests.labels(route, str(status)), self.latency.labels(route))
            self._request_children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def routed_objectives(self, names: Sequence[str], model: str, index: int, costs: Sequence[float]) -> None:
        """Count what the policy estimates the query routed to ``model`` (column ``index``) costs on each
        objective beside USD: ``costs`` holds J·K values, objective ``names[j]``'s from j·K."""
        models = len(costs) // len(names)
        for j, name in enumerate(names):
            counter = self.estimated.get(name)
            if counter is not None:
                counter.labels(model).inc(max(costs[j * models + index], 0.0))  # a linear estimate may dip below 0

    def decided(self, model: str, tenant: str = "") -> None:
        """Count one routing decision for ``model`` (and for ``tenant``'s, if it is one)."""
        children = self._decision_children.get((model, tenant))
        if children is None:  # label lookups take a lock: done once per (model, tenant)
            per_tenant = self.tenant_decisions.labels(tenant, model) if tenant else None
            children = self._decision_children[(model, tenant)] = (self.decisions.labels(model), per_tenant)
        children[0].inc()
        if children[1] is not None:
            children[1].inc()

    def remember_decision(self, query_id: str, model: str) -> None:
        """Remember which model ``query_id`` went to (the latest :data:`REMEMBERED_DECISIONS`)."""
        self.decided_models[query_id] = model
        if len(self.decided_models) > REMEMBERED_DECISIONS:
            self.decided_models.popitem(last=False)

    def fed_back(self, query_id: str, quality: float) -> None:
        """Count one feedback record and its quality under its decision's model (or ``unknown``)."""
        model = self.decided_models.get(query_id, UNKNOWN_MODEL)
        self.feedback.labels(model).inc()
        self.feedback_quality.labels(model).inc(quality)

    def refused_connection(self, reason: str) -> None:
        """Count one connection refused or closed for ``reason`` (:mod:`serving.connections`)."""
        self.connections_refused.labels(reason).inc()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type.

        In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set, as ``serve.py --workers`` does)
        every process's values are written to files in that folder; the exposition adds them up.
        """
        return generate_latest(self.collected()), CONTENT_TYPE_LATEST

    def collected(self) -> CollectorRegistry:
        """The registry that :meth:`render` (and the dashboard's ``GET /ui/data``) reads: this
        process's, or every worker's added up (multiprocess mode), after :attr:`before_render`."""
        if self.before_render is not None:
            self.before_render()
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return registry
        return self.registry


class MetricsMiddleware:
    """ASGI middleware: count every request and time it, by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Iterable[str]) -> None:
        """Wrap ``app``; ``routes`` are the paths that get their own label."""
        self.app = app
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request and record its status and duration."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "unmatched"
        status: int | None = None
        failed = True
        start = time.perf_counter()

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
            failed = False
        finally:
            if status is None:  # no answer: a bug (500), or the client left first (499)
                status = 500 if failed else CLIENT_CLOSED_REQUEST
            self.metrics.observe_request(route, status, time.perf_counter() - start)
