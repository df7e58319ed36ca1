"""The HTTP router service: serves an exported routerl policy (docs/contracts.md §4).

The service needs only torch, numpy, safetensors, FastAPI/uvicorn, httpx, prometheus_client and
the policy files: of the project's packages it imports :mod:`policies` only (``policy.pt`` is
loaded by :mod:`policies.artifact`, its portable twin by :mod:`policies.native`, which tokenizes
with :mod:`data.tokenizer`), never the training packages (the rest of ``data``, ``envs``,
``agents``, ``evaluation``, ``training``); see docs/architecture.md.

Modules (imported explicitly, so that ``import serving.settings`` stays light):
- :mod:`serving.settings` -- the service flags and tokens as a typed dataclass.
- :mod:`serving.server` -- binding the socket, uvicorn, one process or ``--workers N``
  (what ``serve.py`` runs).
- :mod:`serving.workers` -- the supervisor of ``--workers N``: spawn, watch, reload, stop.
- :mod:`serving.connections` -- below the app: head deadline and size, open connections and
  files, malformed HTTP (uvicorn's protocol, guarded).
- :mod:`serving.app` -- ``create_app(policy, settings) -> FastAPI``: the routes, wired.
- :mod:`serving.schemas` -- the JSON request and response bodies (pydantic).
- :mod:`serving.router` -- the routing decisions of ``/route``, ``/route/batch`` and the proxy.
- :mod:`serving.middleware` -- body limit and deadline, the lean ``/route`` path, the JSON
  content-type check.
- :mod:`serving.policy` -- the serving checks on a loaded policy and its atomic hot reload.
- :mod:`serving.batching` -- scoring the queries of concurrent requests in one call.
- :mod:`serving.decisions` -- the exploration rule (greedy, ε-greedy, softmax, floor) with exact
  propensities, the JSONL decision log.
- :mod:`serving.errors` -- the one error body format and the exception handlers (FastAPI).
- :mod:`serving.auth` -- bearer tokens (ASGI middleware).
- :mod:`serving.metrics` -- Prometheus metrics and the middleware that counts requests.
- :mod:`serving.backends` -- the proxy's backends file.
- :mod:`serving.proxy` -- the OpenAI-compatible chat proxy with fallback.
"""
