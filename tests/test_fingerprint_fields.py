"""The fields the data fingerprint covers, and the accepted ones it does not (data/fingerprint.py, docs §1.10)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from data.loading import load_log

COVERED = {"query_id": "q9", "query": "another text", "model": "c", "quality": 0.25, "cost": 0.5}
NOT_COVERED = {
    "latency_ms": 999.0,
    "timestamp": "2030-01-01T00:00:00Z",
    "expected_quality": 0.125,
    "embedding": [9.0, 9.0],
    "response": "other words",
}


def _rows() -> list[dict[str, Any]]:
    """Two queries × two models with every optional column of a full-information log."""
    return [
        {
            "query_id": f"q{i}",
            "query": f"text {i}",
            "model": model,
            "quality": 0.5 + 0.1 * i,
            "cost": 0.001 * (i + 1),
            "latency_ms": 100.0,
            "timestamp": f"2024-01-0{i + 1}T00:00:00Z",
            "expected_quality": 0.5,
            "embedding": [float(i), 1.0],
            "response": "words",
        }
        for i in range(2)
        for model in ("a", "b")
    ]


def _fingerprint(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    log = load_log(path).log
    assert log.stats.rows_rejected == 0
    return log.fingerprint


@pytest.mark.parametrize("field", sorted(NOT_COVERED))
def test_an_uncovered_field_leaves_the_fingerprint(tmp_path: Path, field: str) -> None:
    rows = _rows()
    reference = _fingerprint(tmp_path / "reference.jsonl", rows)
    changed = [{**row, field: NOT_COVERED[field]} for row in rows]
    assert _fingerprint(tmp_path / "changed.jsonl", changed) == reference


@pytest.mark.parametrize("field", sorted(COVERED))
def test_a_covered_field_changes_the_fingerprint(tmp_path: Path, field: str) -> None:
    rows = _rows()
    reference = _fingerprint(tmp_path / "reference.jsonl", rows)
    # Query q0's rows, or model a's everywhere, so that every query keeps one outcome per model.
    touched = (lambda row: row["model"] == "a") if field == "model" else (lambda row: row["query_id"] == "q0")
    changed = [{**row, field: COVERED[field]} if touched(row) else row for row in rows]
    assert _fingerprint(tmp_path / "changed.jsonl", changed) != reference
