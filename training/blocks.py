"""What the Ray workers of :mod:`training.distributed` run on each block: read, per-query rules, statistics.

Kept apart from :mod:`training.distributed` so that a worker process imports only ``data``,
numpy and pyarrow (a task deserialises its function by importing this module; torch is imported
only by the statistics actors, for :class:`agents.linucb.LinUCBStatistics`). The rules and their
messages are those of :mod:`data.rules`; :func:`quarantine_in_order` gives the driver the
single-process quarantine of the rows the blocks reject.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data import rules
from data.columnar import Block, read_blocks
from data.decision_log import Pending, join_decisions
from data.featurizer import TextFeaturizer
from data.loading import RowFeed
from data.prices import PriceTable
from data.quarantine import Quarantine
from data.reading import Item, ParsedRow, read_file
from data.rules import MAX_COST, Invalid, Limits
from data.schema import DataError, RejectReason
from data.splits import hash_unit
from data.validation import validate

ACCEPTED = ""  # the ``reason`` of an accepted row

REJECTION_FIELDS = [
    ("file_no", pa.int64()),
    ("position", pa.int64()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("content", pa.string()),  # JSON of the parsed row, or the raw line
]
ROW_SCHEMA = pa.schema(
    [
        ("query_id", pa.string()),
        ("query", pa.string()),
        ("model", pa.string()),
        ("quality", pa.float64()),
        ("cost", pa.float64()),
        *REJECTION_FIELDS,
    ]
)


def query_schema(n_models: int) -> pa.Schema:
    """Stage 2's records: one per complete query (``reason`` empty) or per rejected row."""
    vector = pa.list_(pa.float64(), n_models)
    return pa.schema(
        [
            ("query_id", pa.string()),
            ("query", pa.string()),
            ("quality", vector),
            ("cost", vector),
            ("split", pa.float64()),  # hash position in [0, 1)
            ("model", pa.string()),  # a rejected row's model (a complete query has them all)
            *REJECTION_FIELDS,
        ]
    )


def read_block(
    batch: dict[str, np.ndarray],
    prices: PriceTable,
    allow_pickle: bool,
    max_cost: float = MAX_COST,
    strict: bool = False,
) -> pa.Table:
    """Stage 1: read and validate the files of ``batch`` (one row per file) into :data:`ROW_SCHEMA` rows.

    As :func:`data.loading.load_log` reads a file, with the same :class:`data.rules.Limits`
    (``max_cost``, ``strict``): :mod:`data.columnar` takes the blocks whose rows are all valid
    (their raw ``content`` is left out: the few of them that stage 2 rejects are read again by
    :func:`raw_contents`), and the spans it cannot take go through the per-row readers, whose
    rejections keep their content.
    """
    tables = []
    for number, name in zip(batch["file_no"].tolist(), batch["file"].tolist(), strict=True):
        file = Path(name)
        limits = Limits.of(file, max_cost, strict)
        if file.suffix.lower() == ".pkl":
            items = join_decisions(read_file(file, allow_pickle=allow_pickle))
            tables.append(_per_row(items, number, prices, limits))
            continue
        feed = RowFeed(read_file(file))
        for part in read_blocks(file, limits=limits):
            if isinstance(part, Block):
                if part.bandit:
                    raise DataError(f"{file}: rows with propensity (bandit feedback); --ray fits full-information logs")
                tables.append(_block_rows(part, number))
            elif part.first == 1 and part.last is None:  # the whole file, as the per-row path reads it
                tables.append(_per_row(join_decisions(read_file(file)), number, prices, limits))
            else:
                tables.append(_per_row(feed.take(part.first, part.last), number, prices, limits))
    return pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table()


def _block_rows(block: Block, number: int) -> pa.Table:
    """A columnar block's rows (all valid) as :data:`ROW_SCHEMA` rows without content."""
    n = block.rows
    ids, texts = block.record_ids, block.record_texts
    if block.record_of_row is not None:  # a wide block: one record per query, one row per model
        ids, texts = ids.take(pa.array(block.record_of_row)), texts.take(pa.array(block.record_of_row))
    return pa.table(
        {
            "query_id": ids,
            "query": texts,
            "model": pa.array(block.models, pa.string()).take(pa.array(block.model_of_row)),
            "quality": block.quality,
            "cost": block.cost,
            "file_no": np.full(n, number, dtype=np.int64),
            "position": block.positions,
            "reason": pa.repeat(pa.scalar(ACCEPTED), n),
            "detail": pa.repeat(pa.scalar(""), n),
            "content": pa.nulls(n, pa.string()),
        },
        schema=ROW_SCHEMA,
    )


def _per_row(items: Iterable[Item | Pending], number: int, prices: PriceTable, limits: Limits) -> pa.Table:
    """Rows read and validated one by one (:mod:`data.reading`, :mod:`data.validation`), with content."""
    columns: dict[str, list[Any]] = {name: [] for name in ROW_SCHEMA.names}

    def add(fields: dict[str, Any] | None, position: int, reason: str, detail: str, raw: Any) -> None:
        outcome = fields or {}
        for name in ("query_id", "query", "model", "quality", "cost"):
            columns[name].append(outcome.get(name))
        columns["file_no"].append(number)
        columns["position"].append(position)
        columns["reason"].append(reason)
        columns["detail"].append(detail)
        columns["content"].append(None if raw is None else json.dumps(raw, ensure_ascii=False, default=str))

    for item in items:
        if isinstance(item, Pending):
            raise DataError(f"{item.file}: a decision log is bandit feedback; --ray fits full-information logs")
        if not isinstance(item, ParsedRow):
            add(None, item.position, item.reason.value, item.detail, item.raw)
            continue
        try:
            outcome = validate(item.fields, prices, limits)
        except Invalid as invalid:
            add(None, item.position, invalid.reason.value, invalid.detail, item.fields)
            continue
        if outcome.propensity is not None:
            raise DataError(
                f"{item.file}: {item.locator} {item.position}: a row with propensity (bandit feedback); "
                "--ray fits full-information logs"
            )
        add(outcome._asdict(), item.position, ACCEPTED, "", item.fields)
    return pa.table(columns, schema=ROW_SCHEMA)


def raw_contents(
    file: Path, wanted: set[tuple[int, str]], prices: PriceTable, allow_pickle: bool, limits: Limits
) -> dict[tuple[int, str], str]:
    """The content (JSON of the parsed fields) of the valid rows ``(position, model)`` of ``file``.

    For the rows that stage 2 rejects after :mod:`data.columnar` read them without content: the
    per-row reader reads the file again (with the file's ``limits`` of stage 1), so this costs
    one pass over each file that has some.
    """
    positions = {position for position, _ in wanted}
    found: dict[tuple[int, str], str] = {}
    for item in read_file(file, allow_pickle=allow_pickle):
        if isinstance(item, ParsedRow) and item.position in positions:
            try:
                key = (item.position, validate(item.fields, prices, limits).model)
            except Invalid:  # another outcome of a wanted wide row; its own rejection has its content
                continue
            if key in wanted:
                found[key] = json.dumps(item.fields, ensure_ascii=False, default=str)
    return found


def query_rules(rows: pa.Table, models: list[str], seed: int) -> pa.Table:
    """Stage 2, a block of whole queries' valid rows: the cross-row rules of :mod:`data.log_builder`.

    Every query's rows are in this block (the block comes from a shuffle by ``query_id``). Within a
    query, rows count in reading order (file, position): a row whose text differs from the
    query's first row is ``conflicting text`` (:func:`data.rules.conflicting_texts`); a second row
    of a model ``duplicate outcome`` (:func:`data.rules.first_outcomes`); a query that then lacks a
    model has its rows rejected as ``incomplete query``. A complete query becomes one record with
    its models' outcomes. The rules run on whole columns (numpy and Arrow kernels); Python touches
    only each complete query's hash and each rejection's message. Records come out in
    ``query_id`` order, rejections after them.
    """
    schema = query_schema(len(models))
    if rows.num_rows == 0:
        return schema.empty_table()
    order = pc.sort_indices(
        rows, sort_keys=[("query_id", "ascending"), ("file_no", "ascending"), ("position", "ascending")]
    )
    rows = rows.take(order)
    ids = rows["query_id"]
    n_rows, n_models = rows.num_rows, len(models)
    starts = np.flatnonzero(np.concatenate(([True], pc.not_equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False))))
    group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n_rows)))  # each row's query
    conflicting = rules.conflicting_texts(rows["query"], group, starts)
    model = pc.index_in(rows["model"], value_set=pa.array(models)).to_numpy(zero_copy_only=False)
    candidates = np.flatnonzero(~conflicting)
    accepted = np.zeros(n_rows, dtype=bool)  # the first row of each (query, model), in reading order
    accepted[candidates] = rules.first_outcomes(group[candidates], model[candidates], n_models)
    duplicate = ~conflicting & ~accepted
    outcomes = np.bincount(group[accepted], minlength=len(starts))
    incomplete = accepted & (outcomes[group] < n_models)

    complete_rows = np.flatnonzero(accepted & ~incomplete)  # query-major, then reading order
    cells = complete_rows[np.lexsort((model[complete_rows], group[complete_rows]))].reshape(-1, n_models)
    firsts = starts[np.flatnonzero(outcomes == n_models)]  # a query's first row is always accepted
    records = rows.take(pa.array(firsts)).select(["query_id", "query", "file_no", "position"])
    quality, cost = rows["quality"].to_numpy()[cells], rows["cost"].to_numpy()[cells]
    kept = pa.table(
        {
            "query_id": records["query_id"],
            "query": records["query"],
            "quality": pa.FixedSizeListArray.from_arrays(pa.array(quality.ravel()), n_models),
            "cost": pa.FixedSizeListArray.from_arrays(pa.array(cost.ravel()), n_models),
            "split": pa.array(hash_unit(np.asarray(records["query_id"].to_pylist(), dtype=object), seed)),
            "model": pa.nulls(len(firsts), pa.string()),
            "file_no": records["file_no"],
            "position": records["position"],
            "reason": pa.repeat(pa.scalar(ACCEPTED), len(firsts)),
            "detail": pa.repeat(pa.scalar(""), len(firsts)),
            "content": pa.nulls(len(firsts), pa.string()),
        },
        schema=schema,
    )
    return pa.concat_tables([kept, _rejections(rows, group, conflicting, duplicate, incomplete, outcomes, n_models)])


def _rejections(
    rows: pa.Table,
    group: np.ndarray,
    conflicting: np.ndarray,
    duplicate: np.ndarray,
    incomplete: np.ndarray,
    outcomes: np.ndarray,
    n_models: int,
) -> pa.Table:
    """The rows :func:`query_rules` rejects, each with its reason and the single-process message."""
    rejected = np.flatnonzero(conflicting | duplicate | incomplete)
    if len(rejected) == 0:
        return query_schema(n_models).empty_table()
    picked = rows.take(pa.array(rejected))
    reasons, details, contents = [], [], []
    values = picked.select(["query_id", "query", "model", "quality", "cost", "content"]).to_pylist()
    for row, value in zip(rejected.tolist(), values, strict=True):
        query_id, content = value.pop("query_id"), value.pop("content")
        if conflicting[row]:
            rule, detail = rules.CONFLICTING_TEXT, rules.CONFLICTING_TEXT.detail(query_id=query_id)
        elif duplicate[row]:
            rule = rules.DUPLICATE_OUTCOME
            detail = rule.detail(query_id=query_id, model=value["model"])
        else:
            rule = rules.INCOMPLETE_QUERY
            detail = rule.detail(query_id=query_id, outcomes=int(outcomes[group[row]]), models=n_models)
            content = json.dumps(rules.incomplete_row_content(query_id, **value), ensure_ascii=False)
        reasons.append(rule.reason.value)
        details.append(detail)
        contents.append(content)
    n = len(rejected)
    vector = pa.list_(pa.float64(), n_models)
    return pa.table(
        {
            "query_id": pa.nulls(n, pa.string()),
            "query": pa.nulls(n, pa.string()),
            "quality": pa.nulls(n, vector),
            "cost": pa.nulls(n, vector),
            "split": pa.nulls(n, pa.float64()),
            "model": picked["model"],
            "file_no": picked["file_no"],
            "position": picked["position"],
            "reason": pa.array(reasons, pa.string()),
            "detail": pa.array(details, pa.string()),
            "content": pa.array(contents, pa.string()),
        },
        schema=query_schema(n_models),
    )


def reading_order(table: pa.Table) -> pa.Table:
    """Rows sorted by (file, position): the order in which the single-process loader meets them."""
    return table.sort_by([("file_no", "ascending"), ("position", "ascending")])


def quarantine_in_order(
    rejected: pa.Table | None,
    files: list[Path],
    strict: bool,
    prices: PriceTable,
    allow_pickle: bool,
    max_cost: float = MAX_COST,
) -> Quarantine:
    """The rejections of stages 1 and 2 (``model`` and :data:`REJECTION_FIELDS`) as the single process quarantines them.

    Row-level and per-query rejections come in reading order, then ``incomplete query`` ones (the
    single-process builder finds those last); under ``strict`` the first one is the error.
    ``max_cost`` and ``strict`` are those given to :func:`read_block`.
    """
    quarantine = Quarantine(strict=strict)
    if rejected is None:
        return quarantine
    records = _with_contents(reading_order(rejected).to_pylist(), files, prices, allow_pickle, max_cost, strict)
    late = [r for r in records if r["reason"] == RejectReason.INCOMPLETE_QUERY.value]
    for record in [r for r in records if r["reason"] != RejectReason.INCOMPLETE_QUERY.value] + late:
        file = files[record["file_no"]]
        locator = "line" if file.suffix.lower() == ".jsonl" else "row"
        content = None if record["content"] is None else json.loads(record["content"])
        quarantine.reject(
            str(file), record["position"], locator, RejectReason(record["reason"]), record["detail"], content
        )
    return quarantine


def _with_contents(
    records: list[dict[str, Any]],
    files: list[Path],
    prices: PriceTable,
    allow_pickle: bool,
    max_cost: float,
    strict: bool,
) -> list[dict[str, Any]]:
    """``records`` with the content of the rows that stage 2 rejected after a columnar read (none kept)."""
    missing: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        if record["content"] is None and record["model"] is not None:
            missing.setdefault(record["file_no"], []).append(record)
    for file_no, group in missing.items():
        keys = [(record["position"], record["model"]) for record in group]
        file = files[file_no]
        found = raw_contents(file, set(keys), prices, allow_pickle, Limits.of(file, max_cost, strict))
        for record, key in zip(group, keys, strict=True):
            if key not in found:
                position, model = key
                raise DataError(f"{files[file_no]}: {position}: no valid {model!r} row on a second read (changed?)")
            record["content"] = found[key]
    return records


def block_models(block: pa.Table) -> pa.Table:
    """The distinct models of a block's valid rows."""
    valid = block.filter(pc.equal(block["reason"], ACCEPTED))
    return pa.table({"model": pc.unique(valid["model"])})


def block_statistics(block: pa.Table, featurizer: TextFeaturizer, n_models: int) -> dict[str, np.ndarray]:
    """Stage 4: one block of training queries → its LinUCB statistics as one row, the task's pid and seconds."""
    from agents.linucb import LinUCBStatistics  # torch comes with it: only the statistics tasks import it

    start = time.perf_counter()
    features = featurizer.transform(block["query"].to_pylist())
    statistics = LinUCBStatistics.of(features, matrix(block, "quality", n_models), matrix(block, "cost", n_models))
    seconds = time.perf_counter() - start
    return statistics.as_arrays() | {"pid": np.array([os.getpid()]), "seconds": np.array([seconds])}


def matrix(table: pa.Table, column: str, n_models: int) -> np.ndarray:
    """A fixed-size-list column as an (N, K) float64 matrix."""
    values = table[column].combine_chunks()
    return np.asarray(values.flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(-1, n_models)
