"""The data fingerprint of CONTRACTS.md §1: sha256 of the accepted rows in canonical form.

Canonical form: one JSON line per accepted outcome, sorted by (query_id, model), each the array
``[query_id, query, model, quality, cost]``; floats are written as Python's ``repr`` (what
:func:`json.dumps` does), text as UTF-8 without ASCII escaping, no spaces. Row order, file
format and metadata columns therefore do not change it; any accepted value does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from data.routing_log import RoutingLog

#: Queries hashed per step: bounds the memory of the canonical lines held at once.
_CHUNK = 4096
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode  # one encoder; json.dumps builds one per call


def fingerprint(log: RoutingLog) -> str:
    """Hex sha256 of the canonical form of ``log``'s accepted outcomes.

    Streams the canonical lines ``_CHUNK`` queries at a time, so that memory stays small for
    millions of rows.
    """
    digest = hashlib.sha256()
    model_order = sorted(range(log.n_models), key=lambda k: log.models[k])
    names = [log.models[k] for k in model_order]
    ids = log.query_ids
    rows = sorted(range(log.n_queries), key=lambda i: str(ids[i]))
    for start in range(0, len(rows), _CHUNK):
        block = rows[start : start + _CHUNK]
        digest.update(
            canonical_lines(
                [str(ids[row]) for row in block],
                [log.queries[row] for row in block],
                names,
                log.quality[block][:, model_order].tolist(),
                log.cost[block][:, model_order].tolist(),
            ).encode("utf-8")
        )
    return digest.hexdigest()


def canonical_lines(
    query_ids: Sequence[str],
    queries: Sequence[str],
    models: Sequence[str],
    quality: Sequence[Sequence[float]],
    cost: Sequence[Sequence[float]],
) -> str:
    """The canonical lines of consecutive queries (already in ``query_id`` order; ``models`` sorted).

    ``quality`` and ``cost`` are (queries × models) in the order of ``models``; NaN cells (the
    unknown outcomes of a bandit-feedback log) have no line. Hash them in order, chunk after
    chunk, to get :func:`fingerprint`.
    """
    names = [_ENCODE(model) for model in models]
    lines: list[str] = []
    for query_id, text, qualities, costs in zip(query_ids, queries, quality, cost):
        prefix = f"[{_ENCODE(query_id)},{_ENCODE(text)},"
        lines.extend(f"{prefix}{name},{q!r},{c!r}]\n" for name, q, c in zip(names, qualities, costs) if q == q)
    return "".join(lines)
