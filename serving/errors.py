"""The service's one error format and the FastAPI exception handlers that produce it.

Every error response has the body ``{"error": {"type": str, "message": str}}`` (docs/contracts.md
§4). Status codes and ``type`` values:

=====  ==========================  ===================================================
400    ``invalid_json``            body is not valid JSON (or is empty)
400    ``invalid_http``            the request is not valid HTTP/1.1 (connection closed)
401    ``unauthorized``            bearer token missing (``WWW-Authenticate: Bearer``)
403    ``forbidden``               bearer token wrong, or admin routes without an admin token
404    ``not_found``               unknown route
405    ``method_not_allowed``      known route, wrong method (``Allow`` header is kept)
408    ``request_timeout``         headers not in within ``--header-timeout``, or body not in
                                   within ``--body-timeout`` (the connection is closed)
409    ``no_decision_log``         ``POST /feedback`` on a service without ``--decision-log``
413    ``payload_too_large``       body over ``--max-body-bytes``
413    ``query_too_long``          query over ``--max-query-chars``
413    ``batch_too_large``         more queries than ``--max-batch``
415    ``unsupported_media_type``  content type is not ``application/json``
422    ``invalid_request``         a field is missing, of the wrong type, or out of range
422    ``invalid_policy``          ``/admin/reload`` refused the file; the old policy serves on
431    ``headers_too_large``       request line and headers over 64 KiB (connection closed)
500    ``internal_error``          a bug on our side (never a client's mistake)
502    ``bad_gateway``             every backend the proxy tried failed
503    ``service_unavailable``     a connection over ``--max-connections`` (closed at once)
504    ``gateway_timeout``         every backend the proxy tried timed out
=====  ==========================  ===================================================
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("routerl.serving")

#: ``error.type`` for a status code, when no more specific type is given.
TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    409: "conflict",
    431: "headers_too_large",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}

#: At most this many field problems are spelled out in one 422 message.
MAX_LISTED_PROBLEMS = 5


class SafeJSONResponse(JSONResponse):
    """JSON response that escapes non-ASCII and refuses NaN/Infinity.

    Escaping keeps a response valid even when it echoes client text that cannot be encoded as
    UTF-8 (a lone surrogate from a ``\\ud800`` escape).
    """

    def render(self, content: Any) -> bytes:
        """Serialize ``content`` as compact, ASCII-only, strict JSON."""
        return _ENCODER.encode(content).encode("ascii")


#: One encoder for every response (``json.dumps`` with options builds a new one per call).
_ENCODER = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))


class ApiError(Exception):
    """An error to answer with the standard body; raised by routes and middleware."""

    def __init__(
        self,
        status_code: int,
        message: str,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Create an error with an HTTP status, a message and an optional specific type."""
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error_type = error_type or TYPE_BY_STATUS.get(status_code, "http_error")
        self.headers = dict(headers or {})

    def response(self) -> SafeJSONResponse:
        """The error's answer: its status, the standard body and its headers."""
        return error_response(self.status_code, self.message, self.error_type, self.headers)


def error_body(error_type: str, message: str) -> dict[str, dict[str, str]]:
    """The standard error body ``{"error": {"type": ..., "message": ...}}``."""
    return {"error": {"type": error_type, "message": message}}


def error_response(
    status_code: int,
    message: str,
    error_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> SafeJSONResponse:
    """A response with the standard error body."""
    kind = error_type or TYPE_BY_STATUS.get(status_code, "http_error")
    return SafeJSONResponse(error_body(kind, message), status_code=status_code, headers=dict(headers or {}))


def _field_name(loc: Sequence[Any]) -> str:
    """``("body", "allowed_models", 0)`` -> ``"allowed_models[0]"``; the body itself -> body."""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _problem(error: Mapping[str, Any]) -> str:
    """One pydantic/FastAPI validation error as ``"field: what is wrong"``.

    A check of the whole body (a model validator) names the field in its own message.
    """
    msg = str(error.get("msg", "invalid value"))
    field = _field_name(error.get("loc", ()))
    if error.get("type") == "value_error":
        msg = msg.removeprefix("Value error, ")
        if field == "body":
            return msg
    return f"{field}: {msg}"


def validation_error_response(errors: Sequence[Mapping[str, Any]]) -> SafeJSONResponse:
    """Map FastAPI's body validation errors to 400 (not JSON) or 422 (invalid field)."""
    for error in errors:
        if error.get("type") == "json_invalid":
            loc = error.get("loc", ())
            position = loc[1] if len(loc) > 1 else "?"
            reason = (error.get("ctx") or {}).get("error", "JSON decode error")
            return error_response(400, f"malformed JSON body: {reason} at position {position}")
        if error.get("type") == "missing" and tuple(error.get("loc", ())) == ("body",):
            return error_response(400, "request body is empty; expected a JSON object")
    problems = [_problem(error) for error in errors[:MAX_LISTED_PROBLEMS]]
    if len(errors) > MAX_LISTED_PROBLEMS:
        problems.append(f"and {len(errors) - MAX_LISTED_PROBLEMS} more")
    return error_response(422, "invalid request: " + "; ".join(problems))


async def _api_error_handler(request: Request, exc: Exception) -> SafeJSONResponse:
    """Answer an :class:`ApiError` with its status and the standard body."""
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_exception_handler(request: Request, exc: Exception) -> SafeJSONResponse:
    """Answer Starlette's HTTP errors (404, 405, ...) with the standard body."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 400:  # FastAPI's answer to a body that json.loads cannot take
        message = "malformed JSON body: it could not be parsed (invalid UTF-8, nesting too deep or a number too long?)"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, headers=exc.headers)


async def _validation_error_handler(request: Request, exc: Exception) -> SafeJSONResponse:
    """Answer a request validation error with 400 or 422 and the standard body."""
    assert isinstance(exc, RequestValidationError)
    return validation_error_response(list(exc.errors()))


def internal_error_response(method: str, path: str, exc: BaseException) -> SafeJSONResponse:
    """Answer a bug with 500 and the standard body; the traceback goes to the log."""
    logger.error("unhandled error on %s %s", method, path, exc_info=exc)
    return error_response(500, "internal server error")


async def _unexpected_error_handler(request: Request, exc: Exception) -> SafeJSONResponse:
    """Answer a bug with 500 and the standard body (:func:`internal_error_response`)."""
    return internal_error_response(request.method, request.url.path, exc)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the standard body."""
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(Exception, _unexpected_error_handler)
