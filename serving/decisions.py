"""Choosing a model from scores (greedy or ε-greedy) and the JSONL decision log.

Decision log format (docs/contracts.md §4), one JSON object per line, appended:

- a **decision**: ``{"query_id", "query", "model", "propensity", "cost_weight",
  "policy_version", "timestamp"}``; proxied requests add ``"prompt_tokens"`` and
  ``"completion_tokens"`` when the backend reported usage, and ``"fallback_from"`` (the model
  the policy chose) when a backend failure made the proxy serve another model.
- a **feedback**: ``{"query_id", "quality", "cost"}`` (``cost`` is null when not given).

``query`` is the text (``--log-queries full``), its sha256 hex (``hash``) or null (``none``).
``propensity`` is the exact probability with which the service chose ``model``:
``1 - ε + ε/K`` for the greedy model and ``ε/K`` for another, K = number of allowed models.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from policies.faults import fault_point
from serving.settings import LogQueries

logger = logging.getLogger("routerl.serving")


def best(scores: list[float], allowed: list[int]) -> int:
    """Index of the highest score among ``allowed`` (sorted); ties go to the lower index."""
    chosen = allowed[0]
    for index in allowed[1:]:
        if scores[index] > scores[chosen]:
            chosen = index
    return chosen


def ranking(scores: list[float], allowed: list[int]) -> list[int]:
    """``allowed`` from the highest score to the lowest; ties keep the lower index first."""
    return sorted(allowed, key=lambda index: (-scores[index], index))


def choose(scores: list[float], allowed: list[int], epsilon: float, rng: random.Random) -> tuple[int, float]:
    """ε-greedy choice among ``allowed`` (sorted indices): ``(index, propensity)``.

    With probability ``epsilon`` a uniformly random allowed model, else the greedy one; the
    propensity is the exact probability of the returned index under that rule.
    """
    greedy = best(scores, allowed)
    if epsilon == 0.0:
        return greedy, 1.0
    chosen = rng.choice(allowed) if rng.random() < epsilon else greedy
    return chosen, propensity(chosen, greedy, epsilon, len(allowed))


def propensity(chosen: int, greedy: int, epsilon: float, k: int) -> float:
    """Probability that ε-greedy over ``k`` models picks ``chosen`` when ``greedy`` is best."""
    return (1.0 - epsilon if chosen == greedy else 0.0) + epsilon / k


#: The fault points a record passes (:mod:`policies.faults`): before its line is written, and after.
_DECISION_POINTS = ("decision-start", "decision-written")
_FEEDBACK_POINTS = ("feedback-start", "feedback-written")

#: One encoder for every record (``json.dumps`` with options builds a new one per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def _now() -> str:
    """The current UTC time in ISO 8601 with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _ends_with_torn_line(path: Path) -> bool:
    """Whether the file at ``path`` is not empty and its last byte is not a newline."""
    with path.open("rb") as file:
        if file.seek(0, 2) == 0:
            return False
        file.seek(-1, 2)
        return file.read(1) != b"\n"


class DecisionLog:
    """Append-only JSONL file of decisions and feedback, safe to write from several threads.

    Each record is written with one ``write`` of a whole line and flushed at once, so that a
    crash loses at most the record being written and a reader never sees half a line from a
    finished write. A file that a crash left ending in the middle of a line is terminated with a
    newline when it is opened, before the first record is appended: the torn line is then
    rejected alone when the log is read, instead of swallowing the next record.
    """

    def __init__(self, path: Path, log_queries: LogQueries = "full") -> None:
        """Open ``path`` for appending (created with its folder if missing)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.log_queries = log_queries
        self._file = path.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()
        if _ends_with_torn_line(path):
            self._file.write("\n")
            logger.warning(
                "decision log %s ended with a torn line (a crash while it was written?); terminated it, "
                "so that a reader rejects that line alone and the next record starts a line of its own",
                path,
            )

    def _query_field(self, query: str) -> str | None:
        """What the log keeps of ``query`` under ``--log-queries``."""
        if self.log_queries == "full":
            return query
        if self.log_queries == "hash":
            return hashlib.sha256(query.encode("utf-8")).hexdigest()
        return None

    def _append(self, record: dict[str, Any], points: tuple[str, str]) -> None:
        """Write one record as one line, between its two fault points (:mod:`policies.faults`).

        ``points``: the kind's ``-start`` (nothing of the record written) and ``-written`` (the line
        written and flushed, the request not yet answered), e.g. :data:`_DECISION_POINTS`.
        """
        line = _ENCODER.encode(record) + "\n"
        with self._lock:
            fault_point(points[0])
            self._file.write(line)
            fault_point(points[1])

    def decision(
        self,
        *,
        query_id: str,
        query: str,
        model: str,
        propensity: float,
        cost_weight: float,
        policy_version: str,
        **extra: Any,
    ) -> None:
        """Append one routing decision (``extra``: optional fields such as usage tokens)."""
        self._append(
            {
                "query_id": query_id,
                "query": self._query_field(query),
                "model": model,
                "propensity": propensity,
                "cost_weight": cost_weight,
                "policy_version": policy_version,
                "timestamp": _now(),
                **extra,
            },
            _DECISION_POINTS,
        )

    def feedback(self, query_id: str, quality: float, cost: float | None) -> None:
        """Append the observed outcome of an earlier decision."""
        self._append({"query_id": query_id, "quality": quality, "cost": cost}, _FEEDBACK_POINTS)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._file.close()
