"""Serve an exported routerl policy over HTTP (CONTRACTS.md §3-§4).

    python serve.py --policy runs/demo/policy.pt [--host 127.0.0.1] [--port 8000]
        [--backends configs/backends.yaml] [--decision-log decisions.jsonl]
        [--explore-epsilon 0.05] [--fallback-model small-7b] [--log-queries full|hash|none]

Tokens come from the environment: ``ROUTERL_API_TOKEN`` (every route but ``/healthz``) and
``ROUTERL_ADMIN_TOKEN`` (``/admin/reload``). ``SIGHUP`` reloads the policy file.

Once it accepts connections it prints one line on stdout, ``routerl serving on
http://HOST:PORT`` (with the real port when ``--port 0`` picked a free one). A missing or
invalid policy, a bad flag or an address that cannot be bound exits with status 2 and one
message on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import copy
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from serving.settings import (
    DEFAULT_HOST,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUERY_CHARS,
    DEFAULT_PORT,
    Settings,
)

EXIT_USER_ERROR = 2


def _fail(message: str) -> NoReturn:
    """Print ``serve.py: error: message`` on stderr and exit with status 2."""
    print(f"serve.py: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``--policy`` is required)."""
    parser = argparse.ArgumentParser(prog="serve.py", description="Serve an exported routerl policy over HTTP.")
    parser.add_argument("--policy", required=True, help="path to an exported policy.pt")
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default: %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="TCP port; 0 picks a free one (default: %(default)s)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body in bytes; larger is answered 413 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-query-chars",
        type=int,
        default=DEFAULT_MAX_QUERY_CHARS,
        help="longest query in characters; longer is answered 413 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=DEFAULT_MAX_BATCH,
        help="most queries in one /route/batch; more is answered 413 (default: %(default)s)",
    )
    parser.add_argument("--backends", type=Path, help="YAML file of OpenAI-compatible backends per model (proxy)")
    parser.add_argument("--decision-log", type=Path, help="JSONL file that decisions and feedback are appended to")
    parser.add_argument(
        "--log-queries",
        choices=("full", "hash", "none"),
        default="full",
        help="what the decision log keeps of a query: text, sha256, nothing (default: %(default)s)",
    )
    parser.add_argument("--fallback-model", help="model to route to when the policy fails to score")
    parser.add_argument(
        "--explore-epsilon",
        type=float,
        default=0.0,
        help="probability of a uniformly random allowed model (default: %(default)s)",
    )
    parser.add_argument(
        "--route-on",
        choices=("last-user", "conversation"),
        default="last-user",
        help="text the proxy routes on (default: %(default)s)",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log every request on stderr (default: on; off saves CPU at high request rates)",
    )
    return parser.parse_args(argv)


def _bind(host: str, port: int) -> socket.socket:
    """Bind a TCP socket to ``host:port`` (IPv4 or IPv6); exit 2 if that is impossible."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        _fail(f"cannot resolve --host {host!r}: {exc.strerror}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    """``http://HOST:PORT`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _log_config() -> dict[str, Any]:
    """uvicorn's logging config with the access log on stderr: stdout carries only the address."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Run the service until interrupted; return the exit status."""
    args = parse_args(argv)
    try:
        settings = Settings(
            host=args.host,
            port=args.port,
            max_body_bytes=args.max_body_bytes,
            max_query_chars=args.max_query_chars,
            max_batch=args.max_batch,
            backends=args.backends,
            decision_log=args.decision_log,
            log_queries=args.log_queries,
            fallback_model=args.fallback_model,
            explore_epsilon=args.explore_epsilon,
            route_on=args.route_on,
            **Settings.tokens_from_env(),
        )
    except ValueError as exc:
        _fail(str(exc))

    try:
        import uvicorn

        from serving.app import create_app
    except ImportError as exc:
        _fail(f"the service needs FastAPI and uvicorn ({exc}); pip install 'routerl[serve]'")

    import torch

    from serving.policy import PolicyError

    torch.set_num_threads(1)  # one request = one small forward pass; threads only add latency
    try:
        app = create_app(args.policy, settings, handle_sighup=True)
    except (PolicyError, ValueError) as exc:
        _fail(str(exc))
    except OSError as exc:  # the decision log cannot be opened
        _fail(f"cannot open --decision-log {args.decision_log}: {exc.strerror or exc}")
    sock = _bind(settings.host, settings.port)

    class _Server(uvicorn.Server):
        """uvicorn server that announces its bound address once it accepts connections."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            """Start as usual, then print the address line on stdout."""
            await super().startup(sockets=sockets)
            if self.started:
                print(f"routerl serving on {_url(sock)}", flush=True)

    config: Any = uvicorn.Config(
        app, log_config=_log_config(), log_level="info", access_log=args.access_log, lifespan="on"
    )
    server = _Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
