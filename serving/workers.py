"""Several server processes on one port (``serve.py --workers N``): the supervisor's side.

Why: one Python process serves one core at most. With ``--workers N`` the supervisor starts N
worker processes (``spawn``: fresh interpreters, nothing forked from a parent holding torch);
each loads the policy, opens its own decision log and listens on the same address with
``SO_REUSEPORT``, so the kernel spreads connections over the workers evenly. The supervisor
itself never imports torch and answers no request; it

- holds the port: :mod:`serving.server` binds it (without listening) before the workers start, so
  ``--port 0`` gets one free port that every worker then joins;
- sets ``PROMETHEUS_MULTIPROC_DIR`` (a fresh folder, unless the environment names one) before
  the workers start, so that ``prometheus_client`` in every worker writes its counters there
  and ``GET /metrics`` on any worker adds up all of them;
- waits until every worker accepts connections (or reports a start-up error, which it
  re-raises), then returns so that the address can be announced;
- forwards ``SIGHUP`` to every worker (each reloads its policy), restarts a worker that dies,
  and stops them all on ``SIGTERM`` / ``SIGINT``.

A ``POST /admin/reload`` answered by one worker writes the new policy path into the shared
state folder and sends ``SIGHUP`` to the supervisor, which forwards it to every worker: they
all reload from that path (:func:`serving.app.create_app`'s ``shared_policy_file``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from serving.metrics import MULTIPROC_ENV

logger = logging.getLogger("routerl.serving")

#: The file in the state folder that holds the path of the policy every worker should serve.
POLICY_FILE = "policy-path"
#: The memory-mapped file of the budget, sessions and prices the workers share (:mod:`serving.shared_memory`).
SHARED_FILE = "shared-memory"
#: The file of the price table last sent to ``PUT /admin/prices`` (:mod:`serving.pricing`).
PRICES_FILE = "prices.json"
#: Seconds a worker may take to load the policy and start listening.
STARTUP_TIMEOUT_S = 300.0


def worker_log_path(path: Path, index: int) -> Path:
    """Worker ``index``'s decision log next to ``path``: ``decisions.jsonl`` -> ``decisions-0.jsonl``."""
    return path.with_name(f"{path.stem}-{index}{path.suffix}")


@dataclass(frozen=True)
class WorkerContext:
    """What a worker process needs besides the command line: its index, port and the shared state."""

    index: int
    port: int
    state_dir: Path
    ready: Any  # multiprocessing queue: (index, None) once listening, (index, message) on a start-up error

    def report(self, error: str | None) -> None:
        """Tell the supervisor that this worker listens (``error`` None) or failed to start."""
        self.ready.put((self.index, error))


class StartupError(RuntimeError):
    """The service or a worker cannot start (bad policy, unwritable decision log, address in use,
    ...); the message is the one line ``serve.py`` prints on stderr before exiting with status 2."""


class Supervisor:
    """Starts, watches and stops the worker processes; see the module docstring."""

    def __init__(self, target: Callable[..., None], target_args: tuple[Any, ...], workers: int, port: int) -> None:
        """Run ``target(*target_args, context)`` in ``workers`` processes (``target`` importable).

        ``port``: the port the caller has bound (with ``SO_REUSEPORT``, not listening) for the workers.
        """
        self.target = target
        self.target_args = target_args
        self.count = workers
        self.context = multiprocessing.get_context("spawn")
        self.ready = self.context.Queue()
        self.processes: list[BaseProcess] = []
        self.state_dir = Path(tempfile.mkdtemp(prefix="routerl-serve-"))
        self.port = port
        self._stopping = False
        self._hangups = 0

    def start(self) -> None:
        """Start every worker and wait until all listen.

        Raises:
            StartupError: a worker reported an error or exited before listening.
        """
        if not os.environ.get(MULTIPROC_ENV):
            metrics_dir = self.state_dir / "metrics"
            metrics_dir.mkdir()
            os.environ[MULTIPROC_ENV] = str(metrics_dir)
        else:  # prometheus_client's rule: the folder must not hold values of an earlier run
            for stale in Path(os.environ[MULTIPROC_ENV]).glob("*.db"):
                stale.unlink()
        self.processes = [self._spawn(index) for index in range(self.count)]
        waiting = set(range(self.count))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while waiting:
            try:
                index, error = self.ready.get(timeout=0.5)
            except queue.Empty:  # nothing yet: is everyone still alive, and in time?
                dead = [i for i in waiting if not self.processes[i].is_alive()]
                if dead:
                    status = self.processes[dead[0]].exitcode
                    raise StartupError(f"worker {dead[0]} exited with status {status}") from None
                if time.monotonic() > deadline:
                    raise StartupError(
                        f"workers {sorted(waiting)} did not start in {STARTUP_TIMEOUT_S:.0f} s"
                    ) from None
                continue
            if error is not None:
                raise StartupError(error)
            waiting.discard(index)

    def _spawn(self, index: int) -> BaseProcess:
        """Start worker ``index``."""
        worker = WorkerContext(index=index, port=self.port, state_dir=self.state_dir, ready=self.ready)
        process = self.context.Process(
            target=self.target, args=(*self.target_args, worker), name=f"routerl-worker-{index}"
        )
        process.start()
        return process

    def run(self) -> None:
        """Watch the workers until ``SIGTERM`` / ``SIGINT``: forward ``SIGHUP``, restart the dead."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hangup)
        while not self._stopping:
            time.sleep(0.2)
            if self._hangups:
                self._hangups = 0
                for process in self.processes:
                    if process.pid is not None and process.is_alive():
                        os.kill(process.pid, signal.SIGHUP)
            for index, process in enumerate(self.processes):
                if not self._stopping and not process.is_alive():
                    logger.error(
                        "worker %d (pid %s) exited with %s; restarting it", index, process.pid, process.exitcode
                    )
                    self.processes[index] = self._spawn(index)

    def _on_stop(self, signum: int, frame: object) -> None:
        """Signal handler: leave :meth:`run`."""
        self._stopping = True

    def _on_hangup(self, signum: int, frame: object) -> None:
        """Signal handler: forward ``SIGHUP`` from :meth:`run`'s loop."""
        self._hangups += 1

    def stop(self) -> None:
        """Stop every worker (``SIGTERM``: they finish the requests in flight) and remove the state folder."""
        self._stopping = True
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
        shutil.rmtree(self.state_dir, ignore_errors=True)
