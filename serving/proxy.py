"""OpenAI-compatible chat proxy: route a chat request, forward it, fall back on failure.

``POST /v1/chat/completions`` with ``model`` = ``router`` (the default cost weight: the
tenant's, the live budget's or the policy's, :mod:`serving.router`), ``router:<cost_weight>``, or
``router:<objective>=<weight>,...`` (a weight per objective, docs/contracts.md §2.13: e.g.
``router:usd=300,latency=0.5``).
The policy scores the routing text (the last user message, or the whole conversation with
``--route-on conversation``); the request is forwarded unchanged but
for ``model`` to the backend of the chosen model (:mod:`serving.backends`). A backend that
cannot be reached, times out or answers 5xx is skipped for the next-best allowed model (each
skip is counted as a ``backend`` fallback); a 2xx-4xx answer is passed through as it is,
streamed (``"stream": true``, server-sent events) or not. When every backend failed the answer
is 504 if they all timed out, else 502. A request that cannot be forwarded as strict JSON (a
lone surrogate in any text, a non-finite number in any field) is refused 422 before it is
routed, like ``/route``'s fields (:func:`serving.schemas.check_strict_json`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from serving.backends import Backend
from serving.errors import ApiError
from serving.metrics import Metrics
from serving.schemas import check_strict_json
from serving.settings import RouteOn

logger = logging.getLogger("routerl.serving.proxy")

ROUTER_MODEL = "router"


class ChatMessage(BaseModel):
    """One chat message; fields other than ``role`` and ``content`` are forwarded untouched."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """An OpenAI chat completion request; unknown fields are forwarded untouched."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False

    @model_validator(mode="after")
    def _forwardable(self) -> ChatRequest:
        """Refuse (422) text that is not valid Unicode and non-finite numbers anywhere in the
        request, forwarded fields included: the routing text must be scorable, and the request is
        forwarded as strict JSON."""
        check_strict_json(self.model_dump(exclude_unset=True))
        return self


@dataclass(frozen=True)
class Usage:
    """Token counts a backend reported for one answer."""

    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def from_body(cls, body: Any) -> Usage | None:
        """The ``usage`` of a chat completion (or chunk) object, if it has a complete one."""
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return None
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            return cls(prompt, completion)
        return None


def suffix_weight(model: str, name: str) -> float | None:
    """The cost weight of a ``model`` field ``<name>`` (None) or ``<name>:<w>`` (w); 422 for a w that is not
    a finite number >= 0. The caller has checked that ``model`` is one of the two forms."""
    if model == name:
        return None
    try:
        weight = float(model[len(name) + 1 :])
    except ValueError:
        weight = math.nan
    if math.isfinite(weight) and weight >= 0:
        return weight
    raise ApiError(422, f"invalid request: model: {model[:100]!r} needs a finite cost weight >= 0")


def objective_weights(model: str, suffix: str) -> dict[str, float]:
    """The weights of a ``model`` field's ``<objective>=<w>,...`` ``suffix``; 422 naming ``model`` for a
    malformed pair, a repeated objective or a w that is not a finite number >= 0."""
    weights: dict[str, float] = {}
    for pair in suffix.split(","):
        name, equals, text = pair.partition("=")
        name = name.strip()
        try:
            weight = float(text) if equals and name else math.nan
        except ValueError:
            weight = math.nan
        if name in weights or not (math.isfinite(weight) and weight >= 0):
            raise ApiError(
                422,
                f"invalid request: model: {model[:100]!r}: {pair[:50]!r} is not <objective>=<weight> with a "
                "finite weight >= 0, each objective once",
            )
        weights[name] = weight
    return weights


def cost_weight_of(model: str) -> float | dict[str, float] | None:
    """The weight a ``model`` field asks for: None for ``router``, w for ``router:<w>``, and a weight per
    objective for ``router:<objective>=<w>,...``."""
    if model == ROUTER_MODEL or model.startswith(ROUTER_MODEL + ":"):
        suffix = model[len(ROUTER_MODEL) + 1 :]
        return objective_weights(model, suffix) if "=" in suffix else suffix_weight(model, ROUTER_MODEL)
    raise ApiError(
        422,
        f"invalid request: model: {model[:100]!r}; use 'router', 'router:<cost_weight>' or "
        "'router:<objective>=<weight>,...'",
    )


def _text(message: ChatMessage) -> str:
    """The text of a message: its string content, or its text parts joined by newlines."""
    if isinstance(message.content, str):
        return message.content
    parts = message.content or []
    return "\n".join(str(part.get("text", "")) for part in parts if part.get("type") == "text")


def routing_text(request: ChatRequest, route_on: RouteOn) -> str:
    """The text the policy routes on; 422 when there is none."""
    if route_on == "conversation":
        text = "\n".join(_text(message) for message in request.messages)
    else:
        users = [message for message in request.messages if message.role == "user"]
        text = _text(users[-1]) if users else ""
    if not text:
        what = "the conversation" if route_on == "conversation" else "the last user message"
        raise ApiError(422, f"invalid request: messages: {what} has no text to route on")
    return text


class BackendFailure(Exception):
    """A backend could not answer (connect error, timeout, 5xx)."""

    def __init__(self, message: str, timed_out: bool) -> None:
        """Record what went wrong and whether it was a timeout."""
        super().__init__(message)
        self.timed_out = timed_out


class _UsageScanner:
    """Finds the ``usage`` object in a stream of server-sent events, chunk by chunk."""

    def __init__(self) -> None:
        """Start with no partial line and no usage."""
        self._partial = b""
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> None:
        """Scan the complete ``data:`` lines of ``chunk`` that mention usage."""
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.startswith(b"data:") and b'"usage"' in line:
                try:
                    found = Usage.from_body(json.loads(line[5:]))
                except ValueError:
                    continue
                self.usage = found or self.usage


#: Called with (served model, usage) once a backend has answered 2xx (at the end of a stream).
OnServed = Callable[[str, Usage | None], None]


class ChatProxy:
    """Forwards chat requests to the backends, in the order the router ranks them."""

    def __init__(self, backends: dict[str, Backend], metrics: Metrics) -> None:
        """Proxy to ``backends`` ({model of the policy or of ``--explore-new-models``: backend});
        count fallbacks in ``metrics``."""
        self.backends = backends
        self.metrics = metrics
        self.client = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    async def _send(self, backend: Backend, payload: dict[str, Any], stream: bool) -> httpx.Response:
        """Send to one backend; raise :class:`BackendFailure` on connect error, timeout, 5xx."""
        request = self.client.build_request(
            "POST",
            backend.url,
            json=payload,
            headers=backend.headers(),
            timeout=httpx.Timeout(backend.timeout_s),
        )
        try:
            response = await self.client.send(request, stream=stream)
        except httpx.TimeoutException:
            raise BackendFailure(f"timed out after {backend.timeout_s:g} s", timed_out=True) from None
        except httpx.TransportError as exc:
            raise BackendFailure(f"unreachable ({type(exc).__name__})", timed_out=False) from None
        if response.status_code >= 500:
            await response.aclose()
            raise BackendFailure(f"answered {response.status_code}", timed_out=False)
        return response

    async def complete(self, name: str, request: ChatRequest) -> httpx.Response:
        """One call to ``name``'s backend, not streamed, read whole (a cascade's step); BackendFailure as forward's."""
        backend = self.backends[name]
        payload = {**request.model_dump(exclude_unset=True), "model": backend.model, "stream": False}
        return await self._send(backend, payload, stream=False)

    async def forward(
        self,
        order: list[str],
        request: ChatRequest,
        headers: dict[str, str],
        on_served: OnServed,
    ) -> Response:
        """Try the backends of ``order`` in turn; answer with the first that does not fail.

        ``headers`` are added to the answer, with ``x-routerl-model`` (the model that served).
        """
        payload = request.model_dump(exclude_unset=True)
        failures: list[BackendFailure] = []
        for position, name in enumerate(order):
            if position:
                self.metrics.fallbacks.labels("backend").inc()
            backend = self.backends[name]
            try:
                response = await self._send(backend, {**payload, "model": backend.model}, request.stream)
            except BackendFailure as failure:
                logger.warning("backend for %s failed: %s", name, failure)
                failures.append(failure)
                continue
            answer_headers = {**headers, "x-routerl-model": name}
            media_type = response.headers.get("content-type")
            if request.stream:
                return StreamingResponse(
                    self._relay(response, name, on_served),
                    status_code=response.status_code,
                    media_type=media_type,
                    headers=answer_headers,
                    background=BackgroundTask(response.aclose),
                )
            if response.is_success:
                try:
                    on_served(name, Usage.from_body(response.json()))
                except ValueError:
                    on_served(name, None)
            return Response(
                response.content,
                status_code=response.status_code,
                media_type=media_type,
                headers=answer_headers,
            )
        if all(failure.timed_out for failure in failures):
            raise ApiError(504, f"every backend timed out ({len(failures)} tried)")
        reasons = "; ".join(f"{name}: {failure}" for name, failure in zip(order, failures))
        raise ApiError(502, f"every backend failed ({reasons})")

    async def _relay(self, response: httpx.Response, name: str, on_served: OnServed) -> AsyncIterator[bytes]:
        """Pass the backend's event stream through, noting the usage it reports."""
        scanner = _UsageScanner()
        async for chunk in response.aiter_bytes():
            scanner.feed(chunk)
            yield chunk
        if response.is_success:
            on_served(name, scanner.usage)
