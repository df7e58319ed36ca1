"""Serve an exported routerl policy over HTTP (docs/contracts.md §3-§4).

    python serve.py --policy runs/demo/policy.pt [--host 127.0.0.1] [--port 8000]
        [--backends configs/backends.yaml] [--decision-log decisions.jsonl]
        [--explore-epsilon 0.05 | --explore softmax --explore-temperature 0.05] [--explore-seed 0]
        [--explore-floor 0.01 [--explore-floor-models new-13b] [--explore-new-models brand-new-9b]]
        [--fallback-model small-7b] [--log-queries full|hash|none]
        [--budget 0.0004 [--budget-step 0.1]] [--prices prices.yaml] [--tenants tenants.yaml]
        [--session-switch-cost 0.05 [--session-ttl 3600]] [--capacity large-70b=0.2 [--capacity-step 0.01]]
        [--max-feedback-cost 100] [--header-timeout 10] [--body-timeout 30] [--max-connections 1000]

Tokens come from the environment: ``ROUTERL_API_TOKEN`` (every route but ``/healthz``) and
``ROUTERL_ADMIN_TOKEN`` (``/admin/reload``, ``/admin/prices``); ``--tenants`` adds a token per
tenant. ``SIGHUP`` reloads the policy file.

``--workers N`` (N > 1) runs N server processes on the same port (:mod:`serving.workers`): each
appends to its own decision log (``decisions.jsonl`` -> ``decisions-0.jsonl``, ...), ``/metrics``
adds up every worker's counters (Prometheus multiprocess mode), and ``SIGHUP`` to this process or
``POST /admin/reload`` on any worker reloads the policy in every worker.

Once it accepts connections it prints one line on stdout, ``routerl serving on
http://HOST:PORT`` (with the real port when ``--port 0`` picked a free one). A missing or
invalid policy, a bad flag or an address that cannot be bound exits with status 2 and one
message on stderr, without a traceback.

This file only maps the flags to :class:`serving.server.ServeOptions`; binding, uvicorn and the
workers are :mod:`serving.server`'s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

from serving.server import EXIT_USER_ERROR, ServeOptions, StartupError, run
from serving.settings import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_BUDGET_STEP,
    DEFAULT_CAPACITY_STEP,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_FEEDBACK_COST,
    DEFAULT_MAX_QUERY_CHARS,
    DEFAULT_PORT,
    DEFAULT_SESSION_TTL_S,
    Settings,
)


def _fail(message: str) -> NoReturn:
    """Print ``serve.py: error: message`` on stderr and exit with status 2."""
    print(f"serve.py: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


#: The limits' flags: (flag, type, default, metavar, what a larger value or a slower client gets).
_LIMITS: tuple[tuple[str, type, float, str, str], ...] = (
    ("--max-body-bytes", int, DEFAULT_MAX_BODY_BYTES, "N", "largest request body in bytes; larger is answered 413"),
    ("--max-query-chars", int, DEFAULT_MAX_QUERY_CHARS, "N", "longest query in characters; longer is answered 413"),
    ("--max-batch", int, DEFAULT_MAX_BATCH, "N", "most queries in one /route/batch; more is answered 413"),
    ("--max-feedback-cost", float, DEFAULT_MAX_FEEDBACK_COST, "USD", "largest cost /feedback accepts; more is 422"),
    ("--header-timeout", float, DEFAULT_HEADER_TIMEOUT_S, "SECONDS", "time to send a request's headers; then 408"),
    ("--body-timeout", float, DEFAULT_BODY_TIMEOUT_S, "SECONDS", "time to send a body after its headers; then 408"),
    ("--max-connections", int, DEFAULT_MAX_CONNECTIONS, "N", "open connections per process; one more is 503"),
)


def _add_limits(parser: argparse.ArgumentParser) -> None:
    """Add the flags of the service's size, time and connection limits (docs/contracts.md §4.1, §4.9)."""
    for flag, kind, default, metavar, meaning in _LIMITS:
        parser.add_argument(flag, type=kind, default=default, metavar=metavar, help=f"{meaning} (default: %(default)s)")


def _model_names(text: str) -> tuple[str, ...]:
    """``a,b`` -> ``("a", "b")``; empty names are kept for :class:`Settings` to refuse in one line."""
    return tuple(name.strip() for name in text.split(","))


def _add_exploration(parser: argparse.ArgumentParser) -> None:
    """Add the exploration flags (docs/contracts.md §4.1; :class:`serving.decisions.Exploration`)."""
    parser.add_argument(
        "--explore",
        choices=("greedy", "epsilon", "softmax"),
        help="exploration rule (default: epsilon with --explore-epsilon > 0, else greedy)",
    )
    parser.add_argument(
        "--explore-epsilon",
        type=float,
        default=0.0,
        help="epsilon rule: probability of a uniformly random allowed model (default: %(default)s)",
    )
    parser.add_argument(
        "--explore-temperature",
        type=float,
        metavar="T",
        help="softmax rule (required there): p(k) proportional to exp(score_k / T), T in the policy's score units",
    )
    parser.add_argument(
        "--explore-floor",
        type=float,
        default=0.0,
        metavar="P",
        help="least probability of every (floored) allowed model, on top of the rule (default: %(default)s)",
    )
    parser.add_argument(
        "--explore-floor-models",
        type=_model_names,
        metavar="A,B",
        help="the models that --explore-floor applies to (default: every model; only the new ones with "
        "--explore-new-models)",
    )
    parser.add_argument(
        "--explore-new-models",
        type=_model_names,
        metavar="A,B",
        help="models added to the pool that the policy may not know yet: each gets exactly --explore-floor of the "
        "requests that allow it (a floored model once a policy knows it); with --backends each needs a backend",
    )


def _add_spending(parser: argparse.ArgumentParser) -> None:
    """Add the flags of the live budget, prices, tenants, sessions and capacity (docs/contracts.md §4.10)."""
    parser.add_argument(
        "--budget",
        type=float,
        metavar="USD",
        help="live budget: mean cost per query to hold; the cost weight is steered online (default: none)",
    )
    parser.add_argument(
        "--budget-step",
        type=float,
        default=DEFAULT_BUDGET_STEP,
        metavar="ETA",
        help="step of the budget's update of log(weight) per query, relative to the budget (default: %(default)s)",
    )
    parser.add_argument(
        "--prices",
        type=Path,
        metavar="FILE",
        help="price table (YAML, USD per 1M tokens): token-mode policies route at these prices; also prices the "
        "proxy's token usage (default: the policy's own)",
    )
    parser.add_argument("--tenants", type=Path, metavar="FILE", help="tenants file: tokens, models, weights, budgets")
    parser.add_argument(
        "--session-switch-cost",
        type=float,
        metavar="S",
        help="keep a conversation (x-routerl-session header, or the proxy's user field) on its model unless "
        "switching gains more than S in score units (default: no sessions)",
    )
    parser.add_argument(
        "--session-ttl",
        type=float,
        default=DEFAULT_SESSION_TTL_S,
        metavar="SECONDS",
        help="forget a session this long after its last turn (default: %(default)s)",
    )
    parser.add_argument(
        "--capacity",
        metavar="MODEL=SHARE,...|FILE|none",
        help="cap each model's share of the decisions (a YAML FILE {model: share} or MODEL=SHARE pairs), held live "
        "by a multiplier per model; replaces the policy's own caps; none: no caps (default: the policy's capacity)",
    )
    parser.add_argument(
        "--capacity-step",
        type=float,
        default=DEFAULT_CAPACITY_STEP,
        metavar="ETA",
        help="step of a capacity multiplier per decision, in scales of its model's margins (default: %(default)s)",
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``--policy`` is required)."""
    parser = argparse.ArgumentParser(prog="serve.py", description="Serve an exported routerl policy over HTTP.")
    parser.add_argument("--policy", required=True, help="path to an exported policy.pt (or its policy.safetensors)")
    parser.add_argument(
        "--engine",
        choices=("native", "torchscript"),
        default="native",
        help="what scores queries: numpy over the portable twin policy.safetensors, or the TorchScript policy.pt "
        "(default: %(default)s)",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default: %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="TCP port; 0 picks a free one (default: %(default)s)",
    )
    _add_limits(parser)
    parser.add_argument("--backends", type=Path, help="YAML file of OpenAI-compatible backends per model (proxy)")
    parser.add_argument(
        "--cascade", type=Path, metavar="FILE",
        help="an exported cascade (python -m training.cascade) the proxy runs for model 'cascade' (needs --backends)",
    )
    parser.add_argument("--decision-log", type=Path, help="JSONL file that decisions and feedback are appended to")
    parser.add_argument(
        "--log-queries",
        choices=("full", "hash", "none"),
        default="full",
        help="what the decision log keeps of a query: text, sha256, nothing (default: %(default)s)",
    )
    parser.add_argument("--fallback-model", help="model to route to when the policy fails to score")
    _add_exploration(parser)
    _add_spending(parser)
    parser.add_argument(
        "--explore-seed",
        type=int,
        help="seed of the exploration draws, for reproducible experiments (worker i adds i; default: random)",
    )
    parser.add_argument(
        "--route-on",
        choices=("last-user", "conversation"),
        default="last-user",
        help="text the proxy routes on (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes on the same port; each writes its own decision log, metrics add up (default: 1)",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log every request on stderr (default: on; off saves CPU at high request rates)",
    )
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> Settings:
    """The service settings from the command line and the environment; exit 2 if invalid.

    Every :class:`Settings` field but the tokens is the flag of the same name.
    """
    if args.workers < 1:
        _fail(f"--workers must be >= 1, got {args.workers}")
    flags = vars(args)
    values: dict[str, Any] = {field.name: flags[field.name] for field in fields(Settings) if field.name in flags}
    values.update(Settings.tokens_from_env())
    try:
        return Settings(**values)
    except ValueError as exc:
        _fail(str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the service until interrupted; return the exit status."""
    args = parse_args(argv)
    options = ServeOptions(args.policy, _settings(args), args.workers, args.access_log)
    try:
        return run(options)
    except StartupError as exc:
        _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
