"""What ``train.py --ray`` runs on each block: reading and the per-query rules (:mod:`training.blocks`).

Stages 1 and 2 of :mod:`training.distributed` run here without Ray, on one block of every file
(:func:`rejected_by_blocks`): on every bad row of ``test_data_validation.CASES`` and on one log
of every kind of bad row in four files, the blocks reject the same rows with the same reasons
and messages as the per-row and columnar loaders, byte for byte in ``rejected.jsonl``, and every
rule of :mod:`data.rules` that a ``--ray`` log can meet is among them; the rules that only
``--strict`` or a set ``data.max_cost`` meets are checked alike on the three paths too.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_data_validation import CASES, PRICES, Case, bad, catalogue, good_rows, rule_of, write_jsonl, write_log

from data import rules
from data.loading import load_log
from data.prices import PriceTable
from data.quarantine import Quarantine
from data.reading import list_files
from data.rules import MAX_COST, VALUE_RULES
from data.schema import DataError, StrictModeError
from data.splits import hash_unit
from training.blocks import (
    ACCEPTED,
    REJECTION_FIELDS,
    ROW_SCHEMA,
    matrix,
    quarantine_in_order,
    query_rules,
    read_block,
)

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


def rejected_by_blocks(
    path: Path, prices: PriceTable, max_cost: float = MAX_COST, strict: bool = False
) -> tuple[int, Quarantine]:
    """Stages 1 and 2 of ``train.py --ray`` on one block of all of ``path``'s files: rows read, quarantine."""
    files = list_files(path)
    batch = {"file_no": np.arange(len(files)), "file": np.array([str(file) for file in files], dtype=object)}
    rows = read_block(batch, prices, allow_pickle=False, max_cost=max_cost, strict=strict)
    valid = rows.filter(pc.equal(rows["reason"], ACCEPTED))
    queries = query_rules(valid, sorted(set(valid["model"].to_pylist())), seed=0)
    fields = ["model", *(name for name, _ in REJECTION_FIELDS)]
    rejected = pa.concat_tables(
        [table.filter(pc.not_equal(table["reason"], ACCEPTED)).select(fields) for table in (rows, queries)]
    )
    quarantine = quarantine_in_order(rejected, files, strict, prices=prices, allow_pickle=False, max_cost=max_cost)
    return rows.num_rows, quarantine


def rejected_lines(quarantine: Quarantine, out: Path) -> str:
    """``rejected.jsonl`` as written."""
    quarantine.write(out)
    return out.read_text(encoding="utf-8")


def assert_three_paths_agree(path: Path, tmp_path: Path, chunk_bytes: int, max_cost: float = MAX_COST) -> list[dict]:
    """Per row, columnar and ``--ray`` blocks read the same rows and write the same ``rejected.jsonl``."""
    per_row = load_log(path, prices=PRICES, columnar=False, max_cost=max_cost)
    columnar = load_log(path, prices=PRICES, columnar=True, chunk_bytes=chunk_bytes, max_cost=max_cost)
    rows_read, blocks = rejected_by_blocks(path, PRICES, max_cost)
    assert per_row.log.stats.rows_read == columnar.log.stats.rows_read == rows_read
    written = rejected_lines(per_row.quarantine, tmp_path / "per-row.jsonl")
    assert rejected_lines(columnar.quarantine, tmp_path / "columnar.jsonl") == written
    assert rejected_lines(blocks, tmp_path / "blocks.jsonl") == written
    return [json.loads(line) for line in written.splitlines()]


@pytest.mark.parametrize("name", list(CASES))
def test_each_bad_row_is_rejected_alike_on_the_three_paths(name: str, tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    write_log(path, CASES[name])
    [record] = assert_three_paths_agree(path, tmp_path, chunk_bytes=64)
    assert record["reason"] == CASES[name].reason.value


#: Rules that no ``--ray`` log meets, and where their parity is tested instead.
NOT_ON_RAY = {
    "EMBEDDING_LENGTH": "--ray reads no embeddings; test_data_columnar.py",
    "DUPLICATE_ACTION": "bandit feedback, which --ray refuses; test_data_columnar.py",
    "ALREADY_DECIDED": "decision logs, which --ray refuses; test_data_decision_log.py",
    "SECOND_FEEDBACK": "decision logs",
    "FALLBACK_DECISION": "decision logs",
    "FALLBACK_FEEDBACK": "decision logs",
    "CASCADE_DECISION": "decision logs",
    "CASCADE_FEEDBACK": "decision logs",
    "ORPHAN_FEEDBACK": "decision logs",
}
if sys.version_info >= (3, 11):  # the csv module raises no error on any record since 3.11 (3.10: a NUL byte)
    NOT_ON_RAY["MALFORMED_CSV"] = "unreachable on Python >= 3.11"
#: Rules that only ``--strict`` meets (it stops at the first, so no log has several): each is
#: met alike on the three paths by ``test_strict_refuses_numbers_as_text_alike_on_the_three_paths``.
STRICT_ONLY = {f"{name} as text" for name, rule in vars(rules).items() if isinstance(rule, rules.ValueRule)}


def adversarial_log(directory: Path) -> Path:
    """Every kind of bad row in one log of four files; queries and models span the files.

    ``1.jsonl``: the good rows of ``test_data_validation`` with every bad line of ``CASES``
    between them, a truncated last line. ``2.csv`` (long): more queries, a blank score, an
    unterminated quote (the rows after it are read all the same), a short record, a field that is
    not UTF-8, and across files a conflicting text and a duplicate.
    ``3.csv`` (RouterBench wide): a blank score (its query becomes incomplete), a repeated
    sample_id, a short record. ``4.parquet``: valid rows only, one of them a duplicate outcome
    of ``2.csv``, which the blocks find after reading the file without contents.
    """
    directory.mkdir()
    cases: list[Case] = [case for case in CASES.values() if not case.last]
    lines = [json.dumps(row).encode() for row in good_rows()]
    for number, case in enumerate(cases):
        lines.insert(
            2 * number % len(lines), case.line if isinstance(case.line, bytes) else json.dumps(case.line).encode()
        )
    (directory / "1.jsonl").write_bytes(b"\n".join(lines) + b"\n" + b'{"query_id": "t", "quer')

    long_rows = [row | {"query_id": f"c{row['query_id']}"} for row in good_rows()]
    long_rows += [
        bad(query_id="c9", quality=""),  # blank score
        good_rows()[0] | {"query": "other text"},  # conflicting with 1.jsonl's q0
        good_rows()[5] | {"quality": 0.0},  # a duplicate of 1.jsonl's (q2, b)
    ]
    with open(directory / "2.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(good_rows()[0]))
        writer.writeheader()
        writer.writerows(long_rows[:4])
        handle.write('c8,"an open quote,a,0.5,0.001,10.0,2024-01-01T00:00:00Z\n')  # runs to the end of the file
        writer.writerows(long_rows[4:])
        handle.write("only,three,fields\n")
        writer.writerow(good_rows()[0] | {"query_id": "PLACEHOLDER"})
    (directory / "2.csv").write_bytes((directory / "2.csv").read_bytes().replace(b"PLACEHOLDER", b"caf\xe9"))

    header = ["sample_id", "prompt", "a", "a|total_cost", "b", "b|total_cost"]
    records = [[f"w{i}", f"['wide question {i}']", "0.5", "0.001", "1", "0.002"] for i in range(5)]
    records[1][2] = ""  # a blank score: w1 has only b
    records.append([*records[3][:2], "0", "0.003", "0", "0.004"])  # a repeated sample_id
    records.append(["w9", "too short"])
    with open(directory / "3.csv", "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *records])

    clean = [row | {"query_id": f"p{row['query_id']}"} for row in good_rows()] + [long_rows[1] | {"quality": 1.0}]
    columns = ("query_id", "query", "model", "quality", "cost")
    pq.write_table(pa.table({name: [row[name] for row in clean] for name in columns}), directory / "4.parquet")
    return directory


def test_every_kind_of_bad_row_is_rejected_alike_on_the_three_paths(tmp_path: Path) -> None:
    records = assert_three_paths_agree(adversarial_log(tmp_path / "log"), tmp_path, chunk_bytes=256)
    made = {rule_of(record["reason"], record["detail"]) for record in records}
    assert None not in made, "every rejection is made by a rule of data.rules"
    assert made == set(catalogue()) - set(NOT_ON_RAY) - STRICT_ONLY


def test_a_set_maximum_cost_rejects_alike_on_the_three_paths(tmp_path: Path) -> None:
    """``data.max_cost`` reaches every path: a low one rejects rows that the default keeps, a high one keeps them."""
    directory = adversarial_log(tmp_path / "log")
    above = {}
    for max_cost in (0.0015, MAX_COST, math.inf):
        records = assert_three_paths_agree(directory, tmp_path, chunk_bytes=256, max_cost=max_cost)
        above[max_cost] = sum(rule_of(record["reason"], record["detail"]) == "COST_ABOVE_MAX" for record in records)
    assert above[0.0015] > 1 and (above[MAX_COST], above[math.inf]) == (1, 0)  # 1: CASES' cost of 1e308


def _strict_errors(path: Path) -> list[str]:
    """The ``--strict`` error of each path (per row, columnar, ``--ray`` blocks) on ``path``."""
    messages = []
    for read in (
        lambda: load_log(path, prices=PRICES, strict=True, columnar=False),
        lambda: load_log(path, prices=PRICES, strict=True, chunk_bytes=64),
        lambda: rejected_by_blocks(path, PRICES, strict=True),
    ):
        with pytest.raises(StrictModeError) as error:
            read()
        messages.append(str(error.value))
    return messages


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_strict_refuses_numbers_as_text_alike_on_the_three_paths(suffix: str, tmp_path: Path) -> None:
    """Issue 15, item 7: a number written as text in JSON lines or Parquet stops ``--strict`` at its row."""
    made = set()
    for rule in VALUE_RULES:
        rows = good_rows() if rule.field != "propensity" else [row | {"propensity": 1.0} for row in good_rows()[::2]]
        for row in rows:  # every row has the field, so that a Parquet column is all text
            row[rule.field] = str(row.get(rule.field, 3 if "tokens" in rule.field else 0.5))
        path = tmp_path / f"{rule.field}{suffix}"
        if suffix == ".jsonl":
            write_jsonl(path, rows)
        else:
            pq.write_table(pa.Table.from_pylist(rows), path)
        if rule.field == "propensity":  # --ray refuses bandit feedback; both loaders stop at the row
            assert len(set(_strict_errors(path)[:2])) == 1
            with pytest.raises(DataError, match="bandit feedback"):
                rejected_by_blocks(path, PRICES)
        else:
            assert len(set(_strict_errors(path))) == 1
        message = _strict_errors(path)[0]
        detail = re.fullmatch(r".*?: (?:line|row) 1: ([^:]+): (.*) \(--strict stops at the first bad row\)", message)
        assert detail is not None, message
        made.add(rule_of(*detail.groups()))
        assert load_log(path, prices=PRICES).log.stats.rows_rejected == 0  # without --strict the text is read
    assert made == STRICT_ONLY


def test_a_decision_log_with_a_torn_first_line_is_refused_by_ray(tmp_path: Path) -> None:
    """Issue 15, item 4: its kind comes from its first record that parses, on every path."""
    decisions = [
        {"query_id": q, "query": "hi", "model": "a", "propensity": 1.0, "cost_weight": 0.0, "policy_version": "v"}
        for q in ("q1", "q2")
    ]
    path = write_jsonl(tmp_path / "decisions.jsonl", [*decisions, {"query_id": "q2", "quality": 1.0, "cost": 0.1}])
    path.write_text(path.read_text(encoding="utf-8")[20:], encoding="utf-8")  # the first line torn
    with pytest.raises(DataError, match=r"bandit feedback\); --ray fits full-information logs"):
        rejected_by_blocks(path, PRICES)
