"""What the Ray workers of :mod:`training.distributed` run on each block: read, per-query rules, statistics.

Kept apart from :mod:`training.distributed` so that a worker process imports only ``data``,
numpy and pyarrow (a task deserialises its function by importing this module; torch is imported
only by the statistics actors, for :class:`agents.linucb.LinUCBStatistics`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.decision_log import Pending, join_decisions
from data.featurizer import TextFeaturizer
from data.prices import PriceTable
from data.reading import ParsedRow, read_file
from data.schema import DataError, RejectReason
from data.splits import hash_unit
from data.validation import Invalid, validate

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
            *REJECTION_FIELDS,
        ]
    )


def read_block(batch: dict[str, np.ndarray], prices: PriceTable, allow_pickle: bool) -> pa.Table:
    """Stage 1: read and validate the files of ``batch`` (one row per file) into :data:`ROW_SCHEMA` rows."""
    columns: dict[str, list[Any]] = {name: [] for name in ROW_SCHEMA.names}

    def add(fields: dict[str, Any] | None, number: int, position: int, reason: str, detail: str, raw: Any) -> None:
        outcome = fields or {}
        columns["query_id"].append(outcome.get("query_id"))
        columns["query"].append(outcome.get("query"))
        columns["model"].append(outcome.get("model"))
        columns["quality"].append(outcome.get("quality"))
        columns["cost"].append(outcome.get("cost"))
        columns["file_no"].append(number)
        columns["position"].append(position)
        columns["reason"].append(reason)
        columns["detail"].append(detail)
        columns["content"].append(None if raw is None else json.dumps(raw, ensure_ascii=False, default=str))

    for number, name in zip(batch["file_no"].tolist(), batch["file"].tolist()):
        file = Path(name)
        for item in join_decisions(read_file(file, allow_pickle=allow_pickle)):
            if isinstance(item, Pending):
                raise DataError(f"{file}: a decision log is bandit feedback; --ray fits full-information logs")
            if not isinstance(item, ParsedRow):
                add(None, number, item.position, item.reason.value, item.detail, item.raw)
                continue
            try:
                outcome = validate(item.fields, prices)
            except Invalid as invalid:
                add(None, number, item.position, invalid.reason.value, invalid.detail, item.fields)
                continue
            if outcome.propensity is not None:
                raise DataError(
                    f"{file}: {item.locator} {item.position}: a row with propensity (bandit feedback); "
                    "--ray fits full-information logs"
                )
            add(outcome._asdict(), number, item.position, ACCEPTED, "", item.fields)
    return pa.table(columns, schema=ROW_SCHEMA)


def query_rules(rows: pa.Table, models: list[str], seed: int) -> pa.Table:
    """Stage 2, one query's valid rows: the cross-row rules of :mod:`data.log_builder`, in reading order.

    A row whose text differs from the query's first row is ``conflicting text``; a second row of a
    model ``duplicate outcome``; a query that then lacks a model has its rows rejected as
    ``incomplete query``. A complete query becomes one record with its models' outcomes.
    """
    order = np.lexsort((rows["position"].to_numpy(), rows["file_no"].to_numpy()))
    rows = rows.take(pa.array(order))
    index = {model: k for k, model in enumerate(models)}
    texts, names = rows["query"].to_pylist(), rows["model"].to_pylist()
    quality, cost = rows["quality"].to_numpy(), rows["cost"].to_numpy()
    query_id = rows["query_id"][0].as_py()
    accepted: dict[int, int] = {}  # model index -> row
    records: dict[str, list[Any]] = {name: [] for name in query_schema(len(models)).names}

    def reject(row: int, reason: RejectReason, detail: str) -> None:
        for name in ("query_id", "query", "quality", "cost", "split"):
            records[name].append(None)
        records["file_no"].append(rows["file_no"][row].as_py())
        records["position"].append(rows["position"][row].as_py())
        records["reason"].append(reason.value)
        records["detail"].append(detail)
        records["content"].append(rows["content"][row].as_py())

    for row, (text, model) in enumerate(zip(texts, names)):
        if text != texts[0]:  # the first row is always accepted: every row here passed validation
            reject(row, RejectReason.CONFLICTING_TEXT, f"query_id {query_id!r} was first seen with different text")
        elif index[model] in accepted:
            reject(row, RejectReason.DUPLICATE_OUTCOME, f"({query_id!r}, {model!r}) already has an outcome")
        else:
            accepted[index[model]] = row
    if len(accepted) < len(models):
        detail = f"query {query_id!r} has {len(accepted)} of {len(models)} models' outcomes"
        for row in sorted(accepted.values()):
            reject(row, RejectReason.INCOMPLETE_QUERY, detail)
    else:
        first = min(accepted.values())
        cells = [accepted[k] for k in range(len(models))]
        records["query_id"].append(query_id)
        records["query"].append(texts[first])
        records["quality"].append(quality[cells].tolist())
        records["cost"].append(cost[cells].tolist())
        records["split"].append(float(hash_unit(np.array([query_id], dtype=object), seed)[0]))
        records["file_no"].append(rows["file_no"][first].as_py())
        records["position"].append(rows["position"][first].as_py())
        records["reason"].append(ACCEPTED)
        records["detail"].append("")
        records["content"].append(None)
    return pa.table(records, schema=query_schema(len(models)))


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


def compact(block: pa.Table) -> pa.Table:
    """One chunk per column: ``map_groups`` leaves one chunk per query, and every later stage paid per chunk."""
    return block.combine_chunks()
