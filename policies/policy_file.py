"""Reading a policy file safely, and its version: what both engines' loaders share (torch-free).

:func:`read_policy_bytes` reads the bytes of a policy file (``policy.pt`` for the TorchScript engine,
``policy.safetensors`` for the native one, docs/contracts.md §2.11) with the same care, and
:func:`version_of` names the policy by those bytes; :func:`check_metadata` and :func:`price_rows` check
what both engines take. Nothing here imports torch, so the native engine
(:mod:`policies.native`) loads a policy in a process without it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Characters of the file's sha256 that make the policy "version".
VERSION_CHARS = 12

#: Largest policy file the loaders read, in bytes: far above any policy routerl writes (tens of
#: MB), low enough that a wrong path (a disk image, a huge sparse file) cannot exhaust memory.
MAX_POLICY_BYTES = 2 * 1024**3


class PolicyError(Exception):
    """The file is missing, unreadable or not a valid routerl policy (a user error)."""


def version_of(data: bytes) -> str:
    """The policy "version" of a ``policy.pt``'s bytes: the first 12 hex characters of their sha256."""
    return hashlib.sha256(data).hexdigest()[:VERSION_CHARS]


def _check_regular_file(path: Path, status: os.stat_result) -> None:
    """Refuse what is not a regular file of at most :data:`MAX_POLICY_BYTES`."""
    if stat.S_ISDIR(status.st_mode):
        raise PolicyError(f"{path}: is a directory, not a policy file")
    if not stat.S_ISREG(status.st_mode):
        raise PolicyError(f"{path}: not a regular file (a FIFO, socket or device); a policy is a file")
    if status.st_size > MAX_POLICY_BYTES:
        raise PolicyError(f"{path}: {status.st_size} bytes, over the limit of {MAX_POLICY_BYTES} for a policy file")


def read_policy_bytes(path: Path) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most :data:`MAX_POLICY_BYTES`.

    Why so careful: a reload names any path. The path is checked before it is opened (opening a
    FIFO or a device may block or act), opened without blocking, checked again on the open file
    (the path may have changed in between), and read up to one byte over the limit, so that a
    file that grows while it is read cannot exhaust memory either.

    Raises:
        PolicyError: one line naming ``path``.
    """
    try:
        _check_regular_file(path, os.stat(path))
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as file:
            _check_regular_file(path, os.fstat(file.fileno()))
            data = file.read(MAX_POLICY_BYTES + 1)
    except FileNotFoundError:
        raise PolicyError(f"{path}: no such policy file") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file ({exc.strerror or exc})") from None
    except ValueError:  # os.stat refuses a NUL byte or a lone surrogate in the path
        raise PolicyError(f"{str(path)!r}: not a possible file path (a NUL byte or invalid Unicode)") from None
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(f"{path}: grew over the limit of {MAX_POLICY_BYTES} bytes for a policy file while read")
    return data


#: Metadata keys every policy file must have (docs/contracts.md §2).
REQUIRED_METADATA: tuple[str, ...] = (
    "models",
    "default_cost_weight",
    "cost_weight_range",
    "score_kind",
    "input_kind",
    "agent",
    "featurizer",
    "data_fingerprint",
    "metrics",
    "created_at",
    "routerl_version",
    "torch_version",
)

#: Metadata keys whose value must be a non-empty string.
_STRING_METADATA: tuple[str, ...] = ("score_kind", "input_kind", "data_fingerprint")

#: Metadata ``cost_mode`` values (docs/contracts.md §2.10); a file without the key is "usd".
COST_MODES: tuple[str, ...] = ("usd", "tokens")


def parse_metadata(raw: str, where: str = "metadata.json") -> dict[str, Any]:
    """Parse the metadata JSON (``where`` names it in errors) and :func:`check_metadata` it."""
    if not raw:
        raise PolicyError(f"it has no {where}")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise PolicyError(f"its {where} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise PolicyError(f"its {where} is not a JSON object")
    return check_metadata(meta)


def check_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` if it has the required keys with the right types (docs/contracts.md §2); PolicyError otherwise."""
    missing = [key for key in REQUIRED_METADATA if key not in meta]
    if missing:
        raise PolicyError(f"metadata lacks {', '.join(missing)}")
    if meta.get("cost_mode", "usd") not in COST_MODES:
        raise PolicyError(f"metadata cost_mode must be one of {', '.join(COST_MODES)}, got {meta['cost_mode']!r}")
    for key in _STRING_METADATA:
        if not isinstance(meta[key], str) or not meta[key]:
            raise PolicyError(f"metadata {key!r} must be a non-empty string")
    return meta


def check_arms(models: Any, default_cost_weight: Any, meta: dict[str, Any], where: str) -> float:
    """``models`` (from ``where``) must be a non-empty list of distinct names equal to the metadata's, and the
    default weight finite and >= 0; returns the weight. PolicyError otherwise (both engines' loaders)."""
    if (
        not isinstance(models, list)
        or not models
        or not all(isinstance(m, str) and m for m in models)
        or len(set(models)) != len(models)
    ):
        raise PolicyError(f"{where} must be a non-empty list of distinct names, got {models!r}")
    if meta["models"] != models:
        raise PolicyError(f"metadata models differ from {where}")
    if (
        not isinstance(default_cost_weight, float | int)
        or isinstance(default_cost_weight, bool)
        or not math.isfinite(default_cost_weight)
        or default_cost_weight < 0
    ):
        raise PolicyError(f"default_cost_weight must be finite and >= 0, got {default_cost_weight!r}")
    return float(default_cost_weight)


def metadata_weight_range(meta: dict[str, Any]) -> tuple[float, float]:
    """Metadata ``cost_weight_range`` as a pair of floats ``low <= high``."""
    value = meta["cost_weight_range"]
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not value[0] <= value[1]
    ):
        raise PolicyError(f"metadata cost_weight_range must be [low, high], got {value!r}")
    return float(value[0]), float(value[1])


def _price_row(model: str, prices: Any) -> list[float]:
    """``(input, output)`` USD per 1M tokens of ``model`` as two finite floats >= 0; PolicyError otherwise."""
    try:
        row = [float(price) for price in prices if not isinstance(price, bool)]
    except (TypeError, ValueError):
        row = []
    if len(row) != 2 or len(prices) != 2 or not all(math.isfinite(price) and price >= 0 for price in row):
        raise PolicyError(f"model {model!r}: prices must be two finite numbers >= 0 (input, output USD per 1M tokens)")
    return row


def price_rows(
    path: Path, cost_mode: str, models: Sequence[str], table: Mapping[str, tuple[float, float]]
) -> list[list[float]]:
    """``table`` (model → (input, output) USD per 1M tokens) as (K, 2) rows in ``models`` order (§2.10).

    Raises:
        PolicyError: (one line) the policy at ``path`` is in "usd" mode, the table lacks one of
            ``models`` or names another, or a price is not a finite number >= 0.
    """
    if cost_mode != "tokens":
        raise PolicyError(
            f"{path}: this policy was trained on USD costs (cost_mode 'usd'); it has no price table to replace"
        )
    missing = [model for model in models if model not in table]
    unknown = sorted(str(model) for model in table if model not in models)
    if missing:
        raise PolicyError(f"the price table lacks the policy's model(s) {', '.join(missing)}")
    if unknown:
        raise PolicyError(f"the price table names model(s) {', '.join(unknown)} that the policy does not route to")
    return [_price_row(model, table[model]) for model in models]
