"""Connection limits of the service: head deadline and size, open connections, open files.

Why: uvicorn reads a request's line and headers without a deadline and accepts every connection
it is offered. Measured before this module (issue 15): silent connections, partial headers,
chunked bodies without an end and bodies shorter than their ``Content-Length`` were all held for
as long as the client wished, and 1,100 of them under a 1,024 open-file limit made ``/healthz``
fail. :func:`guarded_protocol` makes uvicorn's httptools protocol keep these limits:

- **Head deadline** (``--header-timeout``): a connection has that long from its start to send a
  request's line and headers, and so has each later request from its first byte (between
  requests uvicorn's 5 s keep-alive timeout closes an idle connection). A connection that sent
  nothing is closed; one that sent part of a head is answered 408 ``request_timeout``.
- **Head size** (:data:`MAX_HEAD_BYTES`): a longer request line and headers are answered 431
  ``headers_too_large`` (httptools itself buffers a header of any size).
- **Malformed HTTP**: what httptools cannot parse (a bad method, conflicting ``Content-Length``
  headers, a bad chunk size) is answered 400 ``invalid_http`` with the usual body, where
  uvicorn answers in plain text.
- **Open connections** (``--max-connections``): a connection beyond the limit is answered 503
  ``service_unavailable`` and closed at once, so that it costs an open file only for a moment.
  :func:`fit_open_files` raises the process's soft open-file limit so that the connections fit
  (each with a backend connection when proxying), or lowers the limit with a warning when the
  hard limit is too low.
- **Body deadline** (``--body-timeout``): from the end of the headers, the body has that long.
  Reading it is the app's first step (:class:`serving.middleware.BodyLimitMiddleware`), so the
  app answers the 408 itself, counted with its other answers; this module wakes the app's read
  at the deadline, and closes a connection whose body is still unfinished when the app does not
  answer in time, or answered before the body was in (a request refused unread).

Every refusal has the usual error body and ``connection: close``, is logged as one line and
counted in ``routerl_connections_refused_total{reason}``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.errors import error_response

logger = logging.getLogger("routerl.serving")

#: Longest request line and headers together, in bytes (uvicorn's h11 default is 16 KiB).
MAX_HEAD_BYTES = 64 * 1024
#: Sweeps that wake the app's read of a late body before its connection is closed unanswered.
MAX_WAKES = 3
#: Open files a server process keeps for itself besides its connections (libraries, policy, logs).
RESERVED_FILES = 128
#: Open files per client connection: its own, and a backend's when the proxy forwards it.
FILES_PER_CONNECTION = 2

#: Called with a refusal's reason (``header_timeout``, ``headers_too_large``,
#: ``too_many_connections``, ``body_timeout``, ``invalid_http``) each time a connection is refused
#: or closed.
OnRefused = Callable[[str], None]


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits one server process keeps (see the module docstring).

    Attributes:
        header_timeout: seconds to receive a request's line and headers.
        body_timeout: seconds to receive a request's body once its headers are in.
        max_connections: open connections; one more is answered 503.
        max_head_bytes: longest request line and headers; longer is answered 431.
    """

    header_timeout: float
    body_timeout: float
    max_connections: int
    max_head_bytes: int = MAX_HEAD_BYTES


def raw_error(status: int, message: str, error_type: str | None = None) -> bytes:
    """A whole HTTP/1.1 answer with the usual error body and ``connection: close``, as bytes.

    For answers given before (or instead of) the app: there is no ASGI request to answer them.
    """
    body = bytes(error_response(status, message, error_type).body)
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Guard:
    """What every connection of one server shares: the limits, the refusal counter, and one timer
    that enforces every connection's deadline (see :class:`_GuardedProtocol`).

    Why one sweep instead of a timer per connection: arming and cancelling a timer costs about
    3 µs on uvloop, twice per request; a deadline kept as a number costs a clock read, and the
    sweep visits each open connection once per :attr:`interval` (:func:`sweep_interval`).
    """

    def __init__(self, limits: ConnectionLimits, on_refused: OnRefused) -> None:
        """Keep ``limits``; count refusals with ``on_refused``; sweep while there are connections."""
        self.limits = limits
        self.on_refused = on_refused
        self.interval = sweep_interval(limits)
        self._handle: asyncio.TimerHandle | None = None

    def ensure_sweeping(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        """Schedule the next sweep of ``connections`` unless one is scheduled."""
        if self._handle is None:
            self._handle = loop.call_later(self.interval, self._sweep, loop, connections)

    def _sweep(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        """Call ``deadline_passed`` on each connection past its deadline; go on while any is open."""
        self._handle = None
        now = loop.time()
        for connection in list(connections):
            if isinstance(connection, _GuardedProtocol) and connection.expired(now):
                connection.deadline_passed(now)
        if connections:
            self.ensure_sweeping(loop, connections)


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines and limits of :class:`ConnectionLimits`.

    Whenever the connection waits on the client, a deadline is set (``_expires_at``, enforced
    by the :class:`_Guard`): from the start and from a request's first byte until its headers
    are in (``--header-timeout``), then until its body is in (``--body-timeout``); between
    requests uvicorn's keep-alive timeout closes an idle connection. A body past its deadline
    while the app reads it: the app's read is woken at each sweep (``BodyLimitMiddleware`` reads
    the clock and answers 408 itself, counted like any answer; its deadline starts when the app
    starts, a moment after this one); if it has not answered after :data:`MAX_WAKES` sweeps, or
    if the app answered before the body was in, the connection is closed.

    State: ``_in_head`` from a request's first byte to the end of its headers; ``_head_bytes``
    the bytes of the current head received in whole chunks (a chunk in which a head begins is
    not counted: it may hold the end of the previous request); ``_heads_begun`` counts heads, to
    tell such chunks; ``_wakes`` how often the late body's reader was woken.
    """

    guard: ClassVar[_Guard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Create the protocol as uvicorn does; no deadline yet."""
        super().__init__(*args, **kwargs)
        self._expires_at: float | None = None
        self._in_head = False
        self._head_bytes = 0
        self._heads_begun = 0
        self._wakes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse a connection over the limit; otherwise give it the head deadline."""
        super().connection_made(transport)
        if len(self.connections) > self.guard.limits.max_connections:
            message = f"server busy: {self.guard.limits.max_connections} connections are open; try again"
            self._refuse(503, message, "too_many_connections")
            return
        self._wait(self.guard.limits.header_timeout)
        self.guard.ensure_sweeping(self.loop, self.connections)

    def connection_lost(self, exc: Exception | None) -> None:
        """No deadline without a connection."""
        self._expires_at = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; start the head deadline at a new request's first byte; bound the head."""
        if self._expires_at is None and (self.cycle is None or self.cycle.response_complete):
            self._wait(self.guard.limits.header_timeout)
        in_head, heads_begun = self._in_head, self._heads_begun
        super().data_received(data)
        if in_head and self._in_head and heads_begun == self._heads_begun:  # the whole chunk is head
            self._head_bytes += len(data)
            if self._head_bytes > self.guard.limits.max_head_bytes and not self.transport.is_closing():
                message = f"request line and headers exceed {self.guard.limits.max_head_bytes} bytes"
                self._refuse(431, message, "headers_too_large")

    def on_message_begin(self) -> None:
        """A request's first byte: its head begins."""
        self._in_head, self._head_bytes = True, 0
        self._heads_begun += 1
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        """The head is in: the body's deadline begins."""
        self._in_head, self._wakes = False, 0
        self._wait(self.guard.limits.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The body is in: no deadline while the app works, the head's if it already answered."""
        super().on_message_complete()
        if self.cycle.response_complete:
            self._wait(self.guard.limits.header_timeout)
        else:
            self._expires_at = None

    def on_response_complete(self) -> None:
        """After an answer: the deadline of a begun next head; an unfinished body keeps its own."""
        super().on_response_complete()
        if not self.transport.is_closing() and self._in_head:
            self._wait(self.guard.limits.header_timeout)

    def send_400_response(self, msg: str) -> None:
        """Answer a request that httptools cannot parse (uvicorn's plain-text 400) with the usual body."""
        self.transport.write(raw_error(400, "malformed HTTP request: it could not be parsed", "invalid_http"))
        self._close("invalid_http", "answered 400: malformed HTTP request")

    def expired(self, now: float) -> bool:
        """Whether the connection's deadline has passed at ``now``."""
        return self._expires_at is not None and now >= self._expires_at

    def deadline_passed(self, now: float) -> None:
        """The client kept the connection waiting too long: 408, wake the body's reader, or close."""
        self._expires_at = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._in_head:
            message = f"request headers not received within {self.guard.limits.header_timeout:g} s"
            self._refuse(408, message, "header_timeout")
        elif cycle is not None and cycle.more_body and not cycle.response_started and self._wakes < MAX_WAKES:
            self._wakes += 1  # BodyLimitMiddleware reads the clock and answers 408
            cycle.message_event.set()
            self._expires_at = now + self.guard.interval
        elif cycle is not None and cycle.more_body:
            self._close("body_timeout", f"request body not received within {self.guard.limits.body_timeout:g} s")
        else:  # nothing of a request arrived
            self._close("header_timeout", f"no request within {self.guard.limits.header_timeout:g} s")

    def _wait(self, seconds: float) -> None:
        """Set the deadline ``seconds`` from now."""
        self._expires_at = self.loop.time() + seconds

    def _refuse(self, status: int, message: str, reason: str) -> None:
        """Answer ``status`` with the usual error body, then close."""
        self.transport.write(raw_error(status, message))
        self._close(reason, f"answered {status}: {message}")

    def _close(self, reason: str, message: str) -> None:
        """Close the connection, log one line and count it."""
        self._expires_at = None
        self.transport.close()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"
        logger.warning("connection from %s closed: %s", client, message)
        self.guard.on_refused(reason)


def guarded_protocol(limits: ConnectionLimits, on_refused: OnRefused) -> type[HttpToolsProtocol]:
    """uvicorn's ``http`` protocol class keeping ``limits``; ``on_refused(reason)`` counts refusals.

    Its deadlines are enforced within about :func:`sweep_interval` of their time.
    """
    return type("GuardedHttpToolsProtocol", (_GuardedProtocol,), {"guard": _Guard(limits, on_refused)})


def sweep_interval(limits: ConnectionLimits) -> float:
    """Seconds between deadline sweeps: a fifth of the shorter timeout, within 0.05 to 1 s."""
    return min(1.0, max(0.05, min(limits.header_timeout, limits.body_timeout) / 5))


def fit_open_files(max_connections: int) -> int:
    """How many connections this process can hold: ``max_connections`` if the open files fit.

    Raises the soft limit on open files (``ulimit -n``) up to the hard limit as far as
    ``max_connections`` need (:data:`FILES_PER_CONNECTION` each, plus :data:`RESERVED_FILES`);
    when even the hard limit is too low, returns the number that fits and logs a warning.
    """
    needed = FILES_PER_CONNECTION * max_connections + RESERVED_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised >= needed:
        return max_connections
    fitting = max(1, (raised - RESERVED_FILES) // FILES_PER_CONNECTION)
    logger.warning(
        "--max-connections %d needs %d open files but the limit is %d (ulimit -n): holding at most %d connections",
        max_connections,
        needed,
        raised,
        fitting,
    )
    return fitting
