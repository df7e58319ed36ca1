"""The policy the service routes with, and its atomic hot reload.

Loading and checking the artifact is the job of :mod:`policies.artifact` (``--engine
torchscript``: ``policy.pt``) or :mod:`policies.native` (``--engine native``, the default: its
portable twin ``policy.safetensors``, scored with numpy); never the training code. Both give the
same face (:data:`ServingPolicy`). The service adds what serving needs: the policy must route text
(``input_kind`` ``"text"``) and must still know every model that ``--backends`` and
``--fallback-model`` (and ``--explore-floor-models``) name, so that a reload can never leave a
backend without a model; the models of ``--explore-new-models`` are exempt (their backends
serve them whether or not the policy knows them, :meth:`serving.settings.Settings.required_models`).

A reload names any path, so the loader reads only a regular file of at most
:data:`policies.artifact.MAX_POLICY_BYTES` (a FIFO, a device, a directory or a larger file is
refused without being read), and a reload that takes longer than :data:`RELOAD_TIMEOUT_S` (a
file on a hung network mount) is refused; either way the old policy keeps serving and the next
reload is not held up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path

import anyio
import anyio.to_thread

from policies.artifact import LoadedPolicy, PolicyError, load_policy
from policies.native import NativePolicy, load_native_policy

__all__ = [
    "RELOAD_TIMEOUT_S",
    "LoadedPolicy",
    "NativePolicy",
    "PolicyError",
    "PolicySlot",
    "ServingPolicy",
    "check_serving_policy",
    "load_engine_policy",
    "load_serving_policy",
]

#: Seconds a reload may take to read, load and check the new file; then it is refused.
RELOAD_TIMEOUT_S = 60.0

#: A policy the service routes with: the TorchScript artifact or its native twin (the same methods).
ServingPolicy = LoadedPolicy | NativePolicy


def load_engine_policy(path: str | Path, engine: str) -> ServingPolicy:
    """Load ``path`` for ``engine`` (``native``: its portable twin; ``torchscript``: the file itself)."""
    return load_native_policy(path) if engine == "native" else load_policy(path)


def check_serving_policy(
    loaded: ServingPolicy, required_models: Iterable[str] = (), needs_costs: bool = False
) -> ServingPolicy:
    """Return ``loaded`` if this service can route with it.

    Raises:
        PolicyError: it does not route text, lacks one of ``required_models``, or (``needs_costs``:
            a live budget) predicts no costs; one line that names the file.
    """
    if needs_costs and not loaded.has_costs:
        raise PolicyError(
            f"{loaded.path}: it predicts no costs (no scores_costs(): exported by an older routerl); "
            "a live budget needs them: export the policy again with this version"
        )
    if loaded.input_kind != "text":
        raise PolicyError(
            f"{loaded.path}: its input_kind is {loaded.input_kind!r}; this service routes text "
            "queries and needs a policy with input_kind 'text'"
        )
    missing = [name for name in required_models if name not in loaded.models]
    if missing:
        raise PolicyError(
            f"{loaded.path}: it lacks model(s) {missing} that --backends, --fallback-model, "
            f"--explore-floor-models or --tenants name; its models are {list(loaded.models)}"
        )
    return loaded


def load_serving_policy(
    path: str | Path, required_models: Iterable[str] = (), needs_costs: bool = False, engine: str = "native"
) -> ServingPolicy:
    """Load ``path`` for ``engine`` (:func:`load_engine_policy`) and :func:`check_serving_policy` it."""
    return check_serving_policy(load_engine_policy(path, engine), required_models, needs_costs)


class PolicySlot:
    """Holds the serving policy; :meth:`reload` swaps in a new one atomically.

    A request reads :attr:`current` once and uses that policy to the end, so a reload never
    changes the policy under a request in flight. The new file is loaded and checked in a worker
    thread (the event loop keeps serving meanwhile) and only then assigned, in one step; a file
    that fails the checks leaves the old policy in place. Reloads are serialized; one that does
    not finish within ``timeout_s`` is refused and its thread abandoned (it can only end in a
    discarded result), so that a stuck read cannot hold up every later reload.
    """

    def __init__(
        self,
        policy: ServingPolicy,
        required_models: Iterable[str] = (),
        needs_costs: bool = False,
        prepare: Callable[[ServingPolicy], object] | None = None,
        timeout_s: float = RELOAD_TIMEOUT_S,
    ) -> None:
        """Serve ``policy``; every later policy is loaded for the same engine, must know
        ``required_models`` (and predict costs if ``needs_costs``), load within ``timeout_s``, and is
        passed to ``prepare`` (the service's prices, :mod:`serving.pricing`) before it serves."""
        self.current = policy
        self.engine = policy.engine
        self.required_models = tuple(required_models)
        self.needs_costs = needs_costs
        self.prepare = prepare
        self.timeout_s = timeout_s
        self._lock = asyncio.Lock()

    async def reload(self, path: str | Path | None = None) -> ServingPolicy:
        """Load ``path`` (default: the current policy's file again) and swap it in.

        Raises:
            PolicyError: the file was refused, or not loaded in time; the current policy is unchanged.
        """
        async with self._lock:
            target = Path(path) if path is not None else self.current.path
            try:
                with anyio.fail_after(self.timeout_s):
                    loaded = await anyio.to_thread.run_sync(
                        load_serving_policy,
                        target,
                        self.required_models,
                        self.needs_costs,
                        self.engine,
                        abandon_on_cancel=True,
                    )
            except TimeoutError:
                raise PolicyError(f"{target}: not loaded within {self.timeout_s:g} s (a hung file system?)") from None
            if self.prepare is not None:
                self.prepare(loaded)
            self.current = loaded
            return loaded
