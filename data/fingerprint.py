"""The data fingerprint of CONTRACTS.md §1: sha256 of the accepted rows in canonical form.

Canonical form: one JSON line per accepted outcome, sorted by (query_id, model), each the array
``[query_id, query, model, quality, cost]``; floats are written as Python's ``repr`` (what
:func:`json.dumps` does), text as UTF-8 without ASCII escaping, no spaces. Row order, file
format and metadata columns therefore do not change it; any accepted value does.
"""

from __future__ import annotations

import hashlib
import json

from data.routing_log import RoutingLog

#: Queries hashed per step: bounds the memory of the canonical lines held at once.
_CHUNK = 4096


def fingerprint(log: RoutingLog) -> str:
    """Hex sha256 of the canonical form of ``log``'s accepted outcomes.

    Streams the canonical lines ``_CHUNK`` queries at a time, so that memory stays small for
    millions of rows; each model name is JSON-encoded once.
    """
    digest = hashlib.sha256()
    encode = json.JSONEncoder(ensure_ascii=False).encode
    model_order = sorted(range(log.n_models), key=lambda k: log.models[k])
    names = [encode(log.models[k]) for k in model_order]
    ids = log.query_ids
    rows = sorted(range(log.n_queries), key=lambda i: str(ids[i]))
    for start in range(0, len(rows), _CHUNK):
        block = rows[start : start + _CHUNK]
        quality = log.quality[block][:, model_order].tolist()
        cost = log.cost[block][:, model_order].tolist()
        lines: list[str] = []
        for row, qualities, costs in zip(block, quality, cost):
            prefix = f"[{encode(str(ids[row]))},{encode(log.queries[row])},"
            lines.extend(
                f"{prefix}{name},{q!r},{c!r}]\n"
                for name, q, c in zip(names, qualities, costs)
                if q == q  # NaN: an unknown cell of a bandit-feedback log
            )
        digest.update("".join(lines).encode("utf-8"))
    return digest.hexdigest()
