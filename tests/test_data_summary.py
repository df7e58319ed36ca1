"""``python -m data summary LOG``: counts, per-model table, oracle, rejections; exit 2 on bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from conftest import run_python

from data.summary import oracle_choice


def summary(*args: str) -> subprocess.CompletedProcess[str]:
    return run_python("-m", "data", "summary", *args, timeout=120)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# quality / cost per query for models a, b: the oracle takes a, b (tie at 1.0: cheaper b), a
TABLE = {
    "q1": ((1.0, 0.002), (0.0, 0.001)),
    "q2": ((1.0, 0.004), (1.0, 0.001)),
    "q3": ((0.5, 0.002), (0.25, 0.001)),
}


def full_rows() -> list[dict[str, Any]]:
    return [
        {"query_id": q, "query": f"text of {q}", "model": m, "quality": quality, "cost": cost}
        for q, outcomes in TABLE.items()
        for m, (quality, cost) in zip("ab", outcomes)
    ]


def test_summary_of_a_full_information_log(tmp_path: Path) -> None:
    rows = full_rows()
    rows.append({"query_id": "q4", "query": "t", "model": "a", "quality": 2.0, "cost": 0})
    rows.append(
        {
            "query_id": "q5",
            "query": "t",
            "model": "mystery-9b",
            "quality": 1.0,
            "prompt_tokens": 10,
            "completion_tokens": 5,
        }
    )
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  a: {input: 1, output: 2}\n", encoding="utf-8")
    done = summary(str(write_jsonl(tmp_path / "log.jsonl", rows)), "--prices", str(prices))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "queries    3\n" in out and "models     2\n" in out
    assert "full information" in out
    assert "8 read, 6 accepted, 2 rejected" in out
    assert "1 bad quality" in out and "1 no price for model" in out
    assert "no price   mystery-9b" in out
    table = {line.split()[0]: line.split()[1:] for line in out.splitlines()[8:]}
    assert table["a"] == ["0.8333", "0.00266667", "3"]
    assert table["b"] == ["0.4167", "0.001", "3"]
    assert out.splitlines()[-1].split()[-3:] == ["0.8333", "0.00166667", "3"]  # oracle: a, b, a


def test_summary_of_a_bandit_log(tmp_path: Path) -> None:
    rows = [r | {"propensity": 0.5} for r in full_rows()[::2]]
    done = summary(str(write_jsonl(tmp_path / "log.jsonl", rows)))
    assert done.returncode == 0, done.stderr
    assert "bandit feedback" in done.stdout and "oracle is unknown" in done.stdout


def test_summary_of_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    mixed = [*full_rows(), full_rows()[0] | {"query_id": "z", "propensity": 1}]
    for path in (tmp_path / "absent.jsonl", write_jsonl(tmp_path / "mixed.jsonl", mixed)):
        done = summary(str(path))
        assert done.returncode == 2
        assert done.stdout == "" and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and path.name in done.stderr


def test_oracle_takes_the_best_quality_then_the_lower_cost() -> None:
    quality = np.array([[1.0, 1.0, 0.0], [0.2, 0.9, 0.9], [0.5, 0.5, 0.5]])
    cost = np.array([[0.5, 0.1, 0.0], [0.0, 0.3, 0.3], [0.2, 0.2, 0.2]])
    assert oracle_choice(quality, cost).tolist() == [1, 1, 0]


def test_summary_applies_the_maximum_cost(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "log.jsonl", full_rows())
    done = summary(str(path), "--max-cost", "0.003")  # q2's row of a costs 0.004
    assert done.returncode == 0, done.stderr
    assert "6 read, 4 accepted, 2 rejected" in done.stdout and "1 bad cost" in done.stdout
    done = summary(str(path), "--max-cost", "0")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "python -m data summary: error: max_cost must be a number > 0 (USD per call; inf: no bound), got 0.0"
    ]
