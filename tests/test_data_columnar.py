"""The columnar loading path gives exactly what the per-row path gives, on every kind of log.

``load_log(columnar=True)`` reads blocks with pyarrow and hands any block it cannot take whole to
the per-row path; ``columnar=False`` is the per-row path alone. Both must give the same accepted
log (values, order, fingerprint, stats) and the same quarantine (file, position, reason,
detail, content), on logs with every rejection reason (the fixtures of
``test_data_validation.py``), in every format, and on RouterBench. Small blocks make every log
mix columnar blocks with per-row fallbacks; a spy checks that the columnar path really ran.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_data_validation import CASES, PRICES, bad, good_rows, write_jsonl, write_log

from data.loading import LoadedLog, load_log
from data.log_builder import LogBuilder
from data.schema import DataError, StrictModeError
from data.synth import SynthConfig, generate, write

#: Small blocks (a few rows each) and one large block.
CHUNKS = (64, 1 << 20)


@pytest.fixture
def columnar_rows(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Rows accepted by whole columnar blocks during the test (a spy on ``LogBuilder.add_block``)."""
    accepted: list[int] = []
    original = LogBuilder.add_block

    def spy(self: LogBuilder, block: Any) -> bool:
        taken = original(self, block)
        if taken:
            accepted.append(block.rows)
        return taken

    monkeypatch.setattr(LogBuilder, "add_block", spy)
    yield accepted


def assert_same(path: Path, chunk_bytes: int, **options: Any) -> LoadedLog:
    """Load ``path`` both ways and assert every field of the result and of the quarantine is equal."""
    rows = load_log(path, columnar=False, **options)
    fast = load_log(path, columnar=True, chunk_bytes=chunk_bytes, **options)
    a, b = rows.log, fast.log
    assert a.models == b.models
    assert a.query_ids.tolist() == b.query_ids.tolist()
    assert a.queries == b.queries
    assert (a.tasks is None or a.tasks.tolist()) == (b.tasks is None or b.tasks.tolist())
    optional = ("propensity", "latency_ms", "energy_wh", "expected_quality", "embeddings")
    for name in ("quality", "cost", "action", *optional):
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None), name
        if left is not None:
            np.testing.assert_array_equal(left, right, err_msg=name)
            assert np.array_equal(np.signbit(left), np.signbit(right)), name
    if a.timestamps is None:
        assert b.timestamps is None
    else:
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert (a.feedback, a.stats, a.fingerprint) == (b.feedback, b.stats, b.fingerprint)
    left_records = [json.dumps(r.to_json(), default=str) for r in rows.quarantine.rejections]
    right_records = [json.dumps(r.to_json(), default=str) for r in fast.quarantine.rejections]
    assert left_records == right_records
    return fast


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
@pytest.mark.parametrize("name", list(CASES))
def test_every_rejection_reason_gives_the_same_log_and_quarantine(
    name: str, chunk_bytes: int, tmp_path: Path, columnar_rows: list[int]
) -> None:
    path = tmp_path / "log.jsonl"
    write_log(path, CASES[name])
    fast = assert_same(path, chunk_bytes, prices=PRICES)
    assert fast.log.stats.rows_rejected == 1
    if chunk_bytes == CHUNKS[0] and CASES[name].reason.value not in ("conflicting text", "duplicate outcome"):
        assert sum(columnar_rows) > 0, "the good blocks were read by the columnar path"


def write_synth(path: Path, **config: Any) -> Path:
    write(generate(SynthConfig(**({"queries": 300, "models": 4, "words_per_query": 12} | config))), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_clean_logs_are_read_by_blocks_in_every_format(suffix: str, tmp_path: Path, columnar_rows: list[int]) -> None:
    path = write_synth(tmp_path / f"log{suffix}")
    fast = assert_same(path, 4096)
    assert sum(columnar_rows) == fast.log.stats.rows_read == 1200
    assert fast.log.timestamps is not None and fast.log.expected_quality is not None


def test_bandit_logs_are_read_by_blocks(tmp_path: Path, columnar_rows: list[int]) -> None:
    path = write_synth(tmp_path / "log.jsonl", bandit=True)
    fast = assert_same(path, 4096)
    assert fast.log.feedback == "bandit"
    assert sum(columnar_rows) == 300


def test_bad_rows_among_many_fall_back_per_block_only(tmp_path: Path, columnar_rows: list[int]) -> None:
    """Every reason at once, spread through a long clean log: only their blocks go per row."""
    clean = [
        json.dumps(good_rows()[k % 2] | {"query_id": f"q{i}", "query": f"question {i}?"}).encode() + b"\n"
        for i in range(300)
        for k in range(2)
    ]
    bad_lines = [
        case.line if isinstance(case.line, bytes) else json.dumps(case.line).encode()
        for case in CASES.values()
        if not case.last
    ]
    lines = list(clean)
    for i, line in enumerate(bad_lines):
        lines.insert(40 * (i + 1), line + b"\n")
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"".join(lines) + b'{"query_id": "t", "quer')
    fast = assert_same(path, 2048, prices=PRICES)
    assert fast.log.stats.rows_rejected >= len(bad_lines)
    assert 0 < sum(columnar_rows) < fast.log.stats.rows_accepted


def test_csv_with_bad_rows_and_a_bad_record(tmp_path: Path, columnar_rows: list[int]) -> None:
    rows = [*good_rows(), bad(quality=1.5), bad(query_id="y", cost="cheap"), *good_rows()[:2]]
    path = tmp_path / "log.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(good_rows()[0]))
        writer.writeheader()
        writer.writerows({k: v for k, v in row.items() if k in good_rows()[0]} for row in rows)
        handle.write("only,three,fields\n")
        writer.writerow(good_rows()[0] | {"query_id": "z", "query": 'a "quoted",\nmulti-line text'})
    for chunk_bytes in CHUNKS:
        assert_same(path, chunk_bytes)
    assert sum(columnar_rows) > 0


def test_wide_csv_is_read_by_blocks(tmp_path: Path, columnar_rows: list[int]) -> None:
    header = ["", "sample_id", "prompt", "eval_name", "m1", "m1|total_cost", "m2", "m2|total_cost"]
    records = [
        [str(i), f"s{i}", f"['question {i}', 'part two']" if i % 3 == 0 else f'question {i}, "quoted"', "e", *scores]
        for i in range(60)
        for scores in [[str((i % 5) / 4), f"{0.001 * i!r}", "1", "2e-05"]]
    ]
    records[7][4] = ""  # a blank score
    records[20][1] = "s3"  # a repeated sample_id
    path = tmp_path / "wide.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *records])
    for chunk_bytes in (256, 1 << 20):
        assert_same(path, chunk_bytes)
    assert sum(columnar_rows) > 0


def test_routerbench_gives_the_same_log_and_quarantine(routerbench: Path) -> None:
    for chunk_bytes in (1 << 16, 1 << 25):
        fast = assert_same(routerbench, chunk_bytes)
        assert fast.log.stats.rows_rejected > 0


def test_strict_stops_at_the_same_row(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    write_log(path, CASES["quality above 1"])
    messages = []
    for columnar in (False, True):
        with pytest.raises(StrictModeError) as error:
            load_log(path, strict=True, columnar=columnar, chunk_bytes=64)
        messages.append(str(error.value))
    assert messages[0] == messages[1]


def test_a_mixed_kind_log_is_the_same_error(tmp_path: Path) -> None:
    rows = good_rows()
    rows[4] = rows[4] | {"propensity": 0.5}
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    messages = []
    for columnar in (False, True):
        with pytest.raises(DataError) as error:
            load_log(path, columnar=columnar, chunk_bytes=64)
        messages.append(str(error.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_conflicting_text_without_a_duplicate_falls_back(chunk_bytes: int, tmp_path: Path) -> None:
    """A query's other model with other text: in the same block or a later one, never accepted."""
    rows = good_rows()
    rows[3] = rows[3] | {"query": "changed"}  # (q1, b): q1 was first seen with its own text
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    fast = assert_same(path, chunk_bytes)
    assert fast.log.stats.rejected_by_reason == {"conflicting text": 1, "incomplete query": 1}


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_an_embedding_of_another_length_gives_the_same_quarantine(chunk_bytes: int, tmp_path: Path) -> None:
    """The cross-row embedding rule (not among ``CASES``: it needs a log of embeddings)."""
    rows = [row | {"embedding": [0.1, 0.2, 0.3]} for row in good_rows()]
    rows.insert(3, bad(embedding=[0.1, 0.2], model="c"))
    fast = assert_same(write_jsonl(tmp_path / "log.jsonl", rows), chunk_bytes)
    assert fast.log.stats.rejected_by_reason == {"bad embedding": 1}


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_a_repeated_bandit_query_gives_the_same_quarantine(chunk_bytes: int, tmp_path: Path) -> None:
    """The bandit form of the duplicate-outcome rule (a query has one logged action), in a later block."""
    rows = [row | {"propensity": 0.5} for row in good_rows()[::2]]
    rows.append(rows[0] | {"model": "b"})
    fast = assert_same(write_jsonl(tmp_path / "log.jsonl", rows), chunk_bytes)
    assert fast.log.stats.rejected_by_reason == {"duplicate outcome": 1}


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_a_duplicate_outcome_with_the_same_text_falls_back(chunk_bytes: int, tmp_path: Path) -> None:
    rows = [*good_rows(), good_rows()[1] | {"quality": 0.5}]
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    fast = assert_same(path, chunk_bytes)
    assert fast.log.stats.rejected_by_reason == {"duplicate outcome": 1}


def test_crlf_lines_blank_lines_and_integer_ids(tmp_path: Path, columnar_rows: list[int]) -> None:
    """Windows line ends are read by blocks; a blank line or integer ids send their block per row."""
    lines = [json.dumps(row).encode() for row in good_rows()]
    crlf = write_jsonl(tmp_path / "crlf.jsonl", [])
    crlf.write_bytes(b"\r\n".join(lines) + b"\r\n")
    assert_same(crlf, 1 << 20)
    assert sum(columnar_rows) == len(lines)
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n".join(lines[:3]) + b"\n\n  \n" + b"\n".join(lines[3:]) + b"\n")
    numbered = write_jsonl(tmp_path / "ids.jsonl", [row | {"query_id": i // 2} for i, row in enumerate(good_rows())])
    for path in (blank, numbered):
        for chunk_bytes in CHUNKS:
            assert_same(path, chunk_bytes)


def test_parquet_with_integer_ids_and_float32_values(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = good_rows()
    table = pa.table(
        {
            "query_id": pa.array([int(r["query_id"][1:]) for r in rows], pa.int64()),
            "query": [r["query"] for r in rows],
            "model": [r["model"] for r in rows],
            "quality": pa.array([r["quality"] for r in rows], pa.float32()),
            "cost": pa.array([r["cost"] for r in rows], pa.float32()),
        }
    )
    pq.write_table(table, tmp_path / "ints.parquet")
    pq.write_table(table.set_column(0, "query_id", pa.array([r["query_id"] for r in rows])), tmp_path / "f32.parquet")
    for name in ("ints.parquet", "f32.parquet"):
        assert_same(tmp_path / name, 1 << 20)


def write_multiline_csv(path: Path, queries: int, torn: int | None = None) -> Path:
    """A long CSV whose texts span two lines (quoted line breaks); ``torn``: that data row's quote never closes."""
    rows = [
        good_rows()[k] | {"query_id": f"q{i}", "query": f'question {i},\nits "second" line'}
        for i in range(queries)
        for k in range(2)
    ]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(good_rows()[0]))
        writer.writeheader()
        for number, row in enumerate(rows, start=1):
            if number == torn:
                handle.write(f'{row["query_id"]},"an open quote,a,0.5,0.001,10.0,2024-01-01T00:00:00Z\n')
            writer.writerow(row)
    return path


def test_quoted_line_breaks_are_read_by_blocks(tmp_path: Path, columnar_rows: list[int]) -> None:
    fast = assert_same(write_multiline_csv(tmp_path / "log.csv", 100), 4096)
    assert sum(columnar_rows) == fast.log.stats.rows_accepted == 200


@pytest.mark.parametrize("chunk_bytes", [*CHUNKS, 4096])
def test_an_unterminated_quote_after_quoted_line_breaks_gives_the_same_quarantine(
    chunk_bytes: int, tmp_path: Path, columnar_rows: list[int]
) -> None:
    """Issue 15, item 6: blocks whose values hold line breaks are checked for the per-row path's rule."""
    fast = assert_same(write_multiline_csv(tmp_path / "log.csv", 100, torn=151), chunk_bytes)
    assert fast.log.stats.rows_read == 201
    assert fast.log.stats.rejected_by_reason == {"malformed line": 1}  # the lines after it are read again
    if chunk_bytes == 4096:
        assert 0 < sum(columnar_rows) < 200, "the blocks before the open quote were read by blocks"


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_a_cost_above_the_maximum_gives_the_same_quarantine(chunk_bytes: int, tmp_path: Path) -> None:
    rows = [*good_rows(), bad(cost=5.0), bad(cost=0.25, model="b")]
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    for max_cost in (1.0, 0.3, 1e-3):
        assert_same(path, chunk_bytes, max_cost=max_cost)


@pytest.mark.parametrize("strict", [False, True])
def test_numbers_as_text_in_parquet_give_the_same_result(strict: bool, tmp_path: Path) -> None:
    """A Parquet column of numeric text is read as numbers; under ``--strict`` both paths refuse it alike."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = good_rows()
    table = pa.table({name: [str(row[name]) if name == "cost" else row[name] for row in rows] for name in rows[0]})
    pq.write_table(table, tmp_path / "log.parquet")
    if not strict:
        assert_same(tmp_path / "log.parquet", 1 << 20)
        return
    messages = []
    for columnar in (False, True):
        with pytest.raises(StrictModeError) as error:
            load_log(tmp_path / "log.parquet", strict=True, columnar=columnar)
        messages.append(str(error.value))
    assert messages[0] == messages[1] and "row 1: bad cost: cost='0.001' is a number written as text" in messages[0]
