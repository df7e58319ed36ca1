"""Capacity constraints: a maximum share of the traffic per model (docs/contracts.md §2.5, §3.3, §4.10).

Self-hosted models can take only so much. A cap ``c_k`` in (0, 1] on model k's share of the queries
is held by a Lagrange multiplier ``λ_k >= 0`` per capped model: a query goes to
``argmax_k (score_k − λ_k)`` among its allowed models (``λ_k`` = 0 for a model without a cap), so a
multiplier is an offset in the policy's score units (docs/contracts.md §2.3) that makes its model
less attractive until its share is down to the cap. Training fits the multipliers on its queries
(:mod:`evaluation.capacity`, the formula and references there), the exported policy carries them
in its metadata, and the service starts from them and holds the caps on live traffic by dual
steps on the observed shares (:mod:`serving.capacity`).

This module is what both sides share, and so imports nothing of routerl (the service reaches it):
what a valid set of caps is (:func:`check_caps`) and the metadata's form, ``capacity``:
``{model: {"max_share": c_k, "multiplier": λ_k}}`` (:func:`capacity_metadata`, :func:`read_capacity`).
``policy.pt``'s own ``route`` does not apply them: its API is unchanged, and a file without the key
has no caps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: The metadata key of the caps and their multipliers.
METADATA_KEY = "capacity"


def check_caps(caps: Mapping[str, Any], models: Sequence[str], where: str) -> dict[str, float]:
    """``caps`` ({model: maximum share}) in the order of ``models``, if they can hold.

    Raises:
        ValueError: one line starting with ``where`` (the option or file that gave them): a model
            not among ``models``; a share that is not a number in (0, 1]; or every model capped with
            caps summing below 1, which would leave some queries nowhere to go.
    """
    unknown = [name for name in caps if name not in models]
    if unknown:
        raise ValueError(f"{where}: unknown model(s) {unknown}; the models are {list(models)}")
    for name, share in caps.items():
        if not _number(share) or not 0 < share <= 1:
            raise ValueError(f"{where}: {name}: a maximum share must be a number in (0, 1], got {share!r}")
    total = math.fsum(float(share) for share in caps.values())
    if len(caps) == len(models) and total < 1:
        raise ValueError(
            f"{where}: every model is capped and the caps sum to {total:g} < 1: some queries would have no model"
        )
    return {name: float(caps[name]) for name in models if name in caps}


def _number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool, not text)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def capacity_metadata(caps: Mapping[str, float], multipliers: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """The metadata's ``capacity``: ``{model: {"max_share", "multiplier"}}`` for every capped model."""
    return {name: {"max_share": float(share), "multiplier": float(multipliers[name])} for name, share in caps.items()}


def read_capacity(metadata: Mapping[str, Any], models: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``{model: (max_share, multiplier)}`` from a policy's metadata; ``{}`` when it has no caps.

    Raises:
        ValueError: the ``capacity`` entry is malformed: not a mapping of the policy's models to
            ``{max_share, multiplier}``, a share outside (0, 1] or a multiplier not finite and >= 0.
    """
    section = metadata.get(METADATA_KEY) or {}
    where = f"metadata {METADATA_KEY}"
    if not isinstance(section, Mapping) or not all(isinstance(entry, Mapping) for entry in section.values()):
        raise ValueError(f"{where} must map models to {{max_share, multiplier}}, got {section!r}")
    caps = check_caps({name: entry.get("max_share") for name, entry in section.items()}, models, where)
    read = {}
    for name, share in caps.items():
        multiplier = section[name].get("multiplier")
        if not _number(multiplier) or multiplier < 0:
            raise ValueError(f"{where}: {name}: a multiplier must be a finite number >= 0, got {multiplier!r}")
        read[name] = (share, float(multiplier))
    return read
