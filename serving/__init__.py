"""HTTP router service for an exported routerl policy (CONTRACTS.md §4).

The service needs only torch, FastAPI/uvicorn, httpx, prometheus_client and the TorchScript
artifact: it never imports the training packages (``data``, ``envs``, ``agents``,
``evaluation``, ``training``); the artifact is loaded by :mod:`policies.artifact` (torch only).

Modules (imported explicitly, so that ``import serving.settings`` stays light):
- :mod:`serving.settings` -- the service flags and tokens as a typed dataclass.
- :mod:`serving.policy` -- the serving checks on a loaded policy and its atomic hot reload.
- :mod:`serving.decisions` -- greedy / ε-greedy choice with propensities, the JSONL decision log.
- :mod:`serving.errors` -- the one error body format and the exception handlers (FastAPI).
- :mod:`serving.auth` -- bearer tokens (ASGI middleware).
- :mod:`serving.metrics` -- Prometheus metrics and the middleware that counts requests.
- :mod:`serving.backends` -- the proxy's backends file.
- :mod:`serving.proxy` -- the OpenAI-compatible chat proxy with fallback.
- :mod:`serving.app` -- ``create_app(policy, settings) -> FastAPI``.
"""
