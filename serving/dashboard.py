"""The dashboard's numbers: the one JSON document of ``GET /ui/data`` (docs/contracts.md §4.11).

Every count comes from the registry that ``GET /metrics`` exposes (:meth:`serving.metrics.Metrics.collected`:
this process's metrics, or every worker's added up under ``serve.py --workers``), so the page and
Prometheus agree by construction. Rates are not kept here: the page divides the difference of two
polls' counts by the difference of their ``time``.

- ``traffic``: requests by route and status, errors (5xx), client errors (4xx), decisions by model,
  fallbacks by reason, refused connections, and the latency quantiles of the routing routes
  (:data:`ROUTING_ROUTES`) estimated from the histogram's buckets as Prometheus'
  ``histogram_quantile`` does (:func:`histogram_quantile`).
- ``quality``: feedback records and mean quality by the decision's model, explored decisions and
  their share of all decisions.
- ``spend``: each live budget account (target, cost weight routed at now, mean cost, spend,
  queries) and the policy's default cost weight.
- ``policy``: the live policy's identity and its metadata's summary (agent, data fingerprint,
  held-out metrics, what it was trained on), and the promotion gate's history when the policy is
  a follower's (``events.jsonl`` beside it, docs/contracts.md §6).
- ``recent``: this process's latest decisions (:mod:`serving.recent`).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from serving.metrics import Metrics
from serving.policy import PolicySlot, ServingPolicy
from serving.router import Router
from serving.settings import Settings

#: The routes whose latency the dashboard shows: the ones that route.
ROUTING_ROUTES = ("/route", "/route/batch", "/v1/chat/completions")
#: The latest promotion-gate events listed (the file keeps them all).
GATE_EVENTS = 50
#: The follower's events file beside the policy it installs (docs/contracts.md §6).
EVENTS_FILE = "events.jsonl"
#: How much of the end of the events file is read for the latest events (an event is ~400 bytes).
EVENTS_TAIL_BYTES = 256 * 1024

Samples = dict[str, list[tuple[dict[str, str], float]]]


def samples_of(registry: CollectorRegistry) -> Samples:
    """Every sample of ``registry`` by sample name (``routerl_decisions_total``, ...): (labels, value)."""
    found: Samples = defaultdict(list)
    for family in registry.collect():
        for sample in family.samples:
            found[sample.name].append((sample.labels, sample.value))
    return found


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """Sample ``name``'s values added up by one label (``{model: count}``)."""
    totals: dict[str, float] = defaultdict(float)
    for labels, value in samples.get(name, []):
        totals[labels.get(label, "")] += value
    return dict(sorted(totals.items()))


def histogram_quantile(buckets: Iterable[tuple[float, float]], quantile: float) -> float | None:
    """The ``quantile`` of a histogram from its cumulative buckets ``(upper bound, count <= bound)``.

    Prometheus' ``histogram_quantile``: find the bucket where the cumulative count reaches
    ``quantile × total`` and interpolate linearly inside it (from 0 for the first bucket); a rank
    in the ``+Inf`` bucket answers the largest finite bound. None without observations.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = quantile * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def _latency(samples: Samples) -> dict[str, Any]:
    """p50 and p99 (seconds) and the count of the routing routes' requests, from the histogram."""
    buckets: dict[float, float] = defaultdict(float)
    for labels, value in samples.get("routerl_request_duration_seconds_bucket", []):
        if labels.get("route") in ROUTING_ROUTES:
            buckets[float(labels["le"])] += value
    pairs = sorted(buckets.items())
    count = max(buckets.values(), default=0.0)
    return {
        "routes": list(ROUTING_ROUTES),
        "count": count,
        # cumulative [upper bound in seconds (null: +Inf), count]: the page's latency between two polls
        "buckets": [[None if math.isinf(bound) else bound, n] for bound, n in pairs],
        "p50_seconds": histogram_quantile(pairs, 0.5),
        "p99_seconds": histogram_quantile(pairs, 0.99),
    }


def _traffic(samples: Samples) -> dict[str, Any]:
    """Requests by route and status, errors, decisions, fallbacks, refused connections, latency."""
    requests: dict[str, dict[str, float]] = defaultdict(dict)
    for labels, value in samples.get("routerl_requests_total", []):
        requests[labels["route"]][labels["status"]] = value
    statuses = [(int(status), count) for per_route in requests.values() for status, count in per_route.items()]
    decisions = by_label(samples, "routerl_decisions_total", "model")
    return {
        "requests": dict(sorted(requests.items())),
        "requests_total": sum(count for _, count in statuses),
        "server_errors": sum(count for status, count in statuses if status >= 500),
        "client_errors": sum(count for status, count in statuses if 400 <= status < 500),
        "decisions": decisions,
        "decisions_total": sum(decisions.values()),
        "fallbacks": by_label(samples, "routerl_fallbacks_total", "reason"),
        "connections_refused": by_label(samples, "routerl_connections_refused_total", "reason"),
        "rule_conflicts": sum(value for _, value in samples.get("routerl_rule_conflicts_total", [])),
        "latency": _latency(samples),
    }


def _quality(samples: Samples, decisions_total: float) -> dict[str, Any]:
    """Feedback and mean quality by model; explored decisions and their share."""
    counts = by_label(samples, "routerl_feedback_total", "model")
    sums = by_label(samples, "routerl_feedback_quality_total", "model")
    explored = sum(value for _, value in samples.get("routerl_explored_decisions_total", []))
    return {
        "feedback": {
            model: {"count": count, "mean_quality": sums.get(model, 0.0) / count if count else None}
            for model, count in counts.items()
        },
        "feedback_total": sum(counts.values()),
        "explored_decisions": explored,
        "explored_share": explored / decisions_total if decisions_total else None,
    }


def _spend(samples: Samples, policy: ServingPolicy) -> dict[str, Any]:
    """The live budget's accounts (``--budget``, tenants' budgets) and the policy's default weight."""
    keys = {
        "budget": "routerl_budget_usd",
        "cost_weight": "routerl_budget_cost_weight",
        "mean_cost": "routerl_budget_mean_cost_usd",
        "spend": "routerl_budget_spend_usd",
        "queries": "routerl_budget_queries",
    }
    accounts: dict[str, dict[str, Any]] = defaultdict(dict)
    for key, name in keys.items():
        for account, value in by_label(samples, name, "account").items():
            accounts[account][key] = value
    return {
        "accounts": [{"account": account, **values} for account, values in sorted(accounts.items())],
        "default_cost_weight": policy.default_cost_weight,
        "cost_mode": policy.cost_mode,
    }


def gate_events(policy_path: Path, limit: int = GATE_EVENTS) -> list[dict[str, Any]] | None:
    """The latest ``limit`` events of the follower whose folder holds the policy (None: not a
    follower's policy). The file is read again only when it changed (each poll of the page asks)."""
    events_file = policy_path.parent / EVENTS_FILE
    try:
        stat = events_file.stat()
    except OSError:
        return None
    return _read_events(str(events_file), stat.st_mtime_ns, stat.st_size, limit)


@lru_cache(maxsize=4)
def _read_events(path: str, mtime_ns: int, size: int, limit: int) -> list[dict[str, Any]]:
    """The events of :func:`gate_events` from the file's last :data:`EVENTS_TAIL_BYTES` (it grows for the
    follower's life); ``mtime_ns`` and ``size`` key the cache. Lines that are not JSON objects (a write
    in progress, a line cut by the tail) are left out."""
    with open(path, "rb") as file:
        file.seek(max(0, size - EVENTS_TAIL_BYTES))
        tail = file.read().decode("utf-8", errors="replace")
    events = []
    for line in tail.splitlines()[-limit - 1 :]:  # one more: the last may be a write in progress
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events[-limit:]


def _policy(policy: ServingPolicy) -> dict[str, Any]:
    """The live policy's identity and summary (its metadata, docs/contracts.md §2.5)."""
    meta = policy.metadata
    return {
        **policy.info,
        "path": str(policy.path),
        "engine": policy.engine,
        "models": list(policy.models),
        "agent": meta.get("agent"),
        "data_fingerprint": meta.get("data_fingerprint"),
        "created_at": meta.get("created_at"),
        "score_kind": meta.get("score_kind"),
        "cost_weight_range": meta.get("cost_weight_range"),
        "metrics": meta.get("metrics"),
        "training_data": meta.get("training_data"),
        "rules": len(meta.get("rules") or []),
        "gate_events": gate_events(Path(policy.path)),
    }


class Dashboard:
    """Builds the document of ``GET /ui/data`` from the service's parts."""

    def __init__(self, slot: PolicySlot, metrics: Metrics, router: Router, settings: Settings) -> None:
        """Read counts from ``metrics``, the policy from ``slot``, the latest decisions from ``router``."""
        self.slot = slot
        self.metrics = metrics
        self.router = router
        self.settings = settings

    def document(self) -> dict[str, Any]:
        """The dashboard's numbers now (module docstring)."""
        samples = samples_of(self.metrics.collected())
        policy = self.slot.current
        traffic = _traffic(samples)
        return {
            "time": time.time(),
            "service": {
                "engine": policy.engine,
                "log_queries": self.settings.log_queries,
                "decision_log": self.settings.decision_log is not None,
                "budget": self.settings.budget,
                "explore": self.router.exploration(policy).rule,
            },
            "traffic": traffic,
            "quality": _quality(samples, traffic["decisions_total"]),
            "spend": _spend(samples, policy),
            "policy": _policy(policy),
            "recent": self.router.recent.to_json(),
        }
