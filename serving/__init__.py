"""HTTP router service for an exported routerl policy (CONTRACTS.md §4).

The service needs only torch, FastAPI/uvicorn and the TorchScript artifact: it never imports
the training packages (``data``, ``envs``, ``agents``, ``evaluation``, ``training``).

Modules (imported explicitly, so that ``import serving.settings`` stays light):
- :mod:`serving.settings` -- the service flags as a typed dataclass.
- :mod:`serving.policy` -- load and validate a ``policy.pt`` into a small typed wrapper (torch).
- :mod:`serving.errors` -- the one error body format and the exception handlers (FastAPI).
- :mod:`serving.app` -- ``create_app(policy_path, settings) -> FastAPI``.
"""
