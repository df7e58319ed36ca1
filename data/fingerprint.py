"""The data fingerprint of CONTRACTS.md §1: sha256 of the accepted rows in canonical form.

Canonical form: one JSON line per accepted outcome, sorted by (query_id, model), each the array
``[query_id, query, model, quality, cost]``; floats are written as Python's ``repr`` (what
:func:`json.dumps` does), text as UTF-8 without ASCII escaping, no spaces. Row order, file
format and metadata columns therefore do not change it; any accepted value does.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from data.routing_log import RoutingLog


def fingerprint(log: RoutingLog) -> str:
    """Hex sha256 of the canonical form of ``log``'s accepted outcomes."""
    digest = hashlib.sha256()
    models = list(log.models)
    model_order = sorted(range(len(models)), key=lambda k: models[k])
    known = ~np.isnan(log.quality)
    for row in sorted(range(log.n_queries), key=lambda i: str(log.query_ids[i])):
        prefix = json.dumps(str(log.query_ids[row]), ensure_ascii=False) + ","
        prefix += json.dumps(log.queries[row], ensure_ascii=False) + ","
        lines = []
        for k in model_order:
            if known[row, k]:
                quality = float(log.quality[row, k])
                cost = float(log.cost[row, k])
                lines.append(
                    f"[{prefix}{json.dumps(models[k], ensure_ascii=False)},{quality!r},{cost!r}]\n"
                )
        digest.update("".join(lines).encode("utf-8"))
    return digest.hexdigest()
