"""The latest decisions of one service process, for the dashboard (``GET /ui/data``, :mod:`serving.dashboard`).

A bounded queue: each decision is appended as it is made (the model served, the cost weight it was
scored at, whether it was explored, the query) and the oldest falls out. The query is shown as the
decision log keeps it (:func:`serving.decisions.shown_query`): its text only under ``--log-queries
full``, else its sha256 or nothing. With ``serve.py --workers N`` each worker keeps its own: the
page shows those of the worker that answered it.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, NamedTuple

from serving.decisions import shown_query
from serving.settings import LogQueries

#: How many decisions the dashboard lists.
RECENT_DECISIONS = 20


class Recent(NamedTuple):
    """One decision as it was made."""

    time: float  # Unix seconds
    model: str
    cost_weight: float
    explored: bool
    query: str


class RecentDecisions:
    """The latest :data:`RECENT_DECISIONS` decisions, newest first when read."""

    def __init__(self, log_queries: LogQueries, size: int = RECENT_DECISIONS) -> None:
        """Keep ``size`` decisions; show their queries as ``log_queries`` says."""
        self.log_queries = log_queries
        self._decisions: deque[Recent] = deque(maxlen=size)

    def add(self, model: str, cost_weight: float, explored: bool, query: str) -> None:
        """Remember one decision (the oldest is forgotten past the size)."""
        self._decisions.append(Recent(time.time(), model, cost_weight, explored, query))

    def to_json(self) -> list[dict[str, Any]]:
        """The decisions, newest first: ``time``, ``model``, ``cost_weight``, ``explored`` and
        ``query`` (the text, its sha256, or null, by ``--log-queries``)."""
        return [
            {
                "time": recent.time,
                "model": recent.model,
                "cost_weight": recent.cost_weight,
                "explored": recent.explored,
                "query": shown_query(recent.query, self.log_queries),
            }
            for recent in reversed(self._decisions)
        ]
