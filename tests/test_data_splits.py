"""Splits by query_id (stable when data is appended; by time) and the data fingerprint (docs/contracts.md §1)."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.fingerprint import fingerprint
from data.loading import load_log
from data.routing_log import RoutingLog
from data.schema import DataError
from data.splits import SplitFractions, split


def make_log(n: int, timestamps: np.ndarray | None = None) -> RoutingLog:
    """A one-model log of ``n`` queries ``id-0 .. id-<n-1>``."""
    return RoutingLog(
        models=("a",),
        query_ids=np.array([f"id-{i}" for i in range(n)], dtype=object),
        queries=[f"text {i}" for i in range(n)],
        quality=np.zeros((n, 1)),
        cost=np.zeros((n, 1)),
        timestamps=timestamps,
    )


def assignment(log: RoutingLog, seed: int, fractions: SplitFractions | None = None) -> dict[str, str]:
    """query_id → split name."""
    splits = split(log, fractions or SplitFractions(), seed)
    return {
        str(log.query_ids[i]): name
        for name, index in (("train", splits.train), ("validation", splits.validation), ("test", splits.test))
        for i in index.tolist()
    }


def test_split_fractions_are_approximately_right() -> None:
    counts = split(make_log(20000), SplitFractions(), seed=0).counts()
    assert sum(counts.values()) == 20000
    for name, share in (("train", 0.6), ("validation", 0.1), ("test", 0.3)):
        assert abs(counts[name] / 20000 - share) < 0.015, counts
    custom = split(make_log(20000), SplitFractions(0.8, 0.0, 0.2), seed=0).counts()
    assert custom["validation"] == 0 and abs(custom["train"] / 20000 - 0.8) < 0.015


def test_existing_queries_keep_their_split_when_queries_are_appended() -> None:
    before = assignment(make_log(3000), seed=7)
    after = assignment(make_log(9000), seed=7)
    assert all(after[query_id] == name for query_id, name in before.items())


def test_a_query_split_does_not_depend_on_row_order() -> None:
    log = make_log(2000)
    reversed_log = log.subset(np.arange(log.n_queries)[::-1])
    assert assignment(log, seed=3) == assignment(reversed_log, seed=3)


def test_different_seeds_give_different_splits() -> None:
    first, second = assignment(make_log(2000), seed=0), assignment(make_log(2000), seed=1)
    moved = sum(first[q] != second[q] for q in first)
    assert moved > 500  # independent draws move about half the queries


def test_time_split_puts_later_queries_in_test() -> None:
    rng = np.random.default_rng(0)
    stamps = np.datetime64("2024-01-01T00:00:00", "ms") + rng.permutation(1000) * np.timedelta64(1, "m")
    log = make_log(1000, timestamps=stamps)
    splits = split(log, SplitFractions(), seed=0, kind="time")
    assert splits.counts() == {"train": 600, "validation": 100, "test": 300}
    assert stamps[splits.train].max() < stamps[splits.validation].min()
    assert stamps[splits.validation].max() < stamps[splits.test].min()


def test_time_split_needs_timestamps() -> None:
    with pytest.raises(DataError, match="timestamp"):
        split(make_log(10), SplitFractions(), seed=0, kind="time")


@pytest.mark.parametrize("shares", [(0.5, 0.1, 0.1), (0.0, 0.5, 0.5), (0.7, -0.1, 0.4)])
def test_bad_fractions_are_an_error(shares: tuple[float, float, float]) -> None:
    with pytest.raises(DataError, match="split fractions"):
        SplitFractions(*shares)


# --------------------------------------------------------------------------- fingerprint


def rows() -> list[dict[str, Any]]:
    """A small full-information log with awkward floats and non-ASCII text."""
    return [
        {
            "query_id": f"q{i}",
            "query": f"¿Qué {i}? “x”",
            "model": m,
            "quality": (i * 7 % 10) / 10,
            "cost": 1 / (3 + i + k),
            "response": f"answer {i}{m}",
        }
        for i in range(12)
        for k, m in enumerate(("beta", "alpha", "gamma"))
    ]


def write(path: Path, data: list[dict[str, Any]]) -> Path:
    """Write ``data`` in the format of ``path``'s suffix."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), encoding="utf-8")
    elif path.suffix == ".csv":
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(data[0]))
            writer.writeheader()
            writer.writerows(data)
    else:
        pq.write_table(pa.Table.from_pylist(data), path)
    return path


def test_fingerprint_ignores_row_order_and_file_format(tmp_path: Path) -> None:
    data = rows()
    reference = load_log(write(tmp_path / "log.jsonl", data)).log.fingerprint
    shuffled = list(data)
    random.Random(0).shuffle(shuffled)
    assert load_log(write(tmp_path / "shuffled.jsonl", shuffled)).log.fingerprint == reference
    assert load_log(write(tmp_path / "log.csv", shuffled)).log.fingerprint == reference
    assert load_log(write(tmp_path / "log.parquet", data)).log.fingerprint == reference
    no_metadata = [{k: v for k, v in r.items() if k != "response"} for r in data]
    assert load_log(write(tmp_path / "bare.jsonl", no_metadata)).log.fingerprint == reference


def test_fingerprint_changes_when_one_quality_changes(tmp_path: Path) -> None:
    data = rows()
    reference = load_log(write(tmp_path / "log.jsonl", data)).log.fingerprint
    data[5] = data[5] | {"quality": data[5]["quality"] + 0.05}
    assert load_log(write(tmp_path / "changed.jsonl", data)).log.fingerprint != reference


def test_fingerprint_is_the_documented_canonical_form(tmp_path: Path) -> None:
    """sha256 of sorted (query_id, model) lines ``[query_id, query, model, quality, cost]``."""
    data = rows()
    canonical = "".join(
        json.dumps(
            [r["query_id"], r["query"], r["model"], float(r["quality"]), float(r["cost"])],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        + "\n"
        for r in sorted(data, key=lambda r: (r["query_id"], r["model"]))
    )
    log = load_log(write(tmp_path / "log.jsonl", data)).log
    assert log.fingerprint == hashlib.sha256(canonical.encode("utf-8")).hexdigest() == fingerprint(log)
