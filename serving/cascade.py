"""The learned cascade behind the OpenAI proxy: call a model, read its answer, return it or escalate.

With ``serve.py --cascade FILE`` (a cascade exported by ``python -m training.cascade``, docs/contracts.md
§7.4), a chat request whose ``model`` is ``cascade`` (the cascade's default cost weight) or
``cascade:<w>`` runs the cascade (docs/contracts.md §4.12); ``router`` and ``router:<w>`` still route
before generation with ``--policy``. For one request:

1. the cascade's ``step`` on the routing text (as the proxy routes on it: the last user message, or
   the conversation) and the answers so far says ``call`` a model or ``return`` one's answer;
2. a call forwards the request, not streamed, to that model's backend, and the answer's text
   (``choices[0].message.content``) is what the next step reads;
3. ``return`` answers the client with that model's completion, unchanged, with the headers
   ``x-routerl-model`` (the model answered), ``x-routerl-cascade`` (every model called, in order)
   and ``x-routerl-query-id``. A streamed request (``"stream": true``) gets the final answer only,
   as one server-sent chunk and ``[DONE]``: the answers that were not returned are never shown.

A backend that fails (unreachable, timed out, 5xx) ends the cascade: with an answer already in hand
the latest one is returned (counted as a ``cascade`` fallback), else 504 when it timed out and 502
otherwise; a backend's 4xx is passed through as it is. The decision log gets one record per request:
the model answered, the product of the steps' probabilities as its ``propensity``, and ``cascade``,
every step with its action, model and probability (and each call's token usage). Tenants may run
the cascade only if they may use all of its models (else 422); sessions, rules, exploration and the
live budget apply to routing before generation only.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response, StreamingResponse

from policies.cascade_artifact import CascadeStep, LoadedCascade
from serving.caller import Caller
from serving.errors import ApiError
from serving.proxy import BackendFailure, ChatProxy, ChatRequest, Usage, routing_text, suffix_weight
from serving.router import NO_CALLER, Router

#: The ``model`` of a chat request that runs the cascade (``cascade:<w>`` with a cost weight).
CASCADE_MODEL = "cascade"


def is_cascade_model(model: str) -> bool:
    """Whether a chat request's ``model`` asks for the cascade."""
    return model == CASCADE_MODEL or model.startswith(CASCADE_MODEL + ":")


def cascade_weight(model: str, default: float) -> float:
    """The cost weight of ``cascade`` (``default``) or ``cascade:<w>``; 422 for a weight that is not finite >= 0."""
    weight = suffix_weight(model, CASCADE_MODEL)
    return default if weight is None else weight


def answer_text(body: Any) -> str:
    """The text of a chat completion's first choice ('' when it has none)."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


def event_stream(body: dict[str, Any]) -> Iterator[bytes]:
    """A completion as server-sent events: one ``chat.completion.chunk`` with the whole answer, then ``[DONE]``."""
    choice = (body.get("choices") or [{}])[0]
    chunk = {
        "id": body.get("id", "chatcmpl-" + uuid.uuid4().hex),
        "object": "chat.completion.chunk",
        "created": body.get("created", int(time.time())),
        "model": body.get("model", ""),
        "choices": [{
            "index": 0,
            "delta": {"role": "assistant", "content": answer_text(body)},
            "finish_reason": choice.get("finish_reason", "stop") if isinstance(choice, dict) else "stop",
        }],
    }  # fmt: skip
    if isinstance(body.get("usage"), dict):
        chunk["usage"] = body["usage"]
    yield f"data: {json.dumps(chunk)}\n\n".encode()
    yield b"data: [DONE]\n\n"


@dataclass
class CascadeRun:
    """One request's cascade so far: its steps, the models called, their answers and completions."""

    steps: list[CascadeStep] = field(default_factory=list)
    called: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    completions: dict[str, dict[str, Any]] = field(default_factory=dict)
    usages: dict[str, Usage | None] = field(default_factory=dict)

    @property
    def propensity(self) -> float:
        """The probability the cascade gave this whole run: the product of its steps' probabilities."""
        return math.prod(step.probability for step in self.steps)

    def record(self) -> list[dict[str, Any]]:
        """The steps for the decision log: action, model, probability (and a call's token usage)."""
        entries = []
        for step in self.steps:
            entry: dict[str, Any] = {"action": step.action, "model": step.model, "probability": step.probability}
            usage = self.usages.get(step.model) if step.action == "call" else None
            if usage is not None:
                entry.update(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
            entries.append(entry)
        return entries


class CascadeProxy:
    """Runs :class:`~policies.cascade_artifact.LoadedCascade` steps against the proxy's backends."""

    def __init__(self, cascade: LoadedCascade, router: Router, proxy: ChatProxy) -> None:
        """Run ``cascade`` through ``proxy``'s backends, logging and counting with ``router``'s log and metrics.

        Raises:
            ValueError: a model of the cascade has no backend (one line naming them).
        """
        missing = [model for model in cascade.models if model not in proxy.backends]
        if missing:
            raise ValueError(f"--cascade {cascade.path}: no backend for {missing} in --backends")
        self.cascade, self.router, self.proxy = cascade, router, proxy
        self.calls = router.metrics.cascade_calls

    def _check_tenant(self, caller: Caller) -> None:
        """422 when the caller's tenant may not use every model of the cascade."""
        tenant = caller.tenant
        if tenant is not None and tenant.models is not None:
            refused = [model for model in self.cascade.models if model not in tenant.models]
            if refused:
                raise ApiError(422, f"invalid request: model: the cascade calls {refused}, which tenant "
                                    f"{tenant.name!r} may not use; its models are {list(tenant.models)}")

    async def answer(self, body: ChatRequest, caller: Caller = NO_CALLER) -> Response:
        """Answer a ``cascade`` chat request (module docstring)."""
        self._check_tenant(caller)
        weight = cascade_weight(body.model, self.cascade.default_cost_weight)
        text = routing_text(body, self.router.settings.route_on)
        self.router.check_length([text])
        run, query_id = CascadeRun(), uuid.uuid4().hex
        failure: BackendFailure | None = None
        while True:
            try:
                step = await asyncio.to_thread(self.cascade.step, text, run.called, run.answers, weight)
            except ValueError as exc:  # the module refused its own inputs: a defect of the file, not the client's
                raise ApiError(500, f"the cascade could not decide: {exc}") from None
            if step.action == "return":
                run.steps.append(step)
                break
            try:
                completion = await self._call(step.model, body)
            except BackendFailure as exc:
                failure = exc
                break
            if isinstance(completion, Response):  # a 4xx: the client's request, passed through
                return completion
            run.steps.append(step)
            run.called.append(step.model)
            run.answers.append(answer_text(completion))
            run.completions[step.model] = completion
            run.usages[step.model] = Usage.from_body(completion)
            self.calls.labels(step.model).inc()
        return self._respond(body, run, query_id, weight, text, caller, failure)

    async def _call(self, model: str, body: ChatRequest) -> dict[str, Any] | Response:
        """The completion of one call (a dict), or the backend's 4xx answer as a response to pass through."""
        answer = await self.proxy.complete(model, body)
        if not answer.is_success:
            return Response(answer.content, status_code=answer.status_code,
                            media_type=answer.headers.get("content-type"))
        try:
            completion = answer.json()
        except ValueError:
            completion = None
        if not isinstance(completion, dict):
            raise BackendFailure("answered something that is not a JSON object", timed_out=False)
        return completion

    def _respond(
        self, body: ChatRequest, run: CascadeRun, query_id: str, weight: float, text: str, caller: Caller,
        failure: BackendFailure | None,
    ) -> Response:
        """The returned answer with its headers, logged and counted; 502/504 when no call answered."""
        if failure is not None and not run.called:
            status = 504 if failure.timed_out else 502
            raise ApiError(status, f"the cascade's first call failed: {failure}")
        model = run.steps[-1].model if failure is None else run.called[-1]
        if failure is not None:
            self.router.metrics.fallbacks.labels("cascade").inc()
        self.router.metrics.decided(model, caller.tenant_name)
        self.router.recent.add(model, weight, False, text)
        if self.router.log is not None:
            extra: dict[str, Any] = {"cascade": run.record()}
            if failure is not None:
                extra["cascade_failed"] = str(failure)
            if caller.tenant is not None:
                extra["tenant"] = caller.tenant.name
            self.router.log.decision(query_id=query_id, query=text, model=model, propensity=run.propensity,
                                     cost_weight=weight, policy_version=self.cascade.version, **extra)
        headers = {"x-routerl-query-id": query_id, "x-routerl-model": model, "x-routerl-cascade": ",".join(run.called)}
        completion = run.completions[model]
        if body.stream:
            return StreamingResponse(event_stream(completion), media_type="text/event-stream", headers=headers)
        return Response(json.dumps(completion), media_type="application/json", headers=headers)
