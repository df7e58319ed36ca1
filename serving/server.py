"""Run the router service on a socket: one process, or ``--workers N`` on one port (``serve.py``).

:func:`run` binds the address, builds the app (:func:`serving.app.create_app`) and serves it
with uvicorn until interrupted. Once the service accepts connections it prints one line on
stdout, ``routerl serving on http://HOST:PORT`` (the real port when port 0 picked a free one);
that line is all stdout carries, uvicorn's access log goes to stderr. With ``workers > 1`` the
supervisor (:mod:`serving.workers`) holds the port and runs one worker process per server, each
with its own decision log (``decisions.jsonl`` -> ``decisions-0.jsonl``, ...) and exploration
seed (``explore_seed + i``).

Why here and not in ``serve.py``: the command line only maps flags to :class:`ServeOptions`;
how the service starts is part of the service. The app (and so torch) is imported only where it
serves, never in the supervisor.
"""

from __future__ import annotations

import copy
import dataclasses
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.settings import Settings
from serving.workers import POLICY_FILE, StartupError, Supervisor, WorkerContext, worker_log_path

#: Exit status of a start-up problem (a bad flag, policy or address), as argparse's own errors.
EXIT_USER_ERROR = 2
#: How many connections may wait for a worker's ``accept``.
WORKER_BACKLOG = 2048


@dataclass(frozen=True)
class ServeOptions:
    """How to run the service.

    Attributes:
        policy: path of the exported policy (``--policy``).
        settings: the service flags and tokens.
        workers: server processes on the same port (``--workers``); 1 serves in this process.
        access_log: log every request on stderr (``--access-log``).
    """

    policy: str
    settings: Settings
    workers: int = 1
    access_log: bool = True


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """Bind a TCP socket to ``host:port`` (IPv4 or IPv6), inheritable by child processes.

    ``reuse_port``: join the other workers on the same port (``SO_REUSEPORT``).

    Raises:
        StartupError: the host cannot be resolved or the address cannot be bound.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT if reuse_port else socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _announce(sock: socket.socket) -> Callable[[], None]:
    """The call that prints ``routerl serving on URL`` for ``sock`` (its address read now)."""
    line = f"routerl serving on {url_of(sock)}"
    return lambda: print(line, flush=True)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging config with the access log on stderr: stdout carries only the address."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return config


def build_app(policy: str, settings: Settings, state_dir: Path | None = None) -> Any:
    """The service's ASGI app, reloading on ``SIGHUP``.

    Raises:
        StartupError: FastAPI is missing, the policy or ``--backends`` file is invalid, or the
            decision log cannot be opened; the message is the one line for stderr.
    """
    try:
        from serving.app import create_app
    except ImportError as exc:
        raise StartupError(f"the service needs FastAPI and uvicorn ({exc}); pip install 'routerl[serve]'") from None

    import torch

    from serving.policy import PolicyError

    torch.set_num_threads(1)  # one request = one small forward pass; threads only add latency
    reloaded = state_dir / POLICY_FILE if state_dir is not None else None
    if reloaded is not None and reloaded.is_file():  # a restarted worker follows a reload
        policy = reloaded.read_text(encoding="utf-8")
    try:
        return create_app(policy, settings, handle_sighup=True, state_dir=state_dir)
    except (PolicyError, ValueError) as exc:
        raise StartupError(str(exc)) from None
    except OSError as exc:  # the decision log cannot be opened
        raise StartupError(f"cannot open --decision-log {settings.decision_log}: {exc.strerror or exc}") from None


def serve(app: Any, sock: socket.socket, options: ServeOptions, on_started: Callable[[], None]) -> bool:
    """Serve ``app`` with uvicorn on the bound ``sock`` until interrupted; whether it started.

    uvicorn runs with :mod:`serving.connections`' protocol, which keeps the head deadline, the
    head size and the connection limits of ``options.settings`` and counts its refusals in the
    app's metrics.
    """
    import uvicorn

    from serving.connections import ConnectionLimits, fit_open_files, guarded_protocol

    settings = options.settings
    limits = ConnectionLimits(settings.header_timeout, settings.body_timeout, fit_open_files(settings.max_connections))
    protocol = guarded_protocol(limits, app.state.metrics.refused_connection)

    class _Server(uvicorn.Server):
        """uvicorn server that calls ``on_started`` once it accepts connections."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            """Start as usual, then call ``on_started``."""
            await super().startup(sockets=sockets)
            if self.started:
                on_started()

    config: Any = uvicorn.Config(
        app, http=protocol, log_config=_log_config(), log_level="info", access_log=options.access_log, lifespan="on"
    )
    server = _Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return bool(server.started)


def run(options: ServeOptions) -> int:
    """Run the service until interrupted; the exit status (1: uvicorn did not start).

    Raises:
        StartupError: the service (or a worker) cannot start; the message says why.
    """
    if options.workers > 1:
        return _supervise(options)
    app = build_app(options.policy, options.settings)
    sock = bind(options.settings.host, options.settings.port)
    return 0 if serve(app, sock, options, _announce(sock)) else 1


def _worker_settings(settings: Settings, index: int) -> Settings:
    """Worker ``index``'s settings: its own decision log, its own exploration seed."""
    if settings.decision_log is not None:
        settings = dataclasses.replace(settings, decision_log=worker_log_path(settings.decision_log, index))
    if settings.explore_seed is not None:  # independent draws per worker, reproducible as a whole
        settings = dataclasses.replace(settings, explore_seed=settings.explore_seed + index)
    return settings


def _run_worker(options: ServeOptions, worker: WorkerContext) -> None:
    """One process of ``--workers N``: its own decision log, the shared port (``SO_REUSEPORT``).

    A start-up problem is reported to the supervisor, which stops and names it.
    """
    settings = _worker_settings(options.settings, worker.index)
    try:
        app = build_app(options.policy, settings, worker.state_dir)
        sock = bind(settings.host, worker.port, reuse_port=True)
    except StartupError as exc:
        worker.report(str(exc))
        raise SystemExit(EXIT_USER_ERROR) from None
    sock.listen(WORKER_BACKLOG)
    serve(app, sock, options, lambda: worker.report(None))


def _supervise(options: ServeOptions) -> int:
    """Run ``options.workers`` processes on one port until interrupted (:mod:`serving.workers`)."""
    reserved = bind(options.settings.host, options.settings.port, reuse_port=True)  # holds the port; never listens
    supervisor = Supervisor(_run_worker, (options,), options.workers, reserved.getsockname()[1])
    try:
        supervisor.start()
        _announce(reserved)()
        supervisor.run()
    finally:
        supervisor.stop()
        reserved.close()
    return 0
