"""The native engine: route from the portable policy file with numpy, without torch (docs/contracts.md §2.11).

:func:`load_native_policy` reads ``policy.safetensors`` (given it, or ``policy.pt`` beside which it
lies) and returns a :class:`NativePolicy`: the face of :class:`policies.artifact.LoadedPolicy` that
the service uses (``scores``, ``score_costs``, ``route``, ``rule_mask``, the price table), computed by
:mod:`policies.native_featurizer`, :mod:`policies.native_heads` and :mod:`policies.native_rules`.
Both compute in float64 (sums in another order); the decisions are the TorchScript artifact's and
the float32 scores agree to float32 rounding, which ``tests/test_native.py`` checks on the parity
inputs (docs/contracts.md §2.11).

Given ``policy.pt``, the twin is used only if it was written with exactly those bytes (its header
records their sha256), so that both engines serve the same policy under the same ``version``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policies.native_featurizer import NativeFeaturizer
from policies.native_heads import build_head, price_matrix
from policies.native_rules import NativeRuleSet
from policies.objective_weights import objective_names, read_weights
from policies.policy_file import (
    PolicyError,
    check_arms,
    check_metadata,
    metadata_weight_range,
    price_rows,
    read_policy_bytes,
)
from policies.portable import SUFFIX, PortablePolicy, check_header, read_portable, split_file, twin_path

logger = logging.getLogger("routerl.policies")

#: Vocabulary terms in the probe query of :func:`_probe` (so that it exercises the linear map).
PROBE_TERMS = 20


class NativePolicy:
    """A portable policy, ready to score text: the same attributes and methods as ``LoadedPolicy``.

    Attributes:
        path: the file the service names (``policy.pt``, or the ``.safetensors`` given directly).
        models, default_cost_weight, score_kind, input_kind, version, fingerprint,
        cost_weight_range, metadata, cost_mode, has_costs: as :class:`policies.artifact.LoadedPolicy`.
        engine: ``"native"``.
    """

    engine = "native"
    has_costs = True

    def __init__(self, path: Path, portable: PortablePolicy, version: str) -> None:
        meta = check_metadata(portable.metadata)
        arms = portable.header["arms"]
        self.path = path
        self.portable = portable
        self.metadata: dict[str, Any] = meta
        self.default_cost_weight = check_arms(arms["models"], arms["default_cost_weight"], meta, "arms.models")
        self.models: tuple[str, ...] = tuple(arms["models"])
        self.cost_weight_range = metadata_weight_range(meta)
        self._clamp = (
            (float(arms["cost_weight_range"][0]), float(arms["cost_weight_range"][1]))
            if arms["clamp_cost_weight"]
            else None
        )
        self.score_kind: str = meta["score_kind"]
        self.input_kind: str = meta["input_kind"]
        self.cost_mode: str = meta.get("cost_mode", "usd")
        self.version = version
        self.fingerprint: str = meta["data_fingerprint"]
        if self.input_kind != "text":
            raise PolicyError("its input_kind is not 'text': the native engine routes text only")
        self.featurizer = NativeFeaturizer(portable)
        # the costs beside USD (§2.13): z's last J·K columns, after the head's
        self._objectives: list[str] = list(arms.get("objectives", []))
        defaults = list(arms.get("objective_defaults", []))
        self._objective_defaults: list[float] = defaults or [0.0] * len(self._objectives)
        self._carbon_per_wh = float(arms.get("carbon_per_wh", 0.0))
        # the defaults as Arms keeps them: None when all are 0, so a bare USD weight scores as a USD-only policy
        self._default_extra = np.array(self._objective_defaults) if any(self._objective_defaults) else None
        #: The objectives beside USD the policy estimates, in the order of its columns (§2.13).
        self.estimated_objectives: tuple[str, ...] = tuple(self._objectives)
        self._head_width = portable.tensors["text_map"].shape[1] - len(self._objectives) * len(self.models)
        prices = portable.tensors.get("head.price_table")
        self._set_table(np.array(prices if prices is not None else np.zeros((0, 2)), dtype=np.float64))
        self._head = build_head(portable, lambda: self._priced[1])
        self._rules = NativeRuleSet(meta.get("rules") or [], self.models, self.featurizer.token_count)

    @property
    def info(self) -> dict[str, str]:
        """The ``policy`` object of the HTTP responses: ``{"version", "fingerprint"}``."""
        return {"version": self.version, "fingerprint": self.fingerprint}

    def objectives(self) -> list[str]:
        """The objectives a weight may be given for (§2.13): ``usd``, those estimated, and ``carbon`` with energy."""
        return objective_names(self._objectives, self._carbon_per_wh)

    def _weights(self, weights: float | Mapping[str, float]) -> tuple[float, np.ndarray | None]:
        """(the checked USD weight, the (J,) weights of the other objectives or None when all are 0), as
        the TorchScript policy's ``Arms.weights``."""
        if not isinstance(weights, Mapping):
            return self._weight(weights), self._default_extra
        usd, extra = read_weights(
            {str(name): float(value) for name, value in weights.items()},
            self.default_cost_weight,
            self._objectives,
            self._objective_defaults,
            self._carbon_per_wh,
        )
        return self._weight(usd), np.array(extra) if any(value > 0.0 for value in extra) else None

    def _weight(self, cost_weight: float) -> float:
        """The cost weight checked (finite, >= 0; ValueError otherwise) and clamped when the policy asks."""
        weight = float(cost_weight)
        if not math.isfinite(weight) or weight < 0.0:
            raise ValueError("cost_weight must be finite and >= 0 (quality given up per USD per query)")
        return min(max(weight, self._clamp[0]), self._clamp[1]) if self._clamp else weight

    def scores_costs64(
        self, queries: Sequence[str], cost_weight: float | Mapping[str, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, costs), both (N, K) float64, at the USD weight or a weight per objective (§2.13)."""
        scores, costs, _ = self._scored(queries, cost_weight)
        return scores, costs

    def _scored(
        self, queries: Sequence[str], cost_weight: float | Mapping[str, float]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores, costs, z) from one featurization: (N, K), (N, K) float64 and the hidden z (N, m)."""
        weight, extra = self._weights(cost_weight)
        if not queries:
            empty = np.zeros((0, len(self.models)))
            return empty, empty, np.zeros((0, self._head_width))
        z = self.featurizer.hidden(queries)
        if not self._objectives:
            return (*self._head(z, weight), z)
        scores, costs = self._head(z[:, : self._head_width], weight)
        if extra is not None:
            scores = scores - np.einsum("njk,j->nk", self._objective_part(z), extra)
        return scores, costs, z

    def _objective_part(self, z: np.ndarray) -> np.ndarray:
        """(N, J, K) the estimated costs beside USD, z's last J·K columns."""
        return z[:, self._head_width :].reshape(len(z), len(self._objectives), len(self.models))

    def score_objective_costs(self, queries: list[str], cost_weight: float | Mapping[str, float]) -> np.ndarray:
        """(N, (2 + J)K) float32: :meth:`score_costs`, then :meth:`objective_costs` flattened objective by objective."""
        scores, costs, z = self._scored(queries, cost_weight)
        return np.concatenate((scores, costs, z[:, self._head_width :] if self._objectives else z[:, :0]), axis=1,
                              dtype=np.float32)

    def objective_costs(self, queries: list[str]) -> np.ndarray:
        """(N, J, K) float32 predicted costs beside USD, in :meth:`objectives` order after ``usd`` (J = 0: none)."""
        if not queries:
            return np.zeros((0, len(self._objectives), len(self.models)), dtype=np.float32)
        return self._objective_part(self.featurizer.hidden(queries)).astype(np.float32)

    def scores(self, queries: list[str], cost_weight: float | Mapping[str, float]) -> np.ndarray:
        """Per-model scores (N, K) float32, higher is better (``score_kind``)."""
        return self.scores_costs64(queries, cost_weight)[0].astype(np.float32)

    def score_costs(self, queries: list[str], cost_weight: float | Mapping[str, float]) -> np.ndarray:
        """(N, 2K) float32: the scores, then the predicted USD cost per model (at the current prices)."""
        return np.concatenate(self.scores_costs64(queries, cost_weight), axis=1, dtype=np.float32)

    def rule_mask(self, queries: list[str]) -> np.ndarray:
        """(N, K) bool: the models the rule overrides allow each query (§2.9)."""
        return self._rules.mask(queries)

    def route(self, queries: list[str], cost_weight: float | Mapping[str, float]) -> list[str]:
        """The chosen model per query: the best-scoring one the rules allow (ties to the lower index)."""
        scores = self.scores_costs64(queries, cost_weight)[0]
        if self._rules.rules:
            scores = np.where(self.rule_mask(queries), scores, -np.inf)
        return [self.models[index] for index in scores.argmax(axis=1).tolist()]

    def prices_table(self) -> dict[str, tuple[float, float]]:
        """The price table: model → (USD per 1M input, per 1M output tokens); {} in "usd" mode."""
        if self.cost_mode != "tokens":
            return {}
        return {model: (float(row[0]), float(row[1])) for model, row in zip(self.models, self._priced[0])}

    def set_prices(self, table: Mapping[str, tuple[float, float]]) -> None:
        """Replace the price table in place (the next call prices with it); PolicyError as ``LoadedPolicy``'s."""
        self._set_table(np.asarray(price_rows(self.path, self.cost_mode, self.models, table), dtype=np.float64))

    def _set_table(self, table: np.ndarray) -> None:
        """Swap in ``table`` (K, 2) and its :func:`~policies.native_heads.price_matrix` in one assignment."""
        self._priced = (table, price_matrix(table))


def portable_policy(path: str | Path) -> PortablePolicy:
    """The portable form of the policy ``path`` names: a ``.safetensors`` file, or the twin of a ``policy.pt``.

    A ``policy.pt`` whose twin is missing (exported by an older routerl, or copied alone), cannot
    be read, or was written with other bytes (a kill between the two renames of
    :func:`policies.export.save_policy`) is converted in memory
    (:func:`policies.portable_writer.portable_bytes`, which needs torch): exactly that ``policy.pt``
    is served, and a warning says how to write the twin. A TorchScript module that routerl's
    exporter did not build (hand-written to the contract) has no portable form: it is refused,
    naming ``--engine torchscript``.

    Raises:
        PolicyError: one line naming the file: missing or unreadable, or not a valid policy.
    """
    path = Path(path)
    if path.suffix == SUFFIX:
        return read_portable(path)
    torchscript = read_policy_bytes(path)
    twin, found = _twin(path, hashlib.sha256(torchscript).hexdigest())
    return twin if twin is not None else _converted(path, torchscript, found)


def load_native_policy(path: str | Path) -> NativePolicy:
    """Load ``path`` (:func:`portable_policy`) for the native engine, and score two probe queries with it.

    Raises:
        PolicyError: one line naming the file: missing or unreadable, or not a valid policy.
    """
    path = Path(path)
    portable = portable_policy(path)
    try:
        _check_values(portable)
        policy = NativePolicy(path, portable, str(portable.header["policy_version"]))
        _probe(policy)
    except PolicyError as exc:
        raise PolicyError(f"{portable.path}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError) as exc:
        raise PolicyError(f"{portable.path}: not a valid portable policy ({type(exc).__name__}: {exc})") from None
    return policy


def _check_values(portable: PortablePolicy) -> None:
    """Every number of the file is finite, and every price >= 0 (as ``set_prices`` demands)."""
    for name, array in portable.tensors.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise PolicyError(f"its tensor {name} holds a value that is not finite")
    prices = portable.tensors.get("head.price_table")
    if prices is not None and (prices.ndim != 2 or prices.shape[1] != 2 or (prices < 0).any()):
        raise PolicyError("its head.price_table must be (K, 2) prices >= 0")


def _probe(policy: NativePolicy) -> None:
    """Score probe queries (empty, unknown words, the vocabulary's first terms) once, so that a policy that
    cannot score text is refused when it is loaded rather than on the first request."""
    known = b" ".join(policy.featurizer.terms[:PROBE_TERMS]).decode("utf-8", "replace")
    scores, costs = policy.scores_costs64(["", "routerl smoke test", known], policy.default_cost_weight)
    shape = (3, len(policy.models))
    if scores.shape != shape or costs.shape != shape:
        raise PolicyError(f"its head gives scores of shape {scores.shape[1:]} for {len(policy.models)} models")
    if not (np.isfinite(scores).all() and np.isfinite(costs).all()):
        raise PolicyError("it gives scores or costs that are not finite on a probe query")


def _twin(path: Path, sha256: str) -> tuple[PortablePolicy | None, str]:
    """The twin of ``path`` if it was written with the bytes of this sha256; else None and what was found."""
    if not twin_path(path).exists():
        return None, "no twin"
    try:
        twin = read_portable(twin_path(path))
    except PolicyError as exc:
        return None, f"an unreadable twin ({exc})"
    if twin.header["torchscript_sha256"] != sha256:
        return None, "a twin written with other bytes"
    return twin, "its twin"


def _converted(path: Path, torchscript: bytes, found: str) -> PortablePolicy:
    """The portable form of the TorchScript policy ``torchscript`` (read from ``path``), built in memory."""
    from policies.artifact import policy_from_bytes
    from policies.portable_writer import portable_bytes

    loaded = policy_from_bytes(path, torchscript)
    try:
        data = portable_bytes(loaded.module, loaded.metadata, torchscript)
    except (AttributeError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise PolicyError(
            f"{path}: it has no portable form (not a policy as routerl exports it: {str(exc).splitlines()[0]}); "
            "serve it with --engine torchscript"
        ) from None
    header, tensors = split_file(data)
    check_header(header, tensors)
    logger.warning(
        "%s: %s beside it (%s): converted in memory; `python -m policies portable %s` writes it",
        path,
        found,
        twin_path(path).name,
        path,
    )
    return PortablePolicy(twin_path(path), header, tensors)
