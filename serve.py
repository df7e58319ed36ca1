"""Serve an exported routerl policy over HTTP (CONTRACTS.md §3-§4).

    python serve.py --policy runs/demo/policy.pt [--host 127.0.0.1] [--port 8000]
        [--backends configs/backends.yaml] [--decision-log decisions.jsonl]
        [--explore-epsilon 0.05 [--explore-seed 0]] [--fallback-model small-7b] [--log-queries full|hash|none]

Tokens come from the environment: ``ROUTERL_API_TOKEN`` (every route but ``/healthz``) and
``ROUTERL_ADMIN_TOKEN`` (``/admin/reload``). ``SIGHUP`` reloads the policy file.

``--workers N`` (N > 1) runs N server processes on the same port (:mod:`serving.workers`): each
appends to its own decision log (``decisions.jsonl`` -> ``decisions-0.jsonl``, ...), ``/metrics``
adds up every worker's counters (Prometheus multiprocess mode), and ``SIGHUP`` to this process or
``POST /admin/reload`` on any worker reloads the policy in every worker.

Once it accepts connections it prints one line on stdout, ``routerl serving on
http://HOST:PORT`` (with the real port when ``--port 0`` picked a free one). A missing or
invalid policy, a bad flag or an address that cannot be bound exits with status 2 and one
message on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import socket
import sys
from collections.abc import Callable, Sequence
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
from serving.workers import StartupError, Supervisor, WorkerContext, worker_log_path

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


def _bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """Bind a TCP socket to ``host:port`` (IPv4 or IPv6); exit 2 if that is impossible.

    ``reuse_port``: join the other workers on the same port (``SO_REUSEPORT``).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        _fail(f"cannot resolve --host {host!r}: {exc.strerror}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT if reuse_port else socket.SO_REUSEADDR, 1)
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


def _settings(args: argparse.Namespace) -> Settings:
    """The service settings from the command line and the environment; exit 2 if invalid."""
    if args.workers < 1:
        _fail(f"--workers must be >= 1, got {args.workers}")
    try:
        return Settings(
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
            explore_seed=args.explore_seed,
            route_on=args.route_on,
            **Settings.tokens_from_env(),
        )
    except ValueError as exc:
        _fail(str(exc))


def _build_app(args: argparse.Namespace, settings: Settings, shared_policy_file: Path | None = None) -> Any:
    """The service's ASGI app; a start-up problem raises :class:`StartupProblem` with its message."""
    try:
        from serving.app import create_app
    except ImportError as exc:
        raise StartupProblem(f"the service needs FastAPI and uvicorn ({exc}); pip install 'routerl[serve]'") from None

    import torch

    from serving.policy import PolicyError

    torch.set_num_threads(1)  # one request = one small forward pass; threads only add latency
    policy = args.policy
    if shared_policy_file is not None and shared_policy_file.is_file():  # a restarted worker follows a reload
        policy = shared_policy_file.read_text(encoding="utf-8")
    try:
        return create_app(policy, settings, handle_sighup=True, shared_policy_file=shared_policy_file)
    except (PolicyError, ValueError) as exc:
        raise StartupProblem(str(exc)) from None
    except OSError as exc:  # the decision log cannot be opened
        raise StartupProblem(f"cannot open --decision-log {settings.decision_log}: {exc.strerror or exc}") from None


class StartupProblem(Exception):
    """The service cannot start; the message is the one line for stderr (exit status 2)."""


def _serve(app: Any, sock: socket.socket, access_log: bool, on_started: Callable[[], None]) -> bool:
    """Serve ``app`` with uvicorn on the bound ``sock`` until interrupted; whether it started."""
    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn server that calls ``on_started`` once it accepts connections."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            """Start as usual, then call ``on_started``."""
            await super().startup(sockets=sockets)
            if self.started:
                on_started()

    config: Any = uvicorn.Config(app, log_config=_log_config(), log_level="info", access_log=access_log, lifespan="on")
    server = _Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return bool(server.started)


def _worker(args: argparse.Namespace, settings: Settings, worker: WorkerContext) -> None:
    """One process of ``--workers N``: its own decision log, the shared port (``SO_REUSEPORT``)."""
    if settings.decision_log is not None:
        settings = dataclasses.replace(settings, decision_log=worker_log_path(settings.decision_log, worker.index))
    if settings.explore_seed is not None:  # independent draws per worker, reproducible as a whole
        settings = dataclasses.replace(settings, explore_seed=settings.explore_seed + worker.index)
    try:
        app = _build_app(args, settings, worker.policy_file)
    except StartupProblem as exc:
        worker.report(str(exc))
        raise SystemExit(EXIT_USER_ERROR) from None
    sock = _bind(settings.host, worker.port, reuse_port=True)
    sock.listen(2048)
    _serve(app, sock, args.access_log, lambda: worker.report(None))


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``--workers`` processes on one port until interrupted (:mod:`serving.workers`)."""
    reserved = _bind(settings.host, settings.port, reuse_port=True)  # holds the port; never listens
    supervisor = Supervisor(_worker, (args, settings), args.workers, reserved.getsockname()[1])
    try:
        try:
            supervisor.start()
        except StartupError as exc:
            _fail(str(exc))
        print(f"routerl serving on {_url(reserved)}", flush=True)
        supervisor.run()
    finally:
        supervisor.stop()
        reserved.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the service until interrupted; return the exit status."""
    args = parse_args(argv)
    settings = _settings(args)
    if args.workers > 1:
        return _supervise(args, settings)
    try:
        app = _build_app(args, settings)
    except StartupProblem as exc:
        _fail(str(exc))
    sock = _bind(settings.host, settings.port)
    announce = _url(sock)
    return 0 if _serve(app, sock, args.access_log, lambda: print(f"routerl serving on {announce}", flush=True)) else 1


if __name__ == "__main__":
    sys.exit(main())
