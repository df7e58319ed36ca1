"""Cross-row rules: duplicates, conflicting text, log kind, incomplete queries; then the matrices.

Documented rules (docs/contracts.md §1), the same for every format; their reasons and messages
are defined in :mod:`data.rules`, with the column forms that the columnar path and ``--ray`` share:

* **Repeated outcome.** The first accepted row of a (query_id, model) outcome wins; a later one
  is rejected as ``duplicate outcome``. Rows rejected for another reason (a blank score, say)
  never claim the outcome, so RouterBench's repeated ``sample_id`` rows (one copy blank, one
  scored) keep the scored copy. In a bandit-feedback log a query has one logged outcome.
* **Conflicting text.** A row whose query text differs from the first accepted text of its
  query_id is rejected as ``conflicting text``.
* **Log kind.** Rows with ``propensity`` make a bandit-feedback log, rows without a
  full-information log; a file or directory that mixes both is one :class:`DataError`.
* **Models.** The arms are the models of accepted rows; a model named only by rejected rows
  is not one (it would otherwise make every full-information query incomplete).
* **Task.** A query's task is that of its first accepted row that has one (no rule compares
  the tasks of a query's rows: the task is metadata, as the embedding is); a query without any
  has none (``None`` in :attr:`data.routing_log.RoutingLog.tasks`).
* **Incomplete query.** In a full-information log every query must have every model. A query
  that lost a model's outcome (rejected or never logged) is dropped whole: its other rows are
  rejected as ``incomplete query``, so every reward the environment sees is exact.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from data import rules
from data.fingerprint import fingerprint
from data.quarantine import Quarantine
from data.routing_log import Feedback, ReadStats, RoutingLog
from data.rules import Invalid, Rule
from data.schema import DataError, RejectReason
from data.validation import Outcome, milliseconds

if TYPE_CHECKING:
    from data.columnar import Block

#: Optional per-row float columns of :class:`Outcome`; each is stored only once a row has it.
OPTIONAL_COLUMNS = ("propensity", "latency_ms", "energy_wh", "expected_quality", "prompt_tokens", "completion_tokens")
#: "No timestamp yet" in the per-query timestamp column (milliseconds since the epoch).
NO_TIME = int(np.iinfo(np.int64).min)
#: "No task yet" in the per-query task column (an index into the tasks seen).
NO_TASK = -1


@dataclass
class _Where:
    file: str
    position: int
    locator: str


@dataclass
class LogBuilder:
    """Accumulates valid outcomes compactly and applies the cross-row rules.

    Memory is what lets 1M queries × 11 models load in well under 2 GB: a query's text and id
    are kept once; each accepted row costs a few machine words in :mod:`array` columns (no
    Python object per row); the outcomes a query already has are one integer bitmask per query
    (bit k = model k), not a set of (query, model) pairs.
    """

    quarantine: Quarantine
    rows_read: int = 0
    pending: int = 0  # decision-log decisions still waiting for feedback (neither accepted nor rejected)
    feedback: Feedback | None = None
    _kind_source: _Where | None = None
    # Per query (index = order of first acceptance).
    _query_index: dict[str, int] = field(default_factory=dict)
    _texts: list[str] = field(default_factory=list)
    _models_seen: list[int] = field(default_factory=list)  # bitmask over model indices
    _query_time: array = field(default_factory=lambda: array("q"))  # ms since epoch, or NO_TIME
    _embeddings: dict[int, np.ndarray] = field(default_factory=dict)
    _query_task: array = field(default_factory=lambda: array("i"))  # index into _task_index, or NO_TASK
    _task_index: dict[str, int] = field(default_factory=dict)  # the tasks seen, in order of first acceptance
    _model_index: dict[str, int] = field(default_factory=dict)
    _files: list[str] = field(default_factory=list)
    _locators: list[str] = field(default_factory=list)  # "line" or "row", per file
    _file_index: dict[str, int] = field(default_factory=dict)
    # Per accepted row, column-wise.
    _row_query: array = field(default_factory=lambda: array("i"))
    _row_model: array = field(default_factory=lambda: array("i"))
    _row_quality: array = field(default_factory=lambda: array("d"))
    _row_cost: array = field(default_factory=lambda: array("d"))
    _row_file: array = field(default_factory=lambda: array("i"))
    _row_position: array = field(default_factory=lambda: array("q"))
    _row_optional: dict[str, array] = field(default_factory=dict)  # see OPTIONAL_COLUMNS

    def add(self, outcome: Outcome, file: str, position: int, locator: str, content: object) -> None:
        """Accept one valid outcome, or reject it by a cross-row rule."""
        self.rows_read += 1
        kind: Feedback = "bandit" if outcome.propensity is not None else "full"
        if kind != self.feedback:
            self._set_kind(kind, file, position, locator)
        query_index = self._query_index.get(outcome.query_id)
        if query_index is not None and self._texts[query_index] != outcome.query:
            self._reject_by(rules.CONFLICTING_TEXT, file, position, locator, content, query_id=outcome.query_id)
            return
        # A new model takes the next index, registered only once one of its rows is accepted:
        # a rejected row must not add an arm (which would make every query incomplete).
        model_index = self._model_index.get(outcome.model, len(self._model_index))
        bit = 1 << model_index
        # Bandit feedback: a query has one logged action, so any accepted row claims it.
        if query_index is not None and (kind == "bandit" or self._models_seen[query_index] & bit):
            if kind == "full":
                rule, values = rules.DUPLICATE_OUTCOME, {"query_id": outcome.query_id, "model": outcome.model}
            else:
                rule, values = rules.DUPLICATE_ACTION, {"query_id": outcome.query_id}
            self._reject_by(rule, file, position, locator, content, **values)
            return
        if outcome.embedding is not None:
            try:
                self._check_embedding(outcome.embedding)
            except Invalid as invalid:
                self._reject(file, position, locator, invalid.reason, invalid.detail, content)
                return
        self._model_index.setdefault(outcome.model, model_index)
        if query_index is None:
            query_index = len(self._texts)
            self._query_index[outcome.query_id] = query_index
            self._texts.append(outcome.query)
            self._models_seen.append(bit)
            self._query_time.append(NO_TIME)
            self._query_task.append(NO_TASK)
        else:
            self._models_seen[query_index] |= bit
        if outcome.task is not None and self._query_task[query_index] == NO_TASK:
            self._query_task[query_index] = self._task_code(outcome.task)
        if outcome.embedding is not None:
            self._embeddings.setdefault(query_index, np.asarray(outcome.embedding, dtype=np.float32))
        if outcome.timestamp is not None and self._query_time[query_index] == NO_TIME:
            self._query_time[query_index] = milliseconds(outcome.timestamp)
        rows = len(self._row_quality)
        for name in OPTIONAL_COLUMNS:
            _append_optional(self._row_optional, name, getattr(outcome, name), rows)
        self._row_query.append(query_index)
        self._row_model.append(model_index)
        self._row_quality.append(outcome.quality)
        self._row_cost.append(outcome.cost)
        self._row_file.append(self._file_number(file, locator))
        self._row_position.append(position)

    def add_block(self, block: Block) -> bool:
        """Accept every row of a valid columnar block, as :meth:`add` would one by one.

        Returns False, changing nothing, when some row would break a cross-row rule (a duplicate
        outcome, conflicting text, the other log kind, an embedding log) or the log has more than
        62 models (the per-query bitmask is then a Python int): the caller reads those rows with
        the per-row path, which rejects them with their reasons.
        """
        import pyarrow.compute as pc

        kind: Feedback = "bandit" if block.bandit else "full"
        if (self.feedback is not None and kind != self.feedback) or self._embeddings:
            return False
        encoded = pc.dictionary_encode(block.record_ids)  # groups = query_ids, in order of appearance
        group_of_record = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        group_ids: list[str] = encoded.dictionary.to_pylist()
        n_groups = len(group_ids)
        first_record = rules.first_items(group_of_record, n_groups)
        if rules.conflicting_texts(block.record_texts, group_of_record, first_record).any():
            return False  # a query_id with two texts in the block
        texts = block.record_texts.take(first_record)
        known = np.array([self._query_index.get(query_id, -1) for query_id in group_ids], dtype=np.int64)
        old_groups = np.flatnonzero(known >= 0)
        if len(old_groups) and (
            kind == "bandit"
            or texts.take(old_groups).to_pylist() != [self._texts[q] for q in known[old_groups].tolist()]
        ):
            return False
        new_models = [name for name in block.models if name not in self._model_index]
        if len(self._model_index) + len(new_models) > 62:
            return False
        index = {**self._model_index, **{name: len(self._model_index) + i for i, name in enumerate(new_models)}}
        model = np.array([index[name] for name in block.models], dtype=np.int64)[block.model_of_row]
        group = group_of_record if block.record_of_row is None else group_of_record[block.record_of_row]
        bits = np.left_shift(np.int64(1), model)
        if not rules.first_outcomes(group, model if kind == "full" else None, len(index)).all():
            return False
        seen = np.zeros(n_groups, dtype=np.int64)
        np.bitwise_or.at(seen, group, bits)
        if any(self._models_seen[q] & s for q, s in zip(known[old_groups].tolist(), seen[old_groups].tolist())):
            return False

        # Every row is accepted: commit.
        if self.feedback is None:
            self._set_kind(kind, block.file, int(block.positions[0]), block.locator)
        self._model_index.update((name, index[name]) for name in new_models)
        new_groups = np.flatnonzero(known < 0)
        known[new_groups] = np.arange(len(self._texts), len(self._texts) + len(new_groups))
        self._query_index.update(zip([group_ids[g] for g in new_groups.tolist()], known[new_groups].tolist()))
        self._texts.extend(texts.take(new_groups).to_pylist())
        self._models_seen.extend(seen[new_groups].tolist())
        for q, s in zip(known[old_groups].tolist(), seen[old_groups].tolist()):
            self._models_seen[q] |= s
        self._commit_times(block, group, known, new_groups, old_groups)
        self._commit_tasks(block, group_of_record, known, new_groups, old_groups)
        rows_before = len(self._row_quality)
        for name in OPTIONAL_COLUMNS:
            values = block.optional.get(name)
            column = self._row_optional.get(name)
            if column is None and values is not None:
                column = self._row_optional[name] = array("d", [math.nan]) * rows_before
            if column is not None:
                column.frombytes((np.full(block.rows, np.nan) if values is None else values).tobytes())
        self._row_query.frombytes(known[group].astype(np.int32).tobytes())
        self._row_model.frombytes(model.astype(np.int32).tobytes())
        self._row_quality.frombytes(block.quality.astype(np.float64).tobytes())
        self._row_cost.frombytes(block.cost.astype(np.float64).tobytes())
        self._row_file.frombytes(np.full(block.rows, self._file_number(block.file, block.locator), np.int32).tobytes())
        self._row_position.frombytes(block.positions.astype(np.int64).tobytes())
        self.rows_read += block.rows
        return True

    def _commit_times(
        self, block: Block, group: np.ndarray, query: np.ndarray, new_groups: np.ndarray, old_groups: np.ndarray
    ) -> None:
        """Each query's time: that of its first accepted row that has one (as :meth:`add`)."""
        first = np.full(len(query), NO_TIME, dtype=np.int64)
        if block.timestamps is not None:
            timed = np.flatnonzero(block.timestamps != NO_TIME)
            groups, where = np.unique(group[timed], return_index=True)
            first[groups] = block.timestamps[timed[where]]
        self._query_time.frombytes(first[new_groups].tobytes())
        for q, stamp in zip(query[old_groups].tolist(), first[old_groups].tolist()):
            if stamp != NO_TIME and self._query_time[q] == NO_TIME:
                self._query_time[q] = stamp

    def _commit_tasks(
        self, block: Block, group: np.ndarray, query: np.ndarray, new_groups: np.ndarray, old_groups: np.ndarray
    ) -> None:
        """Each query's task: that of its first record that has one (as :meth:`add`); ``group``: each record's."""
        import pyarrow.compute as pc

        first = np.full(len(query), NO_TASK, dtype=np.int32)
        if block.record_tasks is not None:
            encoded = pc.dictionary_encode(block.record_tasks)
            codes = np.array([self._task_code(task) for task in encoded.dictionary.to_pylist()], dtype=np.int32)
            local = np.asarray(encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
            tasked = np.flatnonzero(local >= 0)
            groups, where = np.unique(group[tasked], return_index=True)
            first[groups] = codes[local[tasked[where]]]
        self._query_task.frombytes(first[new_groups].tobytes())
        for q, code in zip(query[old_groups].tolist(), first[old_groups].tolist()):
            if code != NO_TASK and self._query_task[q] == NO_TASK:
                self._query_task[q] = code

    def _task_code(self, task: str) -> int:
        """The index of ``task`` among the tasks seen (a new one takes the next)."""
        return self._task_index.setdefault(task, len(self._task_index))

    def _set_kind(self, kind: Feedback, file: str, position: int, locator: str) -> None:
        """Record the log kind at its first row; a row of the other kind is a :class:`DataError`."""
        if self.feedback is None:
            self.feedback = kind
            self._kind_source = _Where(file, position, locator)
            return
        first = self._kind_source
        assert first is not None
        raise DataError(
            f"{file}: {locator} {position}: the log mixes full-information rows (no propensity) and "
            f"bandit-feedback rows (with propensity); {first.file} {first.locator} {first.position} "
            f"was {self.feedback}. Split them into separate logs."
        )

    def reject(
        self, file: str, position: int, locator: str, reason: RejectReason, detail: str, content: object
    ) -> None:
        """Count and quarantine a row that failed parsing or validation."""
        self.rows_read += 1
        self._reject(file, position, locator, reason, detail, content)

    def _reject(
        self, file: str, position: int, locator: str, reason: RejectReason, detail: str, content: object
    ) -> None:
        self.quarantine.reject(file, position, locator, reason, detail, content)

    def _reject_by(self, rule: Rule, file: str, position: int, locator: str, content: object, **values: object) -> None:
        """Quarantine a row that ``rule`` rejects, its message filled with ``values``."""
        self._reject(file, position, locator, rule.reason, rule.detail(**values), content)

    def _file_number(self, file: str, locator: str) -> int:
        number = self._file_index.get(file)
        if number is None:
            number = self._file_index[file] = len(self._files)
            self._files.append(file)
            self._locators.append(locator)
        return number

    def _check_embedding(self, embedding: list[float]) -> None:
        if self._embeddings:
            expected = len(next(iter(self._embeddings.values())))
            if len(embedding) != expected:
                raise rules.EMBEDDING_LENGTH.invalid(length=len(embedding), expected=expected)

    def build(self, files: list[str]) -> RoutingLog:
        """Apply the incomplete-query rule and arrange accepted outcomes query × model."""
        if self.feedback is None:
            return _empty_log(self._stats(files, accepted=0))
        order = sorted(self._model_index, key=str)
        remap = np.empty(len(order), dtype=np.int32)
        for new, name in enumerate(order):
            remap[self._model_index[name]] = new
        query = np.frombuffer(self._row_query, dtype=np.int32)
        model = remap[np.frombuffer(self._row_model, dtype=np.int32)]
        n_queries, n_models = len(self._texts), len(order)
        keep_query = np.ones(n_queries, dtype=bool)
        if self.feedback == "full":
            per_query = np.bincount(query, minlength=n_queries)
            keep_query = per_query == n_models
            self._reject_incomplete(query, model, order, keep_query, per_query)
        kept = int(keep_query.sum())
        if kept == n_queries:  # the usual case: no copies of the row columns
            keep_row: np.ndarray | slice = slice(None)
            rows_query, rows_model = query, model
        else:
            keep_row = keep_query[query]
            rows_query = (np.cumsum(keep_query) - 1)[query[keep_row]]
            rows_model = model[keep_row]
        cell = rows_query.astype(np.int64) * n_models + rows_model
        del query, model, rows_query, rows_model

        def matrix(values: array) -> np.ndarray:
            grid = np.full(kept * n_models, np.nan)
            grid[cell] = np.frombuffer(values, dtype=np.float64)[keep_row]
            return grid.reshape(kept, n_models)

        def optional(name: str) -> np.ndarray | None:
            return matrix(self._row_optional[name]) if name in self._row_optional else None

        ids = np.array(list(self._query_index), dtype=object)[keep_query]
        texts = [t for t, k in zip(self._texts, keep_query.tolist()) if k]
        action = propensity = None
        if self.feedback == "bandit":  # one row per query: a row's cell gives its query and action
            query_row, logged = np.divmod(cell, n_models)
            action = np.empty(kept, dtype=np.int64)
            action[query_row] = logged
            propensity = np.empty(kept)
            logged_propensity = np.frombuffer(self._row_optional["propensity"], dtype=np.float64)
            propensity[query_row] = logged_propensity[keep_row]
        kept_old = np.flatnonzero(keep_query)
        embeddings = None
        if self._embeddings:
            if len(self._embeddings) < n_queries:
                raise DataError("some queries carry an embedding and others do not; give every row one")
            embeddings = np.stack([self._embeddings[i] for i in kept_old.tolist()])
        tasks = None
        if self._task_index:  # NO_TASK (-1) indexes the None after the names
            names = np.array([*self._task_index, None], dtype=object)
            tasks = names[np.frombuffer(self._query_task, dtype=np.int32)[kept_old]]
        times = np.frombuffer(self._query_time, dtype=np.int64)
        timestamps = None
        if n_queries and (times != NO_TIME).all():
            timestamps = times[kept_old].astype("datetime64[ms]")
        log = RoutingLog(
            models=tuple(order),
            query_ids=ids,
            queries=texts,
            quality=matrix(self._row_quality),
            cost=matrix(self._row_cost),
            feedback=self.feedback,
            action=action,
            propensity=propensity,
            latency_ms=optional("latency_ms"),
            energy_wh=optional("energy_wh"),
            expected_quality=optional("expected_quality"),
            prompt_tokens=optional("prompt_tokens"),
            completion_tokens=optional("completion_tokens"),
            embeddings=embeddings,
            timestamps=timestamps,
            tasks=tasks,
            stats=self._stats(files, len(cell)),
        )
        return replace(log, fingerprint=fingerprint(log))

    def _reject_incomplete(
        self,
        query: np.ndarray,
        model: np.ndarray,
        order: list[str],
        keep_query: np.ndarray,
        per_query: np.ndarray,
    ) -> None:
        """Quarantine the remaining rows of every full-information query that lacks a model."""
        ids = list(self._query_index)
        quality = np.frombuffer(self._row_quality, dtype=np.float64)
        cost = np.frombuffer(self._row_cost, dtype=np.float64)
        for row in np.flatnonzero(~keep_query[query]).tolist():
            q = int(query[row])
            content = rules.incomplete_row_content(
                ids[q], self._texts[q], order[int(model[row])], float(quality[row]), float(cost[row])
            )
            file = self._row_file[row]
            self._reject_by(
                rules.INCOMPLETE_QUERY,
                self._files[file],
                int(self._row_position[row]),
                self._locators[file],
                content,
                query_id=ids[q],
                outcomes=int(per_query[q]),
                models=len(order),
            )

    def _stats(self, files: list[str], accepted: int) -> ReadStats:
        return ReadStats(
            files=tuple(files),
            rows_read=self.rows_read,
            rows_accepted=accepted,
            rows_rejected=self.quarantine.count,
            rejected_by_reason=self.quarantine.by_reason(),
            pending=self.pending,
        )


def _empty_log(stats: ReadStats) -> RoutingLog:
    return RoutingLog(
        models=(),
        query_ids=np.array([], dtype=object),
        queries=[],
        quality=np.zeros((0, 0)),
        cost=np.zeros((0, 0)),
        stats=stats,
    )


def _append_optional(columns: dict[str, array], name: str, value: float | None, rows: int) -> None:
    """Append ``value`` (NaN for None) to an optional column, creating it NaN-filled at first use."""
    column = columns.get(name)
    if column is None:
        if value is None:
            return
        column = columns[name] = array("d", [math.nan]) * rows
    column.append(math.nan if value is None else value)
