"""Load and validate an exported routerl policy (CONTRACTS.md §2) for serving.

Only the artifact's contract is used: ``torch.jit.load`` with the ``metadata.json`` extra file,
``models()``, ``default_cost_weight()`` and ``scores(queries, cost_weight)``. Nothing of the
training code is imported, so a policy can be served from a process that has only torch.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: Metadata keys the service needs (the exporter writes more; see CONTRACTS.md §2).
REQUIRED_METADATA_KEYS: tuple[str, ...] = ("score_kind", "input_kind", "data_fingerprint")

#: Characters of the file's sha256 that make the policy "version".
VERSION_CHARS = 12


class PolicyError(Exception):
    """The file is missing, unreadable or not a valid routerl policy (a user error, exit 2)."""


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated policy artifact and what the service reports about it.

    Attributes:
        path: the file it was loaded from.
        module: the TorchScript module (only its contract methods are called).
        models: the arms, in index order (``module.models()``).
        default_cost_weight: ``module.default_cost_weight()``, finite and >= 0.
        score_kind: metadata ``score_kind`` (``"utility"`` or ``"logit"``).
        version: first 12 hex characters of the sha256 of the file's bytes.
        fingerprint: metadata ``data_fingerprint`` (the training data's fingerprint).
        cost_weight_range: metadata ``cost_weight_range`` as ``(low, high)``, if present.
        metadata: the whole metadata JSON object.
    """

    path: Path
    module: torch.jit.ScriptModule
    models: tuple[str, ...]
    default_cost_weight: float
    score_kind: str
    version: str
    fingerprint: str
    cost_weight_range: tuple[float, float] | None
    metadata: dict[str, Any] = field(repr=False)

    @property
    def info(self) -> dict[str, str]:
        """The ``policy`` object of the HTTP responses: ``{"version", "fingerprint"}``."""
        return {"version": self.version, "fingerprint": self.fingerprint}

    def scores(self, queries: list[str], cost_weight: float) -> torch.Tensor:
        """Per-model scores ``[N, K]`` (float32, higher is better) for ``queries``.

        Runs under ``torch.inference_mode()``; TorchScript modules may be called from several
        threads at once for inference, so no lock is taken.
        """
        with torch.inference_mode():
            return self.module.scores(queries, float(cost_weight))


def _one_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, shortened to ``limit`` characters."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _load_module(data: bytes) -> tuple[torch.jit.ScriptModule, str]:
    """``torch.jit.load`` the bytes; return the module and the raw ``metadata.json`` text.

    Only torch's deprecation warning for ``torch.jit.load`` is silenced, and only here.
    """
    extra_files: dict[str, Any] = {"metadata.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.load` is deprecated", category=DeprecationWarning
        )
        module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra_files)
    raw = extra_files["metadata.json"]
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    return module, raw


def _parse_metadata(raw: str) -> dict[str, Any]:
    """Parse and check the metadata JSON; raise :class:`PolicyError` on any problem."""
    if not raw:
        raise PolicyError("it has no metadata.json")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise PolicyError(f"its metadata.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise PolicyError("its metadata.json is not a JSON object")
    missing = [key for key in REQUIRED_METADATA_KEYS if key not in meta]
    if missing:
        raise PolicyError(f"its metadata.json lacks {', '.join(missing)}")
    for key in REQUIRED_METADATA_KEYS:
        if not isinstance(meta[key], str) or not meta[key]:
            raise PolicyError(f"metadata {key!r} must be a non-empty string")
    if meta["input_kind"] != "text":
        raise PolicyError(
            f"its input_kind is {meta['input_kind']!r}; this service routes text queries "
            "and needs a policy with input_kind 'text'"
        )
    return meta


def _cost_weight_range(meta: dict[str, Any]) -> tuple[float, float] | None:
    """Metadata ``cost_weight_range`` as a pair of floats, or None when absent."""
    value = meta.get("cost_weight_range")
    if value is None:
        return None
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not value[0] <= value[1]
    ):
        raise PolicyError(f"metadata cost_weight_range must be [low, high], got {value!r}")
    return float(value[0]), float(value[1])


def _check_module(module: torch.jit.ScriptModule, meta: dict[str, Any]) -> tuple[list[str], float]:
    """Call the contract methods once; return ``(models, default_cost_weight)``."""
    for name in ("models", "default_cost_weight", "scores"):
        if not hasattr(module, name):
            raise PolicyError(f"the module has no {name}() method")
    try:
        models = module.models()
        default_cost_weight = module.default_cost_weight()
    except Exception as exc:  # a TorchScript error is a plain RuntimeError subclass
        raise PolicyError(
            f"calling models()/default_cost_weight() failed: {_one_line(exc)}"
        ) from None
    if (
        not isinstance(models, list)
        or not models
        or not all(isinstance(m, str) and m for m in models)
        or len(set(models)) != len(models)
    ):
        raise PolicyError(f"models() must be a non-empty list of distinct names, got {models!r}")
    if "models" in meta and meta["models"] != models:
        raise PolicyError("metadata models differ from models()")
    if (
        not isinstance(default_cost_weight, float | int)
        or not math.isfinite(default_cost_weight)
        or default_cost_weight < 0
    ):
        raise PolicyError(
            f"default_cost_weight() must be finite and >= 0, got {default_cost_weight!r}"
        )
    probe = ["", "routerl smoke test"]
    try:
        with torch.inference_mode():
            out = module.scores(probe, float(default_cost_weight))
    except Exception as exc:
        raise PolicyError(f"scores() failed on a text query: {_one_line(exc)}") from None
    if (
        not isinstance(out, torch.Tensor)
        or out.dtype != torch.float32
        or tuple(out.shape) != (len(probe), len(models))
    ):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PolicyError(
            f"scores() must return a float32 tensor of shape [N, {len(models)}], got {shape}"
        )
    return models, float(default_cost_weight)


def load_policy(path: str | Path) -> LoadedPolicy:
    """Load ``path`` as a routerl policy and check it against CONTRACTS.md §2.

    The file is read once; the version hash and the loaded module come from the same bytes.

    Raises:
        PolicyError: the file is missing, unreadable, or not a valid routerl text policy.
            The message names the file and says what is wrong, in one line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(f"policy file not found: {path}") from None
    except IsADirectoryError:
        raise PolicyError(f"policy path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror or exc}") from None
    try:
        try:
            module, raw = _load_module(data)
        except Exception as exc:
            raise PolicyError(f"it is not a TorchScript file ({_one_line(exc)})") from None
        meta = _parse_metadata(raw)
        models, default_cost_weight = _check_module(module, meta)
        cost_weight_range = _cost_weight_range(meta)
    except PolicyError as exc:
        raise PolicyError(f"{path} is not a valid routerl policy: {exc}") from None
    return LoadedPolicy(
        path=path,
        module=module,
        models=tuple(models),
        default_cost_weight=default_cost_weight,
        score_kind=meta["score_kind"],
        version=hashlib.sha256(data).hexdigest()[:VERSION_CHARS],
        fingerprint=meta["data_fingerprint"],
        cost_weight_range=cost_weight_range,
        metadata=meta,
    )
