"""The FastAPI application of the router service (CONTRACTS.md §4, first version).

Routes: ``POST /route`` and ``GET /healthz``. Every error has the body
``{"error": {"type", "message"}}`` (see :mod:`serving.errors` for the status mapping).

Decisions worth knowing:
- A query longer than ``--max-query-chars`` (counted in Unicode code points) is answered
  **413** with ``type`` ``query_too_long``, like a body over ``--max-body-bytes`` (413,
  ``payload_too_large``): both are size limits set by the operator, and the remedy for the
  client is the same (send less), unlike a 422, which means the request is wrong.
- An empty query ``""`` is valid for the policy (CONTRACTS.md §2) but the service answers it
  422: routing nothing is always a client bug.
- ``cost_weight`` absent or ``null`` means the policy's ``default_cost_weight()``; otherwise it
  must be a JSON number (not a string or a boolean), finite and >= 0.
- ``allowed_models`` restricts the argmax to those models (duplicates are harmless); the
  response still carries the scores of every model. Ties go to the lower model index.
- Scoring runs in FastAPI's thread pool under ``torch.inference_mode()`` without a lock; the
  policy is read once per request from ``app.state.policy`` so that a later reload can swap it
  atomically.
"""

from __future__ import annotations

import email.message
import math
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import ApiError, SafeJSONResponse, error_response, install_error_handlers
from serving.policy import LoadedPolicy, load_policy
from serving.settings import Settings

#: A body larger than this is not even drained before the 413 (the connection is closed).
_DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


def _check_utf8(text: str, what: str) -> str:
    """Raise ``ValueError`` when ``text`` cannot be encoded as UTF-8 (a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (it contains a lone surrogate)") from None
    return text


class RouteRequest(BaseModel):
    """Body of ``POST /route``. Strict: no coercion (``"5"`` is not a number), no extra keys."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = Field(description="The text to route; must not be empty.")
    cost_weight: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        default=None,
        description="Quality given up to save one USD per query; default: the policy's own.",
    )
    allowed_models: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Choose only among these models (names from the policy's models()).",
    )

    @field_validator("query")
    @classmethod
    def _query_not_empty(cls, value: str) -> str:
        """Reject the empty query and text that is not valid Unicode."""
        if value == "":
            raise ValueError("query is empty; send the text to route")
        return _check_utf8(value, "query")

    @field_validator("allowed_models")
    @classmethod
    def _names_are_text(cls, value: list[str] | None) -> list[str] | None:
        """Reject model names that are not valid Unicode."""
        for name in value or []:
            _check_utf8(name, "a model name in allowed_models")
        return value


class PolicyInfo(BaseModel):
    """Which policy answered: file hash prefix and training-data fingerprint."""

    version: str
    fingerprint: str


class RouteResponse(BaseModel):
    """Body of a successful ``POST /route``."""

    query_id: str
    model: str
    scores: dict[str, float]
    score_kind: str
    policy: PolicyInfo


class HealthResponse(BaseModel):
    """Body of ``GET /healthz``."""

    status: str
    policy: PolicyInfo


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


def require_json(request: Request) -> None:
    """Dependency: answer 415 unless the request declares a JSON body.

    FastAPI runs it before validating the body, so a non-JSON body gets 415, not 422.
    """
    content_type = request.headers.get("content-type")
    if not _is_json_content_type(content_type):
        got = f"got {content_type!r}" if content_type else "none was given"
        raise ApiError(415, f"Content-Type must be application/json; {got}")


class BodyLimitMiddleware:
    """ASGI middleware: answer 413 to a request body over ``max_body_bytes``.

    The body is read (and buffered, up to the limit) before the app sees it, so the limit also
    holds for chunked bodies without a ``Content-Length``. An oversized body is drained (up to
    64 MiB) before the 413 so that the client reads the answer instead of a broken pipe.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        """Wrap ``app`` with a body limit of ``max_body_bytes``."""
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer the body within the limit and replay it, or answer 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        too_large = declared.isdigit() and int(declared) > self.max_body_bytes
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
            if size > self.max_body_bytes:
                too_large = True
            if too_large:
                if size > _DRAIN_LIMIT_BYTES:
                    break
                continue
            chunks.append(body)
        if too_large:
            response = error_response(
                413, f"request body exceeds the limit of {self.max_body_bytes} bytes"
            )
            await response(scope, receive, send)
            return
        buffered = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            """Hand the buffered body to the app once, then defer to the server."""
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": buffered, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _choose(scores: list[float], allowed: list[int]) -> int:
    """Index of the highest score among ``allowed`` (sorted); ties go to the lower index."""
    best = allowed[0]
    for index in allowed[1:]:
        if scores[index] > scores[best]:
            best = index
    return best


def create_app(policy: str | Path | LoadedPolicy, settings: Settings | None = None) -> FastAPI:
    """Build the router service for ``policy`` (a path, or an already loaded policy).

    Raises:
        PolicyError: ``policy`` is a path that is missing or not a valid routerl policy.
    """
    settings = settings or Settings()
    loaded = policy if isinstance(policy, LoadedPolicy) else load_policy(policy)

    app = FastAPI(
        title="routerl router",
        summary="Routes each query to an LLM with an exported routerl policy.",
        docs_url=None,
        redoc_url=None,
        default_response_class=SafeJSONResponse,
    )
    app.state.policy = loaded
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)

    @app.api_route("/healthz", methods=["GET", "HEAD"], response_model=HealthResponse)
    def healthz(request: Request) -> HealthResponse:
        """Liveness and the identity of the loaded policy."""
        current: LoadedPolicy = request.app.state.policy
        return HealthResponse(status="ok", policy=PolicyInfo(**current.info))

    @app.post("/route", response_model=RouteResponse, dependencies=[Depends(require_json)])
    def route(body: RouteRequest, request: Request) -> RouteResponse:
        """Score one query with the policy and return the chosen model."""
        current: LoadedPolicy = request.app.state.policy
        limit = settings.max_query_chars
        if len(body.query) > limit:
            raise ApiError(
                413,
                f"query has {len(body.query)} characters; the limit is {limit}",
                "query_too_long",
            )
        cost_weight = current.default_cost_weight if body.cost_weight is None else body.cost_weight

        if body.allowed_models is None:
            allowed = list(range(len(current.models)))
        else:
            index_of = {name: i for i, name in enumerate(current.models)}
            unknown = [name for name in body.allowed_models if name not in index_of]
            if unknown:
                shown = ", ".join(repr(name[:100]) for name in unknown[:5])
                raise ApiError(
                    422,
                    f"invalid request: allowed_models: unknown model(s) {shown}; "
                    f"the policy's models are {list(current.models)}",
                )
            allowed = sorted({index_of[name] for name in body.allowed_models})

        row = current.scores([body.query], cost_weight)[0].tolist()
        if not all(math.isfinite(value) for value in row):
            if cost_weight > current.default_cost_weight:
                raise ApiError(
                    422,
                    f"invalid request: cost_weight: {cost_weight!r} is too large; "
                    "the policy's scores overflow at this weight",
                )
            raise RuntimeError(f"policy returned non-finite scores at cost_weight={cost_weight}")
        chosen = _choose(row, allowed)
        return RouteResponse(
            query_id=uuid.uuid4().hex,
            model=current.models[chosen],
            scores=dict(zip(current.models, row, strict=True)),
            score_kind=current.score_kind,
            policy=PolicyInfo(**current.info),
        )

    return app
