"""Load and validate an exported routerl policy file (docs/contracts.md §2): the one loader.

Both the service (``serving``) and the training side (``policies.export``, tests) load the
artifact through :func:`load_policy`. It needs only torch: nothing of ``data`` (the featurizer),
scipy or the training packages is imported, so a policy can be loaded, checked and served from a
process that has only torch installed. ``torch.jit.load`` reads TorchScript archives with its
own restricted loader; nothing here unpickles arbitrary objects.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import stat
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: Name of the extra file inside the TorchScript archive that holds the metadata JSON.
METADATA_FILE = "metadata.json"

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

#: Characters of the file's sha256 that make the policy "version".
VERSION_CHARS = 12

#: Largest policy file the loader reads, in bytes: far above any policy routerl writes (tens of
#: MB), low enough that a wrong path (a disk image, a huge sparse file) cannot exhaust memory.
MAX_POLICY_BYTES = 2 * 1024**3

#: Text queries every text policy is asked to score once when it is loaded.
_PROBE_QUERIES = ["", "routerl smoke test"]

#: Metadata ``cost_mode`` values (docs/contracts.md §2.10); a file without the key is "usd".
COST_MODES: tuple[str, ...] = ("usd", "tokens")


class PolicyError(Exception):
    """The file is missing, unreadable or not a valid routerl policy (a user error)."""


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

    def scores(self, queries: list[str], cost_weight: float) -> torch.Tensor:
        """Per-model scores ``[N, K]`` (float32, higher is better) for text ``queries``.

        Runs under ``torch.inference_mode()``; a TorchScript module may be called from several
        threads at once for inference, so no lock is taken.
        """
        with torch.inference_mode():
            return self.module.scores(queries, float(cost_weight))

    def score_costs(self, queries: list[str], cost_weight: float) -> torch.Tensor:
        """``[N, 2K]`` float32: the scores as :meth:`scores` in the first K columns, the predicted
        USD cost per model in the last K (the module's ``scores_costs``).

        One featurization for both; only for a policy that :attr:`has_costs`.
        """
        with torch.inference_mode():
            return self.module.scores_costs(queries, float(cost_weight))

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
        if self.cost_mode != "tokens":
            raise PolicyError(
                f"{self.path}: this policy was trained on USD costs (cost_mode 'usd'); it has no price table to replace"
            )
        missing = [model for model in self.models if model not in table]
        unknown = sorted(str(model) for model in table if model not in self.models)
        if missing:
            raise PolicyError(f"the price table lacks the policy's model(s) {', '.join(missing)}")
        if unknown:
            raise PolicyError(f"the price table names model(s) {', '.join(unknown)} that the policy does not route to")
        rows = [_price_row(model, table[model]) for model in self.models]
        try:
            self.module.set_prices(torch.tensor(rows, dtype=torch.float64))
        except Exception as exc:  # TorchScript raises its ValueError as torch.jit.Error, message last
            raise PolicyError(f"set_prices() refused the table: {str(exc).strip().splitlines()[-1]}") from None


def _price_row(model: str, prices: Any) -> list[float]:
    """``(input, output)`` USD per 1M tokens of ``model`` as two finite floats >= 0; PolicyError otherwise."""
    try:
        row = [float(price) for price in prices if not isinstance(price, bool)]
    except (TypeError, ValueError):
        row = []
    if len(row) != 2 or len(prices) != 2 or not all(math.isfinite(price) and price >= 0 for price in row):
        raise PolicyError(f"model {model!r}: prices must be two finite numbers >= 0 (input, output USD per 1M tokens)")
    return row


def _one_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, shortened to ``limit`` characters."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _load_module(data: bytes) -> tuple[torch.jit.ScriptModule, str]:
    """``torch.jit.load`` the bytes; return the module and the raw metadata text."""
    extra_files: dict[str, Any] = {METADATA_FILE: ""}
    try:
        with quiet_jit():
            module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra_files)
    except Exception as exc:  # torch raises RuntimeError and others for corrupt archives
        raise PolicyError(f"not a TorchScript policy ({_one_line(exc)})") from None
    raw = extra_files[METADATA_FILE]
    return module, raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _parse_metadata(raw: str) -> dict[str, Any]:
    """Parse the metadata JSON and check the required keys and their types."""
    if not raw:
        raise PolicyError(f"it has no {METADATA_FILE}")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise PolicyError(f"its {METADATA_FILE} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise PolicyError(f"its {METADATA_FILE} is not a JSON object")
    missing = [key for key in REQUIRED_METADATA if key not in meta]
    if missing:
        raise PolicyError(f"metadata lacks {', '.join(missing)}")
    if meta.get("cost_mode", "usd") not in COST_MODES:
        raise PolicyError(f"metadata cost_mode must be one of {', '.join(COST_MODES)}, got {meta['cost_mode']!r}")
    for key in _STRING_METADATA:
        if not isinstance(meta[key], str) or not meta[key]:
            raise PolicyError(f"metadata {key!r} must be a non-empty string")
    return meta


def _cost_weight_range(meta: dict[str, Any]) -> tuple[float, float]:
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
        raise PolicyError(f"models()/default_cost_weight() failed: {_one_line(exc)}") from None
    if (
        not isinstance(models, list)
        or not models
        or not all(isinstance(m, str) and m for m in models)
        or len(set(models)) != len(models)
    ):
        raise PolicyError(f"models() must be a non-empty list of distinct names, got {models!r}")
    if meta["models"] != models:
        raise PolicyError("metadata models differ from models()")
    if (
        not isinstance(default_cost_weight, float | int)
        or not math.isfinite(default_cost_weight)
        or default_cost_weight < 0
    ):
        raise PolicyError(f"default_cost_weight() must be finite and >= 0, got {default_cost_weight!r}")
    if meta["input_kind"] == "text":
        try:
            with torch.inference_mode():
                out = module.scores(_PROBE_QUERIES, float(default_cost_weight))
        except Exception as exc:
            raise PolicyError(f"scores() failed on a text query: {_one_line(exc)}") from None
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


def _check_regular_file(path: Path, status: os.stat_result) -> None:
    """Refuse what is not a regular file of at most :data:`MAX_POLICY_BYTES`."""
    if stat.S_ISDIR(status.st_mode):
        raise PolicyError(f"{path}: is a directory, not a policy file")
    if not stat.S_ISREG(status.st_mode):
        raise PolicyError(f"{path}: not a regular file (a FIFO, socket or device); a policy is a file")
    if status.st_size > MAX_POLICY_BYTES:
        raise PolicyError(f"{path}: {status.st_size} bytes, over the limit of {MAX_POLICY_BYTES} for a policy file")


def _read_policy_file(path: Path) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most :data:`MAX_POLICY_BYTES`.

    Why so careful: a reload names any path. The path is checked before it is opened (opening a
    FIFO or a device may block or act), opened without blocking, checked again on the open file
    (the path may have changed in between), and read up to one byte over the limit, so that a
    file that grows while it is read cannot exhaust memory either.
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


def load_policy(path: str | Path) -> LoadedPolicy:
    """Load ``path`` as a routerl policy and check it against docs/contracts.md §2.

    The file is read once; the version hash and the loaded module come from the same bytes, so
    a file replaced while it is loaded cannot give a module and a version that disagree.

    Raises:
        PolicyError: the file is missing, unreadable, or not a valid routerl policy. The
            message names the file and says what is wrong, in one line.
    """
    path = Path(path)
    data = _read_policy_file(path)
    try:
        module, raw = _load_module(data)
        meta = _parse_metadata(raw)
        models, default_cost_weight = _check_module(module, meta)
        cost_weight_range = _cost_weight_range(meta)
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
        version=hashlib.sha256(data).hexdigest()[:VERSION_CHARS],
        fingerprint=meta["data_fingerprint"],
        cost_weight_range=cost_weight_range,
        metadata=meta,
        cost_mode=meta.get("cost_mode", "usd"),
        has_costs=hasattr(module, "scores_costs"),
    )
