"""Readers (docs/contracts.md §1): JSONL, CSV long, Parquet, RouterBench wide CSV and pickle, a directory
of mixed files, file-level errors (one DataError naming the file; exit 2 from train.py) and the
real RouterBench logs."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pandas
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_train

from data.loading import load_log
from data.reading import ParsedRow, read_file
from data.schema import DataError

#: What a RouterBench wide row becomes; ``task`` is its ``eval_name`` (docs/contracts.md §1.4).
CANONICAL_FIELDS = {"query_id", "query", "model", "quality", "cost", "response", "task"}


def rows_for(queries: range) -> list[dict[str, Any]]:
    """Full-information rows for queries ``q<i>`` × models a, b, with non-ASCII text."""
    return [
        {
            "query_id": f"q{i}",
            "query": f"Frage {i}: grüße, “quotes” \\ ok?",
            "model": m,
            "quality": round(0.1 * i + 0.3 * k, 3),
            "cost": 1e-4 * (i + 1) * (k + 1),
        }
        for i in queries
        for k, m in enumerate(("a", "b"))
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


WRITERS = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}


def outcomes(path: Path, **options: Any) -> dict[tuple[str, str], tuple[str, float, float]]:
    """The accepted outcomes of the log at ``path``: (query_id, model) → (query, quality, cost)."""
    log = load_log(path, **options).log
    return {
        (str(log.query_ids[i]), m): (log.queries[i], float(log.quality[i, k]), float(log.cost[i, k]))
        for i in range(log.n_queries)
        for k, m in enumerate(log.models)
    }


def expected(rows: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, float, float]]:
    return {(r["query_id"], r["model"]): (r["query"], r["quality"], r["cost"]) for r in rows}


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_each_long_format_reads_every_row_exactly(fmt: str, tmp_path: Path) -> None:
    rows = rows_for(range(4))
    path = WRITERS[fmt](tmp_path / f"log.{fmt}", rows)
    assert outcomes(path) == expected(rows)
    stats = load_log(path).log.stats
    assert (stats.rows_read, stats.rows_accepted, stats.rows_rejected) == (8, 8, 0)
    assert stats.files == (str(path),)


def test_a_directory_reads_every_log_file_in_it(tmp_path: Path) -> None:
    rows = rows_for(range(6))
    write_jsonl(tmp_path / "part1.jsonl", rows[:4])
    write_csv(tmp_path / "part2.csv", rows[4:8])
    write_parquet(tmp_path / "part3.parquet", rows[8:])
    (tmp_path / "README.txt").write_text("not a log", encoding="utf-8")
    assert outcomes(tmp_path) == expected(rows)
    stats = load_log(tmp_path).log.stats
    assert [Path(f).name for f in stats.files] == ["part1.jsonl", "part2.csv", "part3.parquet"]


WIDE_HEADER = [
    "",
    "sample_id",
    "prompt",
    "eval_name",
    "m1",
    "m2",
    "m1|total_cost",
    "m2|total_cost",
    "m1|model_response",
    "m2|model_response",
    "oracle_model_to_route_to",
]
WIDE_ROWS = [
    ["0", "s1", "['What is 2+2?', 'Answer:']", "math", "1.0", "0.0", "0.001", "0.01", "4", "5", "m1"],
    ["1", "s2", "Name a colour.", "words", "0.5", "1", "0.002", "0.02", "red", "blue", "m2"],
    ["2", "s3", "[not a list", "words", "", "1", "0.002", "0.02", "", "x", "m2"],
]


def write_wide(path: Path) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(WIDE_HEADER)
        writer.writerows(WIDE_ROWS)
    return path


def test_routerbench_wide_csv_gives_one_outcome_per_model(tmp_path: Path) -> None:
    path = write_wide(tmp_path / "bench.csv")
    items = [item for item in read_file(path) if isinstance(item, ParsedRow)]
    assert len(items) == 6  # 3 rows × 2 models, none unparsable
    assert all(set(item.fields) <= CANONICAL_FIELDS for item in items)  # metadata never a field
    loaded = load_log(path)
    log = loaded.log
    assert log.models == ("m1", "m2")
    assert log.query_ids.tolist() == ["s1", "s2"]
    assert log.queries == ["What is 2+2?\nAnswer:", "Name a colour."]  # a Python-list prompt joined
    assert log.quality.tolist() == [[1.0, 0.0], [0.5, 1.0]]
    assert log.cost.tolist() == [[0.001, 0.01], [0.002, 0.02]]
    assert log.tasks is not None and log.tasks.tolist() == ["math", "words"]  # eval_name
    # s3's m1 score is blank, so its m2 outcome is rejected too (the incomplete-query rule)
    assert log.stats.rejected_by_reason == {"blank score": 1, "incomplete query": 1}
    assert log.stats.rows_read == 6 == log.stats.rows_accepted + log.stats.rows_rejected
    assert {r.position for r in loaded.quarantine.rejections} == {3}


def test_a_pickle_is_refused_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "bench.pkl"
    frame = pandas.DataFrame(WIDE_ROWS, columns=WIDE_HEADER).replace("", None)
    for column in ("m1", "m2", "m1|total_cost", "m2|total_cost"):
        frame[column] = frame[column].astype(float)
    frame.to_pickle(path)
    with pytest.raises(DataError, match=r"bench\.pkl: .*--allow-pickle"):
        load_log(path)
    log = load_log(path, allow_pickle=True).log
    assert log.models == ("m1", "m2") and log.query_ids.tolist() == ["s1", "s2"]
    assert log.queries[0] == "What is 2+2?\nAnswer:"
    assert log.stats.rejected_by_reason == {"blank score": 1, "incomplete query": 1}


def write_empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_unknown(path: Path) -> Path:
    path.write_text("query_id\tquery\n", encoding="utf-8")
    return path


def write_headless_csv(path: Path) -> Path:
    path.write_text("query_id,query,model,cost\nq1,hi,a,0.1\n", encoding="utf-8")
    return path


def write_corrupt_parquet(path: Path) -> Path:
    path.write_bytes(b"PAR1 this is not parquet")
    return path


FILE_PROBLEMS = {
    "missing path": ("absent.jsonl", lambda p: p, "no such file"),
    "empty file": ("empty.jsonl", write_empty, "file is empty"),
    "unknown suffix": ("log.tsv", write_unknown, "unknown log format '.tsv'"),
    "CSV header lacks a column": ("log.csv", write_headless_csv, "missing required column.*quality"),
    "corrupt Parquet": ("log.parquet", write_corrupt_parquet, "not a Parquet file"),
}


@pytest.mark.parametrize("problem", list(FILE_PROBLEMS))
def test_a_file_level_problem_is_one_error_naming_the_file(problem: str, tmp_path: Path) -> None:
    name, make, message = FILE_PROBLEMS[problem]
    path = make(tmp_path / name)
    with pytest.raises(DataError, match=rf"{name.replace('.', r'[.]')}: {message}") as error:
        load_log(path)
    assert "\n" not in str(error.value)


def test_a_directory_without_logs_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here", encoding="utf-8")
    with pytest.raises(DataError, match="holds no log files"):
        load_log(tmp_path)


def test_a_log_without_a_usable_query_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "log.jsonl", [{"query_id": "q", "query": "", "model": "a", "quality": 1, "cost": 0}])
    with pytest.raises(DataError, match=r"no usable query \(1 rows read; rejected: 1 empty query\)"):
        load_log(path)


def test_train_exits_2_with_one_line_for_bad_data(tmp_path: Path) -> None:
    """One case (found while reading, the deepest); each run starts torch, which takes seconds."""
    name, make, _message = FILE_PROBLEMS["CSV header lacks a column"]
    path = make(tmp_path / name)
    done = run_train("--data", str(path), "--out", str(tmp_path / "run"), timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], done.stderr


def test_real_routerbench_logs_load_with_every_rejection_counted(routerbench: Path) -> None:
    loaded = load_log(routerbench)
    log, stats = loaded.log, loaded.log.stats
    assert log.n_models == 11 and log.feedback == "full"
    assert 2000 < log.n_queries < 2300
    assert stats.rows_read == stats.rows_accepted + stats.rows_rejected
    assert stats.rows_accepted == log.n_queries * log.n_models
    assert set(stats.rejected_by_reason) == {"blank score", "conflicting text", "incomplete query"}
    assert all(count > 0 for count in stats.rejected_by_reason.values())
    assert "oracle_model_to_route_to" not in log.models and "eval_name" not in log.models
    assert not any(q.startswith("['") for q in log.queries)  # Python-list prompts are unwrapped


def test_real_routerbench_metadata_never_becomes_a_field(routerbench: Path) -> None:
    for path in sorted(routerbench.glob("*.csv")):
        for item in read_file(path):
            if isinstance(item, ParsedRow):
                assert set(item.fields) <= CANONICAL_FIELDS


def open_a_quote(path: Path, row: int, field: int = 1) -> str:
    """Open a quote that never closes in data row ``row`` of a CSV (line ``row + 1``): the field
    ``field`` gets a leading ``"`` (its text must hold no comma, so that it was written unquoted)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    cells = lines[row].split(",")
    cells[field] = '"' + cells[field]
    lines[row] = ",".join(cells)
    path.write_text("\n".join(lines), encoding="utf-8")
    return lines[row]


def plain_rows(queries: range) -> list[dict[str, Any]]:
    """Rows whose texts need no quoting, and every 3rd query a quoted text (with a comma)."""
    rows = rows_for(queries)
    for row in rows:
        number = int(row["query_id"][1:])
        row["query"] = f"question {number}, with a comma" if number % 3 == 0 else f"question {number}"
    return rows


@pytest.mark.parametrize("quoted_later", [True, False], ids=["a later quote closes it", "it runs to the end"])
@pytest.mark.parametrize("columnar", [True, False])
def test_an_unterminated_csv_quote_rejects_its_line_alone(quoted_later: bool, columnar: bool, tmp_path: Path) -> None:
    """Issue 15, item 6: the rows after an open quote are read, not swallowed into one field."""
    rows = plain_rows(range(7)) if quoted_later else rows_for(range(7))
    if not quoted_later:  # no other quote in the file: the open one runs to the end
        for row in rows:
            row["query"] = f"question {row['query_id']}"
    path = write_csv(tmp_path / "log.csv", rows)
    raw = open_a_quote(path, row=9)  # q4, model a (data row 9, line 10)
    loaded = load_log(path, columnar=columnar, chunk_bytes=64)
    stats = loaded.log.stats
    assert stats.rows_read == len(rows) == stats.rows_accepted + stats.rows_rejected
    assert stats.rejected_by_reason == {"malformed line": 1, "incomplete query": 1}
    first = loaded.quarantine.rejections[0]
    assert (first.position, first.locator, first.content) == (9, "row", raw)
    error = "',' expected after '\"'" if quoted_later else "unexpected end of data"
    assert first.detail == f'unterminated quote (") opened on line 10: {error}'
    assert outcomes(path) == expected([row for row in rows if row["query_id"] != "q4"])


def test_quoted_line_breaks_are_still_one_field(tmp_path: Path) -> None:
    rows = rows_for(range(3))
    rows[2]["query"] = rows[3]["query"] = 'two lines,\r\nthe second "quoted"'
    path = write_csv(tmp_path / "log.csv", rows)
    assert outcomes(path) == expected(rows)
    assert load_log(path, columnar=False).log.stats.rows_rejected == 0


def test_an_unterminated_quote_in_a_wide_csv_rejects_every_model_of_its_line(tmp_path: Path) -> None:
    path = write_wide(tmp_path / "bench.csv")
    raw = open_a_quote(path, row=2, field=3)  # s2's eval_name; s3 still follows
    loaded = load_log(path)
    stats = loaded.log.stats
    assert stats.rows_read == 6
    assert stats.rejected_by_reason == {"malformed line": 2, "blank score": 1, "incomplete query": 1}
    assert [(r.position, r.content) for r in loaded.quarantine.rejections[:2]] == [(2, raw), (2, raw)]


def test_a_csv_header_with_an_unterminated_quote_is_a_file_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "log.csv", rows_for(range(2)))
    path.write_text('"' + path.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(DataError, match=r'log\.csv: line 1: the header has an unterminated quote \("\)'):
        load_log(path)
