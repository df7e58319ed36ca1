"""Load and validate an exported routerl policy file (docs/contracts.md §2): the one loader.

Both the service (``serving``) and the training side (``policies.export``, tests) load the
artifact through :func:`load_policy`. It needs only torch: nothing of ``data`` (the featurizer),
scipy or the training packages is imported, so a policy can be loaded, checked and served from a
process that has only torch installed. ``torch.jit.load`` reads TorchScript archives with its
own restricted loader; nothing here unpickles arbitrary objects.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from policies.policy_file import (
    MAX_POLICY_BYTES,
    REQUIRED_METADATA,
    PolicyError,
    check_arms,
    metadata_weight_range,
    parse_metadata,
    price_rows,
    read_policy_bytes,
    version_of,
)

__all__ = [
    "MAX_POLICY_BYTES",
    "METADATA_FILE",
    "REQUIRED_METADATA",
    "LoadedPolicy",
    "PolicyError",
    "load_policy",
    "quiet_jit",
]

#: Name of the extra file inside the TorchScript archive that holds the metadata JSON.
METADATA_FILE = "metadata.json"

#: Text queries every text policy is asked to score once when it is loaded.
_PROBE_QUERIES = ["", "routerl smoke test"]

@contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence torch's "`torch.jit.*` is deprecated" warning, and nothing else.

    TorchScript is the artifact contract (docs/contracts.md §2); the warning says nothing a user can
    act on.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        yield


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated policy artifact and what a reader needs to know about it.

    Attributes:
        path: the file it was loaded from.
        module: the TorchScript module (only its contract methods are called).
        models: the arms, in index order (``module.models()``).
        default_cost_weight: ``module.default_cost_weight()``, finite and >= 0.
        score_kind: metadata ``score_kind`` (``"utility"`` or ``"logit"``).
        input_kind: metadata ``input_kind`` (``"text"`` or ``"embedding"``).
        version: first 12 hex characters of the sha256 of the file's bytes.
        fingerprint: metadata ``data_fingerprint`` (the training data's fingerprint).
        cost_weight_range: metadata ``cost_weight_range`` as ``(low, high)``.
        metadata: the whole metadata JSON object.
        cost_mode: metadata ``cost_mode``: ``"tokens"`` (the policy prices predicted tokens with a
            table that :meth:`set_prices` replaces) or ``"usd"`` (also for files without the key).
        has_costs: the module has ``scores_costs`` and ``costs`` (files written before them lack both).
    """

    path: Path
    module: torch.jit.ScriptModule = field(repr=False)
    models: tuple[str, ...]
    default_cost_weight: float
    score_kind: str
    input_kind: str
    version: str
    fingerprint: str
    cost_weight_range: tuple[float, float]
    metadata: dict[str, Any] = field(repr=False)
    cost_mode: str = "usd"
    has_costs: bool = False

    @property
    def info(self) -> dict[str, str]:
        """The ``policy`` object of the HTTP responses: ``{"version", "fingerprint"}``."""
        return {"version": self.version, "fingerprint": self.fingerprint}

    @property
    def engine(self) -> str:
        """What scores with it: ``"torchscript"`` (:class:`policies.native.NativePolicy` says ``"native"``)."""
        return "torchscript"

    def rule_mask(self, queries: list[str]) -> torch.Tensor:
        """(N, K) bool: the models the rule overrides allow each query (the module's ``rule_mask``, §2.9)."""
        with torch.inference_mode():
            return self.module.rule_mask(queries)

    def objectives(self) -> list[str]:
        """The objectives a weight may be given for (docs/contracts.md §2.13); ``["usd"]`` for a file
        exported before they existed."""
        if not hasattr(self.module, "objectives"):
            return ["usd"]
        names: list[str] = self.module.objectives()
        return names

    @cached_property
    def estimated_objectives(self) -> tuple[str, ...]:
        """The objectives beside USD the policy estimates, in the order of its columns (§2.13)."""
        if not hasattr(self.module, "scores_objective_costs"):  # a file from before §2.13, or not routerl's
            return ()
        return tuple(o["name"] for o in self.metadata.get("objectives", []) if o["name"] not in ("usd", "carbon"))

    def score_objective_costs(self, queries: list[str], cost_weight: float | Mapping[str, float]) -> torch.Tensor:
        """``[N, (2 + J)K]`` float32: :meth:`score_costs`, then the objective costs flattened objective by
        objective (the module's ``scores_objective_costs``; :meth:`score_costs` for a USD-only policy)."""
        if not self.estimated_objectives:
            return self.score_costs(queries, cost_weight)
        with torch.inference_mode():
            return self.module.scores_objective_costs(queries, _weights(cost_weight))

    def objective_costs(self, queries: list[str]) -> torch.Tensor:
        """``[N, J, K]`` float32 predicted costs beside USD, in :meth:`objectives` order after ``usd``."""
        if not hasattr(self.module, "objective_costs"):
            return torch.zeros(len(queries), 0, len(self.models))
        with torch.inference_mode():
            return self.module.objective_costs(queries)

    def scores(self, queries: list[str], cost_weight: float | Mapping[str, float]) -> torch.Tensor:
        """Per-model scores ``[N, K]`` (float32, higher is better) for text ``queries``, at the USD weight
        or a weight per objective (§2.13).

        Runs under ``torch.inference_mode()``; a TorchScript module may be called from several
        threads at once for inference, so no lock is taken.
        """
        with torch.inference_mode():
            return self.module.scores(queries, _weights(cost_weight))

    def score_costs(self, queries: list[str], cost_weight: float | Mapping[str, float]) -> torch.Tensor:
        """``[N, 2K]`` float32: the scores as :meth:`scores` in the first K columns, the predicted
        USD cost per model in the last K (the module's ``scores_costs``).

        One featurization for both; only for a policy that :attr:`has_costs`.
        """
        with torch.inference_mode():
            return self.module.scores_costs(queries, _weights(cost_weight))

    def prices_table(self) -> dict[str, tuple[float, float]]:
        """The policy's price table: model → (USD per 1M input, per 1M output tokens); {} in "usd" mode."""
        if self.cost_mode != "tokens":
            return {}
        rows: list[list[float]] = self.module.prices().tolist()
        return {model: (row[0], row[1]) for model, row in zip(self.models, rows)}

    def set_prices(self, table: Mapping[str, tuple[float, float]]) -> None:
        """Replace the policy's prices with ``table`` (model → (input, output) USD per 1M tokens), in place.

        The next :meth:`scores`, :meth:`score_costs` and ``route`` use them: no retraining, no
        reload. The table must name exactly the policy's models, each with two finite prices >= 0.

        Raises:
            PolicyError: (one line) the policy is in "usd" mode, the table lacks one of the
                policy's models or names one it lacks, or a price is not a finite number >= 0.
        """
        rows = price_rows(self.path, self.cost_mode, self.models, table)
        try:
            self.module.set_prices(torch.tensor(rows, dtype=torch.float64))
        except Exception as exc:  # TorchScript raises its ValueError as torch.jit.Error, message last
            raise PolicyError(f"set_prices() refused the table: {str(exc).strip().splitlines()[-1]}") from None


def _weights(weights: float | Mapping[str, float]) -> float | dict[str, float]:
    """What the module's methods take: a float, or a dict of str to float (TorchScript accepts no other kinds)."""
    if isinstance(weights, Mapping):
        return {str(name): float(value) for name, value in weights.items()}
    return float(weights)


def one_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, shortened to ``limit`` characters."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def load_module(data: bytes) -> tuple[torch.jit.ScriptModule, str]:
    """``torch.jit.load`` the bytes; return the module and the raw metadata text."""
    extra_files: dict[str, Any] = {METADATA_FILE: ""}
    try:
        with quiet_jit():
            module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra_files)
    except Exception as exc:  # torch raises RuntimeError and others for corrupt archives
        raise PolicyError(f"not a TorchScript policy ({one_line(exc)})") from None
    raw = extra_files[METADATA_FILE]
    return module, raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _check_module(module: torch.jit.ScriptModule, meta: dict[str, Any]) -> tuple[list[str], float]:
    """Call the contract methods once; return ``(models, default_cost_weight)``.

    A text policy also scores two probe queries, so that a policy that cannot score text is
    refused when it is loaded rather than on the first request.
    """
    for name in ("models", "default_cost_weight", "scores", "route"):
        if not hasattr(module, name):
            raise PolicyError(f"the module has no {name}() method")
    try:
        models = module.models()
        default_cost_weight = module.default_cost_weight()
    except Exception as exc:  # a TorchScript error is a plain RuntimeError subclass
        raise PolicyError(f"models()/default_cost_weight() failed: {one_line(exc)}") from None
    default_cost_weight = check_arms(models, default_cost_weight, meta, "models()")
    if meta["input_kind"] == "text":
        try:
            with torch.inference_mode():
                out = module.scores(_PROBE_QUERIES, float(default_cost_weight))
        except Exception as exc:
            raise PolicyError(f"scores() failed on a text query: {one_line(exc)}") from None
        if (
            not isinstance(out, torch.Tensor)
            or out.dtype != torch.float32
            or tuple(out.shape) != (len(_PROBE_QUERIES), len(models))
        ):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise PolicyError(f"scores() must return a float32 tensor of shape [N, {len(models)}], got {shape}")
    return models, float(default_cost_weight)


def _check_prices(module: torch.jit.ScriptModule, meta: dict[str, Any], n_models: int) -> None:
    """A "tokens" policy must carry a (K, 2) price table (docs/contracts.md §2.10)."""
    if meta.get("cost_mode", "usd") != "tokens":
        return
    table = module.prices() if hasattr(module, "prices") else None
    if not isinstance(table, torch.Tensor) or tuple(table.shape) != (n_models, 2):
        raise PolicyError(f"metadata cost_mode is 'tokens' but prices() is not a ({n_models}, 2) table")


def load_policy(path: str | Path) -> LoadedPolicy:
    """Load ``path`` as a routerl policy and check it against docs/contracts.md §2.

    The file is read once; the version hash and the loaded module come from the same bytes, so
    a file replaced while it is loaded cannot give a module and a version that disagree.

    Raises:
        PolicyError: the file is missing, unreadable, or not a valid routerl policy. The
            message names the file and says what is wrong, in one line.
    """
    path = Path(path)
    return policy_from_bytes(path, read_policy_bytes(path))


def policy_from_bytes(path: Path, data: bytes) -> LoadedPolicy:
    """:func:`load_policy` of bytes already read from ``path`` (which names the file in errors)."""
    try:
        module, raw = load_module(data)
        meta = parse_metadata(raw)
        models, default_cost_weight = _check_module(module, meta)
        cost_weight_range = metadata_weight_range(meta)
        _check_prices(module, meta, len(models))
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None
    return LoadedPolicy(
        path=path,
        module=module,
        models=tuple(models),
        default_cost_weight=default_cost_weight,
        score_kind=meta["score_kind"],
        input_kind=meta["input_kind"],
        version=version_of(data),
        fingerprint=meta["data_fingerprint"],
        cost_weight_range=cost_weight_range,
        metadata=meta,
        cost_mode=meta.get("cost_mode", "usd"),
        has_costs=hasattr(module, "scores_costs"),
    )
