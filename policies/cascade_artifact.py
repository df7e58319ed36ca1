"""An exported cascade (``kind`` "cascade", docs/contracts.md §7.4), loaded and checked for a service.

:mod:`policies.cascade_policy` writes the file; this module reads it back the way
:func:`policies.artifact.load_policy` reads a routing policy: the bytes once (the version is
their hash), the metadata checked, and one probe step taken, so that a file that cannot decide is
refused when it is loaded rather than on the first request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from policies.artifact import load_module, one_line
from policies.policy_file import PolicyError, check_arms, parse_metadata, read_policy_bytes, version_of

#: The metadata's ``kind`` of a cascade file (:mod:`policies.cascade_policy` writes it).
CASCADE_KIND = "cascade"
#: The step API's two actions.
ACTIONS = ("call", "return")


@dataclass(frozen=True)
class CascadeStep:
    """One decision of a cascade: ``call`` a model or ``return`` its answer, and the action's probability."""

    action: str
    model: str
    probability: float


@dataclass(frozen=True)
class LoadedCascade:
    """A cascade file: its TorchScript module, models, default cost weight, version and limit of calls."""

    path: Path
    module: torch.jit.ScriptModule
    models: tuple[str, ...]
    default_cost_weight: float
    version: str
    max_calls: int

    def step(self, query: str, called: list[str], responses: list[str], cost_weight: float) -> CascadeStep:
        """The next step after ``called`` models answered ``responses``.

        Raises:
            ValueError: the module refused its inputs (a model it does not know or called twice, more
                calls than ``max_calls``, a bad cost weight), with the module's own message.
        """
        try:
            with torch.inference_mode():
                action, model, probability = self.module.step(query, called, responses, cost_weight)
        except torch.jit.Error as exc:  # what the scripted module raised, wrapped by the interpreter
            raise ValueError(_script_message(exc)) from None
        return CascadeStep(action, model, probability)


def _script_message(exc: BaseException) -> str:
    """The message a scripted module raised: the interpreter's last line, without the exception's type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    last = lines[-1] if lines else type(exc).__name__
    return last.split(": ", 1)[1] if last.startswith("builtins.") and ": " in last else last


def load_cascade(path: str | Path) -> LoadedCascade:
    """Load ``path`` as an exported cascade; PolicyError in one line naming the file otherwise."""
    path = Path(path)
    data = read_policy_bytes(path)
    version = version_of(data)
    try:
        module, raw = load_module(data)
        meta = parse_metadata(raw)
        if meta.get("kind") != CASCADE_KIND:
            raise PolicyError("it is not a cascade (metadata kind is not 'cascade'): export one with "
                              "python -m training.cascade")
        if not hasattr(module, "step"):
            raise PolicyError("the module has no step() method")
        try:
            models, weight = module.models(), module.default_cost_weight()
            weight = check_arms(models, weight, meta, "models()")
            probe = LoadedCascade(path, module, tuple(models), weight, version, 1).step(
                "routerl smoke test", [], [], weight
            )
        except (RuntimeError, ValueError, torch.jit.Error) as exc:
            raise PolicyError(f"its first step failed: {one_line(exc)}") from None
        if probe.action != "call" or probe.model not in models:
            raise PolicyError(f"its first step must call a model of its own, got {probe.action} {probe.model!r}")
        max_calls = meta.get("cascade", {}).get("max_calls", len(models))
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None
    return LoadedCascade(path, module, tuple(models), weight, version, int(max_calls))
