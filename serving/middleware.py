"""The service's own ASGI middleware and request guards (docs/contracts.md §4).

- :class:`BodyLimitMiddleware`: 413 ``payload_too_large`` for a body over ``--max-body-bytes``,
  408 ``request_timeout`` for one not received within ``--body-timeout``.
- :class:`LeanRoutes`: answers valid ``POST /route`` and ``/route/batch`` without FastAPI.
- :func:`require_json` / :func:`require_json_if_body`: FastAPI dependencies that answer 415
  unless the request declares a JSON body.

Authentication (:mod:`serving.auth`) and request metrics (:mod:`serving.metrics`) are
middleware too; :func:`serving.app.create_app` stacks them all, outermost first: metrics, auth,
body limit, lean routes.
"""

from __future__ import annotations

import asyncio
import email.message
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.caller import Caller, caller_of
from serving.errors import ApiError, SafeJSONResponse, error_response, internal_error_response
from serving.router import Router
from serving.schemas import BatchRequest, RouteRequest, RoutingOptions

#: A body larger than this is not even drained before the 413 (the connection is closed).
_DRAIN_LIMIT_BYTES = 64 * 1024 * 1024

#: ``Content-Type`` values that :class:`LeanRoutes` accepts as JSON without parsing the header.
_PLAIN_JSON = frozenset({b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8"})


def _is_json_content_type(value: str | None) -> bool:
    """True for ``application/json`` and ``application/*+json`` (parameters allowed)."""
    if not value:
        return False
    message = email.message.Message()
    message["content-type"] = value
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


async def require_json(request: Request) -> None:
    """Dependency: answer 415 unless the request declares a JSON body.

    FastAPI runs it before validating the body, so a non-JSON body gets 415, not 422. It is
    ``async`` because FastAPI runs a plain function dependency in a worker thread, a hop that
    would cost more than the whole routing decision.
    """
    content_type = request.headers.get("content-type")
    if not _is_json_content_type(content_type):
        got = f"got {content_type!r}" if content_type else "none was given"
        raise ApiError(415, f"Content-Type must be application/json; {got}")


async def require_json_if_body(request: Request) -> None:
    """Dependency: like :func:`require_json`, for routes whose body is optional."""
    if await request.body():
        await require_json(request)


class BodyLimitMiddleware:
    """ASGI middleware: answer 413 to a request body over ``max_body_bytes``, 408 to one that is
    not received whole within ``timeout_s``.

    The body is read (and buffered, up to the limit) before the app sees it, so the limit also
    holds for chunked bodies without a ``Content-Length``. An oversized body is drained (up to
    64 MiB) before the 413 so that the client reads the answer instead of a broken pipe. The
    deadline covers the whole body (a chunked body without an end, a body shorter than its
    ``Content-Length``, a trickle) and is checked on the clock at every read, with no timer of
    its own: the server wakes a read that waits past the deadline (:mod:`serving.connections`).
    The 408 closes the connection: the rest of a late body could not be told from a next request.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, timeout_s: float) -> None:
        """Wrap ``app`` with a body limit of ``max_body_bytes`` and a deadline of ``timeout_s``."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer the body within the limit and replay it, or answer 413 or 408."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        too_large = declared.isdigit() and int(declared) > self.max_body_bytes
        clock = asyncio.get_running_loop().time
        deadline = clock() + self.timeout_s
        chunks: list[bytes] = []
        size = 0
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away; nobody to answer
            body = message.get("body", b"")
            size += len(body)
            more_body = bool(message.get("more_body", False))
            if more_body and clock() >= deadline:
                late = f"request body not received within {self.timeout_s:g} s ({size} bytes came)"
                await error_response(408, late, headers={"connection": "close"})(scope, receive, send)
                return
            if size > self.max_body_bytes:
                too_large = True
            if too_large:
                if size > _DRAIN_LIMIT_BYTES:
                    break
                continue
            chunks.append(body)
        if too_large:
            response = error_response(413, f"request body exceeds the limit of {self.max_body_bytes} bytes")
            await response(scope, receive, send)
            return
        await self.app(scope, replaying(b"".join(chunks), receive), send)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already read ``body`` to the app once, then defers to the server."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _declares_plain_json(scope: Scope) -> bool:
    """True when the request's ``Content-Type`` is exactly ``application/json`` (the common case)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.lower() in _PLAIN_JSON
    return False


class LeanRoutes:
    """ASGI middleware: answer valid ``POST /route`` and ``/route/batch`` without FastAPI.

    Why: FastAPI's dependency solving, body parsing and response handling cost more CPU than
    the routing decision itself. This path validates the body with the same pydantic models in
    one step (``model_validate_json``) and calls the same :class:`Router` methods as the FastAPI
    routes, so the decisions, the decision log and the metrics are the same. Every request it
    does not fully accept (another content type, a body that fails validation) is handed, body
    intact, to the FastAPI app, which gives the usual errors: the error answers exist once.
    It sits inside the body-limit, auth and metrics middlewares, which still see every request.
    """

    def __init__(self, app: ASGIApp, router: Router) -> None:
        """Serve ``router``'s routes in front of ``app`` (the FastAPI app)."""
        self.app = app
        self.routes: dict[str, tuple[type[RoutingOptions], Callable[[Any, Caller], Awaitable[dict[str, Any]]]]] = {
            "/route": (RouteRequest, router.route),
            "/route/batch": (BatchRequest, router.route_batch),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a valid routing request here; hand anything else to the app."""
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None or not _declares_plain_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        model, handler = route
        try:
            request = model.model_validate_json(body)
        except ValidationError:
            await self.app(scope, replaying(body, receive), send)
            return
        try:
            response = SafeJSONResponse(await handler(request, caller_of(scope)))
        except ApiError as exc:
            response = exc.response()
        except Exception as exc:
            response = internal_error_response(scope["method"], scope["path"], exc)
        await response(scope, receive, send)
