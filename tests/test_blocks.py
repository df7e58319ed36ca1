"""The per-query rules that ``train.py --ray`` applies to each block (:func:`training.blocks.query_rules`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.splits import hash_unit
from training.blocks import ACCEPTED, ROW_SCHEMA, matrix, query_rules

MODELS = ["big", "small"]


def _rows(*rows: tuple[str, str, str, float, int, int]) -> pa.Table:
    """Valid rows ``(query_id, query, model, quality, file_no, position)``; cost = quality / 10."""
    columns: dict[str, list] = {name: [] for name in ROW_SCHEMA.names}
    for query_id, query, model, quality, file_no, position in rows:
        for name, value in zip(
            ROW_SCHEMA.names,
            (query_id, query, model, quality, quality / 10, file_no, position, ACCEPTED, "", f"raw {position}"),
            strict=True,
        ):
            columns[name].append(value)
    return pa.table(columns, schema=ROW_SCHEMA)


def test_rules_in_reading_order_over_a_block_of_queries() -> None:
    rows = _rows(
        ("q2", "two", "small", 0.5, 1, 3),
        ("q1", "one", "big", 1.0, 0, 0),
        ("q2", "two", "big", 0.25, 0, 9),
        ("q1", "one", "small", 0.0, 0, 1),
        ("q2", "TWO", "small", 0.75, 0, 2),  # q2's first row in reading order: the others conflict
        ("q3", "three", "big", 1.0, 0, 4),
        ("q3", "three", "big", 0.0, 0, 5),  # a second outcome of (q3, big)
    )
    out = query_rules(rows, MODELS, seed=0)
    kept = out.filter(pc.equal(out["reason"], ACCEPTED))
    assert kept["query_id"].to_pylist() == ["q1"]
    np.testing.assert_array_equal(matrix(kept, "quality", 2), [[1.0, 0.0]])
    np.testing.assert_array_equal(matrix(kept, "cost", 2), [[0.1, 0.0]])
    assert kept["split"].to_pylist() == hash_unit(np.array(["q1"], dtype=object), 0).tolist()
    assert (kept["file_no"][0].as_py(), kept["position"][0].as_py()) == (0, 0)

    rejected = {
        (r["file_no"], r["position"]): r for r in out.filter(pa.compute.not_equal(out["reason"], "")).to_pylist()
    }
    assert {key: r["reason"] for key, r in rejected.items()} == {
        (1, 3): "conflicting text",
        (0, 9): "conflicting text",
        (0, 2): "incomplete query",  # q2 keeps only its 'small' row
        (0, 5): "duplicate outcome",
        (0, 4): "incomplete query",  # q3 never had 'small'
    }
    assert rejected[(0, 5)]["detail"] == "('q3', 'big') already has an outcome"
    assert rejected[(0, 2)]["detail"] == "query 'q2' has 1 of 2 models' outcomes"
    assert rejected[(1, 3)]["detail"] == "query_id 'q2' was first seen with different text"
    assert rejected[(0, 5)]["content"] == "raw 5" and rejected[(0, 5)]["query_id"] is None


def test_an_empty_block_gives_an_empty_table() -> None:
    out = query_rules(_rows(), MODELS, seed=0)
    assert out.num_rows == 0 and "split" in out.column_names
