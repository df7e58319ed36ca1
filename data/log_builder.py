"""Cross-row rules: duplicates, conflicting text, log kind, incomplete queries; then the matrices.

Documented rules (CONTRACTS.md §1), the same for every format:

* **Repeated outcome.** The first accepted row of a (query_id, model) outcome wins; a later one
  is rejected as ``duplicate outcome``. Rows rejected for another reason (a blank score, say)
  never claim the outcome, so RouterBench's repeated ``sample_id`` rows (one copy blank, one
  scored) keep the scored copy. In a bandit-feedback log a query has one logged outcome.
* **Conflicting text.** A row whose query text differs from the first accepted text of its
  query_id is rejected as ``conflicting text``.
* **Log kind.** Rows with ``propensity`` make a bandit-feedback log, rows without a
  full-information log; a file or directory that mixes both is one :class:`DataError`.
* **Incomplete query.** In a full-information log every query must have every model. A query
  that lost a model's outcome (rejected or never logged) is dropped whole: its other rows are
  rejected as ``incomplete query``, so every reward the environment sees is exact.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field, replace
from datetime import timezone

import numpy as np

from data.fingerprint import fingerprint
from data.quarantine import Quarantine
from data.routing_log import Feedback, ReadStats, RoutingLog
from data.schema import DataError, RejectReason
from data.validation import Invalid, Outcome


@dataclass
class _Where:
    file: str
    position: int
    locator: str


@dataclass
class LogBuilder:
    """Accumulates valid outcomes (text kept once per query) and applies the cross-row rules."""

    quarantine: Quarantine
    rows_read: int = 0
    feedback: Feedback | None = None
    _kind_source: _Where | None = None
    _query_index: dict[str, int] = field(default_factory=dict)
    _texts: list[str] = field(default_factory=list)
    _model_index: dict[str, int] = field(default_factory=dict)
    _seen: set[tuple[int, int]] = field(default_factory=set)
    _files: list[str] = field(default_factory=list)
    _file_index: dict[str, int] = field(default_factory=dict)
    # Per accepted row, column-wise and compact (array module, not Python objects).
    _row_query: array = field(default_factory=lambda: array("q"))
    _row_model: array = field(default_factory=lambda: array("i"))
    _row_quality: array = field(default_factory=lambda: array("d"))
    _row_cost: array = field(default_factory=lambda: array("d"))
    _row_propensity: array = field(default_factory=lambda: array("d"))
    _row_latency: array = field(default_factory=lambda: array("d"))
    _row_expected: array = field(default_factory=lambda: array("d"))
    _row_file: array = field(default_factory=lambda: array("i"))
    _row_position: array = field(default_factory=lambda: array("q"))
    _row_locator: list[str] = field(default_factory=list)
    _embeddings: dict[int, list[float]] = field(default_factory=dict)
    _timestamps: dict[int, np.datetime64] = field(default_factory=dict)
    _has_latency: bool = False
    _has_expected: bool = False

    def add(self, outcome: Outcome, file: str, position: int, locator: str, content: object) -> None:
        """Accept one valid outcome, or reject it by a cross-row rule."""
        self.rows_read += 1
        kind: Feedback = "bandit" if outcome.propensity is not None else "full"
        if self.feedback is None:
            self.feedback = kind
            self._kind_source = _Where(file, position, locator)
        elif kind != self.feedback:
            first = self._kind_source
            assert first is not None
            raise DataError(
                f"{file}: {locator} {position}: the log mixes full-information rows (no propensity) and "
                f"bandit-feedback rows (with propensity); {first.file} {first.locator} {first.position} "
                f"was {self.feedback}. Split them into separate logs."
            )
        query_index = self._query_index.get(outcome.query_id)
        if query_index is not None and self._texts[query_index] != outcome.query:
            self._reject(file, position, locator, RejectReason.CONFLICTING_TEXT,
                         f"query_id {outcome.query_id!r} was first seen with different text", content)
            return
        model_index = self._model_index.setdefault(outcome.model, len(self._model_index))
        if query_index is not None:
            key = (query_index, model_index if kind == "full" else -1)
            if key in self._seen:
                detail = (f"({outcome.query_id!r}, {outcome.model!r}) already has an outcome"
                          if kind == "full" else f"query_id {outcome.query_id!r} already has a logged action")
                self._reject(file, position, locator, RejectReason.DUPLICATE_OUTCOME, detail, content)
                return
        if outcome.embedding is not None:
            try:
                self._check_embedding(outcome.embedding)
            except Invalid as invalid:
                self._reject(file, position, locator, invalid.reason, invalid.detail, content)
                return
        if query_index is None:
            query_index = len(self._texts)
            self._query_index[outcome.query_id] = query_index
            self._texts.append(outcome.query)
        self._seen.add((query_index, model_index if kind == "full" else -1))
        if outcome.embedding is not None:
            self._embeddings.setdefault(query_index, outcome.embedding)
        if outcome.timestamp is not None:
            stamp = outcome.timestamp
            if stamp.tzinfo is not None:
                stamp = stamp.astimezone(timezone.utc).replace(tzinfo=None)
            self._timestamps.setdefault(query_index, np.datetime64(stamp, "ms"))
        self._row_query.append(query_index)
        self._row_model.append(model_index)
        self._row_quality.append(outcome.quality)
        self._row_cost.append(outcome.cost)
        self._row_propensity.append(outcome.propensity if outcome.propensity is not None else np.nan)
        self._has_latency |= outcome.latency_ms is not None
        self._row_latency.append(outcome.latency_ms if outcome.latency_ms is not None else np.nan)
        self._has_expected |= outcome.expected_quality is not None
        self._row_expected.append(
            outcome.expected_quality if outcome.expected_quality is not None else np.nan
        )
        self._row_file.append(self._file_number(file))
        self._row_position.append(position)
        self._row_locator.append(locator)

    def reject(self, file: str, position: int, locator: str, reason: RejectReason, detail: str,
               content: object) -> None:
        """Count and quarantine a row that failed parsing or validation."""
        self.rows_read += 1
        self._reject(file, position, locator, reason, detail, content)

    def _reject(self, file: str, position: int, locator: str, reason: RejectReason, detail: str,
                content: object) -> None:
        self.quarantine.reject(file, position, locator, reason, detail, content)

    def _file_number(self, file: str) -> int:
        number = self._file_index.get(file)
        if number is None:
            number = self._file_index[file] = len(self._files)
            self._files.append(file)
        return number

    def _check_embedding(self, embedding: list[float]) -> None:
        if self._embeddings:
            expected = len(next(iter(self._embeddings.values())))
            if len(embedding) != expected:
                raise Invalid(RejectReason.BAD_EMBEDDING,
                              f"embedding has {len(embedding)} values, earlier rows have {expected}")

    def build(self, files: list[str]) -> RoutingLog:
        """Apply the incomplete-query rule and arrange accepted outcomes query × model."""
        if self.feedback is None:
            return _empty_log(self._stats(files, accepted=0))
        order = sorted(self._model_index, key=str)
        remap = np.empty(len(order), dtype=np.int64)
        for new, name in enumerate(order):
            remap[self._model_index[name]] = new
        query = np.frombuffer(self._row_query, dtype=np.int64)
        model = remap[np.frombuffer(self._row_model, dtype=np.int32)]
        n_queries, n_models = len(self._texts), len(order)
        keep_query = np.ones(n_queries, dtype=bool)
        if self.feedback == "full":
            per_query = np.bincount(query, minlength=n_queries)
            keep_query = per_query == n_models
            self._reject_incomplete(query, model, order, keep_query, per_query)
        keep_row = keep_query[query]
        new_index = np.cumsum(keep_query) - 1
        rows_query = new_index[query[keep_row]]
        rows_model = model[keep_row]
        kept = int(keep_query.sum())

        def matrix(values: array) -> np.ndarray:
            grid = np.full((kept, n_models), np.nan)
            grid[rows_query, rows_model] = np.frombuffer(values, dtype=np.float64)[keep_row]
            return grid

        ids = np.array(list(self._query_index), dtype=object)[keep_query]
        texts = [t for t, k in zip(self._texts, keep_query.tolist()) if k]
        action = propensity = None
        if self.feedback == "bandit":
            action = np.empty(kept, dtype=np.int64)
            action[rows_query] = rows_model
            propensity = np.empty(kept)
            propensity[rows_query] = np.frombuffer(self._row_propensity, dtype=np.float64)[keep_row]
        kept_old = np.flatnonzero(keep_query)
        embeddings = None
        if self._embeddings:
            if len(self._embeddings) < n_queries:
                raise DataError("some queries carry an embedding and others do not; give every row one")
            embeddings = np.array([self._embeddings[i] for i in kept_old.tolist()], dtype=np.float32)
        timestamps = None
        if self._timestamps and len(self._timestamps) == n_queries:
            timestamps = np.array([self._timestamps[i] for i in kept_old.tolist()], dtype="datetime64[ms]")
        stats = self._stats(files, int(keep_row.sum()))
        log = RoutingLog(
            models=tuple(order),
            query_ids=ids,
            queries=texts,
            quality=matrix(self._row_quality),
            cost=matrix(self._row_cost),
            feedback=self.feedback,
            action=action,
            propensity=propensity,
            latency_ms=matrix(self._row_latency) if self._has_latency else None,
            expected_quality=matrix(self._row_expected) if self._has_expected else None,
            embeddings=embeddings,
            timestamps=timestamps,
            stats=stats,
        )
        return replace(log, fingerprint=fingerprint(log))

    def _reject_incomplete(self, query: np.ndarray, model: np.ndarray, order: list[str],
                           keep_query: np.ndarray, per_query: np.ndarray) -> None:
        """Quarantine the remaining rows of every full-information query that lacks a model."""
        ids = list(self._query_index)
        quality = np.frombuffer(self._row_quality, dtype=np.float64)
        cost = np.frombuffer(self._row_cost, dtype=np.float64)
        for row in np.flatnonzero(~keep_query[query]).tolist():
            q = int(query[row])
            content = {"query_id": ids[q], "query": self._texts[q], "model": order[int(model[row])],
                       "quality": float(quality[row]), "cost": float(cost[row])}
            detail = f"query {ids[q]!r} has {int(per_query[q])} of {len(order)} models' outcomes"
            self._reject(self._files[self._row_file[row]], int(self._row_position[row]),
                         self._row_locator[row], RejectReason.INCOMPLETE_QUERY, detail, content)

    def _stats(self, files: list[str], accepted: int) -> ReadStats:
        return ReadStats(
            files=tuple(files),
            rows_read=self.rows_read,
            rows_accepted=accepted,
            rows_rejected=self.quarantine.count,
            rejected_by_reason=self.quarantine.by_reason(),
        )


def _empty_log(stats: ReadStats) -> RoutingLog:
    return RoutingLog(models=(), query_ids=np.array([], dtype=object), queries=[],
                      quality=np.zeros((0, 0)), cost=np.zeros((0, 0)), stats=stats)
