"""The optional ``task`` column (docs/contracts.md §1.2, §1.4): read alike by every reader and path.

A query's task is that of its first accepted row that has one; an integer is read as its decimal
string; RouterBench's ``eval_name`` is the task of a wide row. The task is kept by
``RoutingLog.subset``, written by the synthetic generator (each query's main topic) and left out
of the data fingerprint, so a log without a task column keeps its fingerprint.
"""

from __future__ import annotations

import csv
import json
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_data_columnar import assert_same, columnar_rows  # noqa: F401 (a fixture)

from data.fingerprint import fingerprint
from data.loading import load_log
from data.synth import SynthConfig, generate, write

#: Per query: the task of each of its two rows (models a, b); None: the row has no task.
ROW_TASKS: dict[str, tuple[Any, Any]] = {
    "q0": ("math", "math"),
    "q1": (7, 7),  # an integer: the task "7"
    "q2": (None, "code"),  # the first row with a task decides
    "q3": ("words", "other"),  # the first accepted row decides; the second is not refused
    "q4": (None, None),  # no task
}
EXPECTED = ["math", "7", "code", "words", None]


def rows(tasks: dict[str, tuple[Any, Any]] = ROW_TASKS) -> list[dict[str, Any]]:
    """A full-information log of two models whose rows carry the given tasks (absent for None)."""
    out = []
    for number, (query_id, pair) in enumerate(tasks.items()):
        for k, (model, task) in enumerate(zip("ab", pair)):
            row = {"query_id": query_id, "query": f"question {number}?", "model": model,
                   "quality": 0.5 * k, "cost": 0.001 * (k + 1)}
            out.append(row if task is None else row | {"task": task})
    return out


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def write_csv(path: Path, records: list[dict[str, Any]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["query_id", "query", "model", "quality", "cost", "task"])
        writer.writeheader()
        writer.writerows(records)  # an absent task is an empty cell
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_query_takes_the_task_of_its_first_row_that_has_one_on_both_paths(suffix: str, tmp_path: Path) -> None:
    path = (write_jsonl if suffix == ".jsonl" else write_csv)(tmp_path / f"log{suffix}", rows())
    for chunk_bytes in (64, 1 << 20):
        log = assert_same(path, chunk_bytes).log
        assert log.tasks is not None and log.tasks.tolist() == EXPECTED
        assert log.stats.rows_rejected == 0


def test_the_columnar_path_reads_tasks_in_whole_blocks(tmp_path: Path, columnar_rows: list[int]) -> None:  # noqa: F811
    """Text tasks in JSON lines, CSV and Parquet, and integer tasks in Parquet, need no per-row fallback."""
    text_tasks = {query_id: (f"t{number % 2}", f"t{number % 2}") for number, query_id in enumerate(ROW_TASKS)}
    records = rows(text_tasks)
    write_jsonl(tmp_path / "1.jsonl", records)
    write_csv(tmp_path / "2.csv", [record | {"query_id": "c" + record["query_id"]} for record in records])
    columns = {name: [record[name] for record in records] for name in records[0]}
    pq.write_table(pa.table(columns | {"query_id": ["p" + q for q in columns["query_id"]]}), tmp_path / "3.parquet")
    numbered = columns | {"query_id": ["n" + q for q in columns["query_id"]], "task": [3] * len(records)}
    pq.write_table(pa.table(numbered), tmp_path / "4.parquet")
    log = assert_same(tmp_path, 1 << 20).log
    assert sum(columnar_rows) == 4 * len(records)  # every row by whole blocks
    assert log.tasks is not None
    assert dict(zip(log.query_ids.tolist(), log.tasks.tolist())) == {
        prefix + query_id: "3" if prefix == "n" else f"t{number % 2}"
        for prefix in ("", "c", "p", "n")
        for number, query_id in enumerate(ROW_TASKS)
    }


def test_a_log_without_a_task_column_has_no_tasks(tmp_path: Path) -> None:
    log = load_log(write_jsonl(tmp_path / "log.jsonl", rows({"q0": (None, None)}))).log
    assert log.tasks is None


def test_routerbench_wide_rows_take_eval_name_as_their_task_also_from_a_pickle(tmp_path: Path) -> None:
    header = ["sample_id", "prompt", "eval_name", "m1", "m1|total_cost", "m2", "m2|total_cost"]
    records = [["s1", "['a', 'b']", "mmlu", "1", "0.01", "0", "0.02"], ["s2", "c?", "gsm8k", "0", "0.01", "1", "0.02"]]
    with open(tmp_path / "wide.csv", "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *records])
    import pandas as pd

    with open(tmp_path / "wide.pkl", "wb") as handle:
        pickle.dump(pd.DataFrame(records, columns=header), handle)
    for name in ("wide.csv", "wide.pkl"):
        log = load_log(tmp_path / name, allow_pickle=True).log
        assert log.tasks is not None and log.tasks.tolist() == ["mmlu", "gsm8k"], name


def test_real_routerbench_has_its_three_tasks(routerbench: Path) -> None:
    log = load_log(routerbench).log
    assert log.tasks is not None
    assert sorted(set(log.tasks.tolist())) == ["arc-challenge", "mbpp", "winogrande"]


def test_subset_keeps_each_querys_task(tmp_path: Path) -> None:
    log = load_log(write_jsonl(tmp_path / "log.jsonl", rows())).log
    part = log.subset(np.array([3, 0]))
    assert part.tasks is not None and part.tasks.tolist() == ["words", "math"]


def test_the_task_column_leaves_the_fingerprint_unchanged(tmp_path: Path) -> None:
    """The fingerprint covers query_id, query, model, quality and cost only (§1.10): no task, same hash."""
    with_tasks = load_log(write_jsonl(tmp_path / "a.jsonl", rows())).log
    without = load_log(write_jsonl(tmp_path / "b.jsonl", rows({q: (None, None) for q in ROW_TASKS}))).log
    assert without.tasks is None and with_tasks.fingerprint == without.fingerprint
    assert fingerprint(replace(with_tasks, tasks=None)) == with_tasks.fingerprint


def test_the_synthetic_log_carries_each_querys_topic_as_its_task(tmp_path: Path) -> None:
    synth = generate(SynthConfig(queries=60, models=3, topics=4, seed=2))
    write(synth, tmp_path / "synth.jsonl")
    log = load_log(tmp_path / "synth.jsonl").log
    assert log.tasks is not None
    assert log.tasks.tolist() == [f"topic-{topic}" for topic in synth.topic.tolist()] == synth.tasks
    assert set(log.tasks.tolist()) == {f"topic-{topic}" for topic in range(4)}


def test_the_summary_counts_the_queries_of_each_task(tmp_path: Path) -> None:
    from data.summary import summarize

    path = write_jsonl(tmp_path / "log.jsonl", rows())
    text = summarize(load_log(path), str(path))
    assert "tasks      4: math (1), 7 (1), code (1), words (1); 1 queries without a task" in text.splitlines()
