"""The service's settings: one frozen dataclass mirroring ``serve.py``'s flags and tokens."""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_QUERY_CHARS = 100_000
DEFAULT_MAX_BATCH = 256
#: USD: a feedback cost above this is refused (422); far above any single LLM call today.
DEFAULT_MAX_FEEDBACK_COST = 100.0
#: Seconds a client has to send a request's line and headers (from connecting, or from its first
#: byte after a previous answer); then 408 and the connection is closed.
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: Seconds a client has to send a request's body once its headers are in; then 408.
DEFAULT_BODY_TIMEOUT_S = 30.0
#: Open connections one server process holds; a connection beyond is answered 503 and closed.
DEFAULT_MAX_CONNECTIONS = 1000
#: η of the live budget's update on log w (``--budget-step``; :mod:`serving.budget`, BENCHMARKS.md).
DEFAULT_BUDGET_STEP = 0.1
#: η of the capacity multipliers' update, in scales of a model's margins (``--capacity-step``; :mod:`serving.capacity`).
DEFAULT_CAPACITY_STEP = 0.01
#: Seconds a session is remembered after its last turn (``--session-ttl``).
DEFAULT_SESSION_TTL_S = 3600.0

#: How much of a query the decision log keeps: the text, its sha256 hex, or nothing.
LogQueries = Literal["full", "hash", "none"]
#: How the service explores (``--explore``): always the best score, ε-greedy, or softmax.
ExploreRule = Literal["greedy", "epsilon", "softmax"]
#: Which text of a chat request the proxy routes on.
RouteOn = Literal["last-user", "conversation"]

#: ``--engine``: what computes the scores (docs/contracts.md §2.11): numpy over the portable twin, or TorchScript.
Engine = Literal["native", "torchscript"]

API_TOKEN_ENV = "ROUTERL_API_TOKEN"
ADMIN_TOKEN_ENV = "ROUTERL_ADMIN_TOKEN"


@dataclass(frozen=True)
class Settings:
    """Runtime settings of the router service.

    Attributes:
        host: interface to bind (``--host``); loopback by default.
        port: TCP port (``--port``); 0 picks a free one.
        max_body_bytes: largest accepted request body in bytes (``--max-body-bytes``); 413 above.
        max_query_chars: largest accepted query, in Unicode code points (``--max-query-chars``);
            413 above.
        max_batch: most queries in one ``POST /route/batch`` (``--max-batch``); 413 above.
        max_feedback_cost: largest ``cost`` a ``POST /feedback`` may report, in USD per query
            (``--max-feedback-cost``); 422 above.
        header_timeout: seconds to receive a request's line and headers (``--header-timeout``);
            a silent connection is closed, a partial request answered 408
            (:mod:`serving.connections`).
        body_timeout: seconds to receive a request's body once its headers are in
            (``--body-timeout``); 408 after.
        max_connections: open connections per server process (``--max-connections``); one more
            is answered 503 and closed at once, so that slow or idle clients cannot use up the
            process's open files.
        backends: YAML file of the proxy's backends (``--backends``); no proxy without it.
        cascade: an exported cascade (``--cascade``) that the proxy runs for ``model: cascade``
            (:mod:`serving.cascade`); needs ``backends`` for each of its models. None: no cascade.
        decision_log: JSONL file that decisions and feedback are appended to
            (``--decision-log``); none without it.
        log_queries: what the decision log keeps of a query (``--log-queries``).
        fallback_model: model to route to when scoring fails (``--fallback-model``).
        explore: the exploration rule (``--explore``, :class:`serving.decisions.Exploration`);
            None: ``epsilon`` when ``explore_epsilon`` > 0, else ``greedy`` (what
            ``--explore-epsilon`` alone always meant). :attr:`explore_rule` resolves it.
        explore_epsilon: probability of routing to a uniformly random allowed model
            (``--explore-epsilon``); only with the ``epsilon`` rule.
        explore_temperature: temperature of the ``softmax`` rule (``--explore-temperature``), in
            the policy's score units (utility for ``utility`` policies: quality − w·cost);
            required by that rule and refused with another, since no default fits every scale.
        explore_floor: least probability of each floored allowed model (``--explore-floor``), in
            [0, 1), on top of any rule; its count times this must stay below 1 (checked against
            the policy at start, :meth:`serving.decisions.Exploration.check_floor`).
        explore_floor_models: the models the floor applies to (``--explore-floor-models a,b``);
            None: every model (only the new models with ``explore_new_models``). Each must be a
            model of the policy, like ``--fallback-model``.
        explore_new_models: models added to the pool that the policy may not know yet
            (``--explore-new-models a,b``): each allowed one that the policy does not know gets
            exactly ``explore_floor`` of every request, one that it knows is floored
            (:class:`serving.decisions.Exploration`). Needs ``explore_floor`` > 0; with
            ``backends`` each must have a backend (:meth:`required_models`).
        explore_seed: seed of the exploration draws (``--explore-seed``), so a replayed traffic
            log explores the same way; ``None`` draws from the operating system's entropy.
            Worker ``i`` of ``--workers`` uses ``explore_seed + i``.
        route_on: the proxy routes on the last user message or the whole conversation
            (``--route-on``).
        budget: the live budget, USD per query (``--budget``): the cost weight is steered so that
            the mean cost stays at or under it (:mod:`serving.budget`); None: no budget.
        budget_step: η of the budget's update on log w (``--budget-step``).
        prices: the price table (``--prices``) applied to token-mode policies and used to price the
            proxy's token usage (:mod:`serving.pricing`); None: the policy's own.
        tenants: the tenants file (``--tenants``, :mod:`serving.tenants`); None: one API token.
        session_switch_cost: keep conversations on their model unless switching gains more than
            this, in score units (``--session-switch-cost``, :mod:`serving.sessions`); None: no sessions.
        session_ttl: seconds after its last turn that a session is forgotten (``--session-ttl``).
        capacity: the caps on each model's share of the decisions (``--capacity``, :mod:`serving.capacity`):
            ``MODEL=SHARE,...``, a YAML file of them, or ``none``; None: the exported policy's own.
        capacity_step: η of the capacity multipliers' update (``--capacity-step``).
        engine: what scores the queries (``--engine``): ``native`` (numpy over the portable twin
            ``policy.safetensors``, :mod:`policies.native`) or ``torchscript`` (``policy.pt`` itself).
        api_token: bearer token for every route but ``/healthz`` (``ROUTERL_API_TOKEN``).
        admin_token: bearer token for ``/admin/*`` (``ROUTERL_ADMIN_TOKEN``); admin routes are
            refused when it is unset.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
    max_batch: int = DEFAULT_MAX_BATCH
    max_feedback_cost: float = DEFAULT_MAX_FEEDBACK_COST
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    backends: Path | None = None
    cascade: Path | None = None
    decision_log: Path | None = None
    log_queries: LogQueries = "full"
    fallback_model: str | None = None
    explore: ExploreRule | None = None
    explore_epsilon: float = 0.0
    explore_temperature: float | None = None
    explore_floor: float = 0.0
    explore_floor_models: tuple[str, ...] | None = None
    explore_new_models: tuple[str, ...] | None = None
    explore_seed: int | None = None
    route_on: RouteOn = "last-user"
    budget: float | None = None
    budget_step: float = DEFAULT_BUDGET_STEP
    prices: Path | None = None
    tenants: Path | None = None
    session_switch_cost: float | None = None
    session_ttl: float = DEFAULT_SESSION_TTL_S
    capacity: str | None = None
    capacity_step: float = DEFAULT_CAPACITY_STEP
    engine: Engine = "native"
    api_token: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """Reject settings that cannot work, with a message naming the flag."""
        if self.engine not in get_args(Engine):
            raise ValueError(f"--engine must be one of {', '.join(get_args(Engine))}, got {self.engine!r}")
        if not self.host:
            raise ValueError("--host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        for flag, value in (
            ("--max-body-bytes", self.max_body_bytes),
            ("--max-query-chars", self.max_query_chars),
            ("--max-batch", self.max_batch),
            ("--max-connections", self.max_connections),
        ):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        for flag, number in (
            ("--max-feedback-cost", self.max_feedback_cost),
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
        ):
            if not (math.isfinite(number) and number > 0):
                raise ValueError(f"{flag} must be a finite number > 0, got {number}")
        self._check_exploration()
        self._check_spending()
        if self.fallback_model == "":
            raise ValueError("--fallback-model must not be empty")

    @property
    def explore_rule(self) -> ExploreRule:
        """``explore``, or the rule that ``--explore-epsilon`` alone implies."""
        if self.explore is not None:
            return self.explore
        return "epsilon" if self.explore_epsilon > 0.0 else "greedy"

    def _check_exploration(self) -> None:
        """Reject exploration flags out of range or meaningless for the rule."""
        if not (math.isfinite(self.explore_epsilon) and 0.0 <= self.explore_epsilon <= 1.0):
            raise ValueError(f"--explore-epsilon must be in [0, 1], got {self.explore_epsilon}")
        temperature = self.explore_temperature
        if temperature is not None and not (math.isfinite(temperature) and temperature > 0.0):
            raise ValueError(f"--explore-temperature must be a finite number > 0, got {temperature}")
        if not (math.isfinite(self.explore_floor) and 0.0 <= self.explore_floor < 1.0):
            raise ValueError(f"--explore-floor must be in [0, 1), got {self.explore_floor}")
        rule = self.explore_rule
        if self.explore_epsilon > 0.0 and rule != "epsilon":
            raise ValueError(f"--explore-epsilon applies to --explore epsilon only, not --explore {rule}")
        if rule == "epsilon" and self.explore_epsilon == 0.0:
            raise ValueError("--explore epsilon needs --explore-epsilon > 0")
        if rule == "softmax" and temperature is None:
            raise ValueError("--explore softmax needs --explore-temperature T > 0 (in the policy's score units)")
        if rule != "softmax" and temperature is not None:
            raise ValueError(f"--explore-temperature applies to --explore softmax only, not --explore {rule}")
        if self.explore_floor_models is not None:
            if self.explore_floor == 0.0:
                raise ValueError("--explore-floor-models needs --explore-floor > 0")
            if not self.explore_floor_models or "" in self.explore_floor_models:
                raise ValueError(f"--explore-floor-models has an empty name: {','.join(self.explore_floor_models)!r}")
        new = self.explore_new_models
        if new is not None:
            if self.explore_floor == 0.0:
                raise ValueError("--explore-new-models needs --explore-floor P > 0 (each new model's share)")
            if not new or "" in new:
                raise ValueError(f"--explore-new-models has an empty name: {','.join(new)!r}")
            twice = sorted({name for name in new if new.count(name) > 1})
            if twice:
                raise ValueError(f"--explore-new-models names {', '.join(map(repr, twice))} more than once")

    def _check_spending(self) -> None:
        """Reject a budget, step, switching cost, session lifetime or capacity step that cannot work."""
        for flag, value, low in (
            ("--budget", self.budget, 0.0),
            ("--budget-step", self.budget_step, 0.0),
            ("--session-ttl", self.session_ttl, 0.0),
            ("--capacity-step", self.capacity_step, 0.0),
        ):
            if value is not None and not (math.isfinite(value) and value > low):
                raise ValueError(f"{flag} must be a finite number > 0, got {value}")
        cost = self.session_switch_cost
        if cost is not None and not (math.isfinite(cost) and cost >= 0):
            raise ValueError(f"--session-switch-cost must be a finite number >= 0, got {cost}")

    def required_models(self, backends: Collection[str]) -> list[str]:
        """The models every served policy must know: those of ``backends`` (the ``--backends``
        file's names), ``--fallback-model`` and ``--explore-floor-models``, but not the new models
        (``--explore-new-models``), which need only a backend when there are backends.

        Raises:
            ValueError: ``backends`` is not empty and lacks a new model; one line naming the flags.
        """
        new = self.explore_new_models or ()
        if backends:
            missing = [name for name in new if name not in backends]
            if missing:
                raise ValueError(
                    f"--explore-new-models: no backend for {', '.join(map(repr, missing))} in --backends "
                    f"{self.backends}; its backends are {sorted(backends)}"
                )
        fallback = [self.fallback_model] if self.fallback_model else []
        return [*(name for name in backends if name not in new), *fallback, *(self.explore_floor_models or ())]

    @staticmethod
    def tokens_from_env() -> dict[str, str | None]:
        """``api_token`` and ``admin_token`` from the environment (unset or empty = None)."""
        return {
            "api_token": os.environ.get(API_TOKEN_ENV) or None,
            "admin_token": os.environ.get(ADMIN_TOKEN_ENV) or None,
        }
