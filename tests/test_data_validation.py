"""Every rejection reason of docs/contracts.md §1 is detected, counted and quarantined; nothing is lost.

Each case is a small log of good rows plus one bad line. For each we check that rows read =
accepted + rejected, that the reason is counted, that every good outcome survives with its
value, and the ``rejected.jsonl`` record (file, line or row, reason, content), whose detail is
the message of a rule of :mod:`data.rules` (:func:`rule_of`). The cases are also the bad rows of
the parity tests of the columnar path and the ``--ray`` blocks.
"""

from __future__ import annotations

import csv
import json
import math
import re
import string
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from conftest import run_train

from data import rules
from data.loading import LoadedLog, load_log
from data.prices import Price, PriceTable
from data.schema import DataError, RejectReason, StrictModeError
from data.validation import validate

MODELS = ("a", "b")
PRICES = PriceTable({"a": Price(1.0, 2.0), "b": Price(3.0, 4.0)})


def good_rows() -> list[dict[str, Any]]:
    """A full-information log: 3 queries × models a, b, every value distinct."""
    return [
        {
            "query_id": f"q{i}",
            "query": f"question {i}?",
            "model": m,
            "quality": round(0.1 * i + 0.05 * k, 2),
            "cost": 0.001 * (k + 1),
            "latency_ms": 10.0,
            "timestamp": f"2024-01-0{i + 1}T00:00:00Z",
        }
        for i in range(3)
        for k, m in enumerate(MODELS)
    ]


def bad(**changes: Any) -> dict[str, Any]:
    """A row for a query of its own ("x", model a) with ``changes`` applied (None deletes a key)."""
    row = {"query_id": "x", "query": "another question", "model": "a", "quality": 1.0, "cost": 0.5}
    row.update(changes)
    return {k: v for k, v in row.items() if v is not None}


def raw(quality: str = "1", cost: str = "0", query: bytes = b'"t"') -> bytes:
    """A JSON line for query "x", model a, with literal JSON ``quality`` and ``cost`` (NaN, null…)."""
    fields = f'"quality": {quality}, "cost": {cost}'.encode()
    return b'{"query_id": "x", "query": ' + query + b', "model": "a", ' + fields + b"}"


@dataclass(frozen=True)
class Case:
    """One bad line (a dict written as JSON, or raw bytes) and the reason it must get."""

    reason: RejectReason
    line: dict[str, Any] | bytes
    last: bool = False  # written as the file's last line, without a trailing newline


CASES: dict[str, Case] = {
    "missing model": Case(RejectReason.MISSING_COLUMN, bad(model=None)),
    "missing quality": Case(RejectReason.MISSING_COLUMN, bad(quality=None) | {"x": 1}),
    "empty query id": Case(RejectReason.MISSING_COLUMN, bad(query_id=" ")),
    "no cost and no tokens": Case(RejectReason.MISSING_COLUMN, bad(cost=None)),
    "model not text": Case(RejectReason.MISSING_COLUMN, bad(model=["a"])),
    "empty query": Case(RejectReason.EMPTY_QUERY, bad(query="  \t")),
    "null query": Case(RejectReason.EMPTY_QUERY, raw(query=b"null")),
    "bad query": Case(RejectReason.BAD_QUERY, bad(query=["not", "text"])),
    "cost NaN": Case(RejectReason.BAD_COST, raw(cost="NaN")),
    "cost inf": Case(RejectReason.BAD_COST, raw(cost="Infinity")),
    "cost negative": Case(RejectReason.BAD_COST, bad(cost=-0.01)),
    "cost text": Case(RejectReason.BAD_COST, bad(cost="cheap")),
    "cost above the maximum": Case(RejectReason.BAD_COST, bad(cost=1e308)),
    "quality above 1": Case(RejectReason.BAD_QUALITY, bad(quality=1.5)),
    "quality below 0": Case(RejectReason.BAD_QUALITY, bad(quality=-0.1)),
    "quality NaN": Case(RejectReason.BAD_QUALITY, raw(quality="NaN")),
    "quality text": Case(RejectReason.BAD_QUALITY, bad(quality="high")),
    "expected quality above 1": Case(RejectReason.BAD_QUALITY, bad(expected_quality=1.5)),
    "expected quality text": Case(RejectReason.BAD_QUALITY, bad(expected_quality="good")),
    "blank score": Case(RejectReason.BLANK_SCORE, raw(quality="null")),
    "tokens negative": Case(RejectReason.BAD_TOKENS, bad(prompt_tokens=-3, completion_tokens=2)),
    "tokens fractional": Case(RejectReason.BAD_TOKENS, bad(prompt_tokens=1.5)),
    "tokens text": Case(RejectReason.BAD_TOKENS, bad(prompt_tokens="many", completion_tokens=2)),
    "completion tokens negative": Case(RejectReason.BAD_TOKENS, bad(completion_tokens=-2)),
    "completion tokens text": Case(RejectReason.BAD_TOKENS, bad(completion_tokens="many")),
    "latency negative": Case(RejectReason.BAD_LATENCY, bad(latency_ms=-1.0)),
    "latency text": Case(RejectReason.BAD_LATENCY, bad(latency_ms="slow")),
    "energy negative": Case(RejectReason.BAD_ENERGY, bad(energy_wh=-0.5)),
    "energy text": Case(RejectReason.BAD_ENERGY, bad(energy_wh="a lot")),
    "embedding not numbers": Case(RejectReason.BAD_EMBEDDING, bad(embedding=["a", "b"])),
    "embedding empty": Case(RejectReason.BAD_EMBEDDING, bad(embedding=[])),
    "embedding not JSON": Case(RejectReason.BAD_EMBEDDING, bad(embedding="[0.1, 0.2")),
    "embedding with a boolean": Case(RejectReason.BAD_EMBEDDING, bad(embedding=[0.5, True])),
    "timestamp": Case(RejectReason.BAD_TIMESTAMP, bad(timestamp="yesterday")),
    "task blank": Case(RejectReason.BAD_TASK, bad(task=" ")),
    "task a float": Case(RejectReason.BAD_TASK, bad(task=1.5)),
    "task a boolean": Case(RejectReason.BAD_TASK, bad(task=True)),
    "propensity 0": Case(RejectReason.BAD_PROPENSITY, bad(propensity=0.0)),
    "propensity above 1": Case(RejectReason.BAD_PROPENSITY, bad(propensity=1.2)),
    "propensity text": Case(RejectReason.BAD_PROPENSITY, bad(propensity="half")),
    "duplicate outcome": Case(RejectReason.DUPLICATE_OUTCOME, good_rows()[2] | {"quality": 0.99}),
    "conflicting text": Case(RejectReason.CONFLICTING_TEXT, good_rows()[2] | {"query": "changed"}),
    "no price": Case(RejectReason.NO_PRICE, bad(model="c", cost=None, prompt_tokens=5, completion_tokens=7)),
    "invalid UTF-8": Case(RejectReason.INVALID_UTF8, raw(query=b'"caf\xe9"')),
    "malformed": Case(RejectReason.MALFORMED_LINE, b'{"query_id": "x", this is not JSON}'),
    "not an object": Case(RejectReason.MALFORMED_LINE, b"[1, 2, 3]"),
    "truncated last line": Case(RejectReason.TRUNCATED_LINE, raw()[:30], last=True),
    "incomplete query": Case(RejectReason.INCOMPLETE_QUERY, bad()),
}


def _pattern(message: str) -> re.Pattern[str]:
    """A :meth:`str.format` template as a regular expression: every field matches any text."""
    parts = string.Formatter().parse(message)
    return re.compile("".join(re.escape(text) + ("" if field is None else ".*") for text, field, _, _ in parts), re.S)


def catalogue() -> dict[str, tuple[RejectReason, re.Pattern[str], int]]:
    """Every message of :mod:`data.rules`, by rule name: its reason, its pattern and its literal length.

    A :class:`data.rules.ValueRule` makes three messages: ``NAME`` (out of range), ``NAME not a
    number`` and ``NAME as text`` (a number written as text, under ``--strict``).
    """
    entries = {}
    for name, rule in vars(rules).items():
        if isinstance(rule, rules.Rule):
            entries[name] = (rule.reason, rule.message)
        elif isinstance(rule, rules.ValueRule):
            entries[name] = (rule.reason, f"{rule.field}={{value}} {rule.requirement}")
            entries[f"{name} not a number"] = (rule.reason, f"{rule.field}={{value}} is not a number")
            as_text = rule.written_as_text("").detail.replace("''", "{value}", 1)
            entries[f"{name} as text"] = (rule.reason, as_text)
    literal = {
        name: sum(len(text) for text, *_ in string.Formatter().parse(message)) for name, (_, message) in entries.items()
    }
    return {name: (reason, _pattern(message), literal[name]) for name, (reason, message) in entries.items()}


def rule_of(reason: str, detail: str) -> str | None:
    """The rule of :mod:`data.rules` that made a rejection (the most specific message that matches), or None."""
    matches = [
        (length, name)
        for name, (rule_reason, pattern, length) in catalogue().items()
        if rule_reason.value == reason and pattern.fullmatch(detail)
    ]
    return max(matches)[1] if matches else None


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines to ``path``."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_log(path: Path, case: Case) -> int:
    """Write the good rows with the bad line in the middle (or last); return the bad line's number."""
    lines = [json.dumps(row).encode() for row in good_rows()]
    encoded = case.line if isinstance(case.line, bytes) else json.dumps(case.line).encode()
    number = len(lines) + 1 if case.last else 4
    lines.insert(number - 1, encoded)
    path.write_bytes(b"\n".join(lines) + (b"" if case.last else b"\n"))
    return number


def assert_good_rows_survive(loaded: LoadedLog) -> None:
    """Every good (query, model) outcome is in the log with its quality and cost."""
    log = loaded.log
    assert log.models == MODELS
    assert sorted(log.query_ids.tolist()) == ["q0", "q1", "q2"]
    for row in good_rows():
        i = log.query_ids.tolist().index(row["query_id"])
        k = log.models.index(row["model"])
        assert log.quality[i, k] == row["quality"]
        assert log.cost[i, k] == row["cost"]
        assert log.queries[i] == row["query"]


def raw_content(line: bytes) -> Any:
    """What ``rejected.jsonl`` holds for a line: the parsed row (non-finite numbers as strings,
    strict JSON), or the raw text (undecodable bytes as U+FFFD) when it could not be parsed."""
    try:
        parsed = json.loads(line, parse_constant=str)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else line.decode("utf-8", errors="replace")


def read_rejected(loaded: LoadedLog, tmp_path: Path) -> list[dict[str, Any]]:
    """The quarantine as ``rejected.jsonl`` records (written and read back)."""
    out = tmp_path / "rejected.jsonl"
    loaded.quarantine.write(out)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", list(CASES))
def test_every_reason_is_detected_and_quarantined(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    path = tmp_path / "log.jsonl"
    number = write_log(path, case)
    loaded = load_log(path, prices=PRICES)
    stats = loaded.log.stats

    assert stats.rows_read == len(good_rows()) + 1
    assert stats.rows_read == stats.rows_accepted + stats.rows_rejected
    assert stats.rows_rejected == 1
    assert stats.rejected_by_reason == {case.reason.value: 1}
    assert_good_rows_survive(loaded)
    [record] = read_rejected(loaded, tmp_path)
    assert record["file"] == str(path)
    assert record["line"] == number
    assert record["reason"] == case.reason.value
    assert rule_of(record["reason"], record["detail"]) is not None, record["detail"]
    if isinstance(case.line, bytes):
        assert record["content"] == raw_content(case.line)
    elif case.reason is RejectReason.INCOMPLETE_QUERY:  # rebuilt from the accepted values
        assert {k: record["content"][k] for k in ("query_id", "model", "quality")} == {
            "query_id": "x",
            "model": "a",
            "quality": 1.0,
        }
    else:
        assert record["content"] == case.line


def test_every_reason_has_a_case() -> None:
    """Every reason of canonical logs here; decision-log reasons in test_data_decision_log.py."""
    decision_log_only = {RejectReason.ORPHAN_FEEDBACK, RejectReason.NOT_POLICY_CHOICE, RejectReason.CASCADE_DECISION}
    assert {case.reason for case in CASES.values()} == set(RejectReason) - decision_log_only


@pytest.mark.parametrize("rule", rules.VALUE_RULES, ids=lambda rule: rule.field)
def test_a_value_rule_judges_a_column_as_it_judges_each_value(rule: rules.ValueRule) -> None:
    """The per-row form (:meth:`check` on one float) and the columnar form (:meth:`accepts_all`) agree."""
    edges = [-np.inf, -1.0, -1e-300, -0.0, 0.0, 1e-300, 0.5, 1.0, 1.0 + 1e-15, 1.5, 2.0, 1e300, np.inf, np.nan]
    for value in edges:
        try:
            valid = rule.check(value) is value
        except rules.Invalid as invalid:
            assert invalid.reason is rule.reason
            assert rule_of(invalid.reason.value, invalid.detail) is not None
            valid = False
        assert rule.accepts_all(np.array([1.0, value])) == valid, value


def test_blank_text_is_judged_alike_on_one_text_and_on_a_column() -> None:
    """:func:`data.rules.is_blank` and :func:`data.rules.all_non_blank` on Unicode's whitespace."""
    texts = ["a", " a ", "é", "\u3000x", "", " ", "\t\n", "\u3000", "\u00a0", "\u2028", "\x1c", "\u200b", "\ufeff"]
    for text in texts:
        assert rules.all_non_blank(pa.array(["ok", text])) == (not rules.is_blank(text)), repr(text)
    assert rules.is_blank("\u3000\u00a0") and not rules.is_blank("\u200b")  # U+200B is no whitespace to Python


def test_a_valid_row_becomes_an_outcome_field_by_field() -> None:
    """Every field of the row lands in the Outcome field of its name (all values distinct)."""
    row = {
        "query_id": "q7",
        "query": "a question",
        "model": "b",
        "quality": "0.25",
        "cost": 0.5,
        "propensity": 0.75,
        "latency_ms": 12,
        "energy_wh": 0.0625,
        "expected_quality": 0.125,
        "embedding": "[1, 2.5]",
        "timestamp": "2024-01-02T03:04:05Z",
        "task": 42,
        "prompt_tokens": 30,
        "completion_tokens": "7",
    }
    assert validate(row, None)._asdict() == {
        "query_id": "q7",
        "query": "a question",
        "model": "b",
        "quality": 0.25,
        "cost": 0.5,
        "propensity": 0.75,
        "latency_ms": 12.0,
        "energy_wh": 0.0625,
        "expected_quality": 0.125,
        "embedding": [1.0, 2.5],
        "timestamp": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        "task": "42",  # an integer as its decimal string, as query_id
        "prompt_tokens": 30,  # kept beside the cost: token mode (docs/contracts.md §2.10)
        "completion_tokens": 7,
    }


def test_first_accepted_row_wins_over_a_later_duplicate(tmp_path: Path) -> None:
    """A rejected (blank) copy never claims the outcome; of two scored copies the first wins."""
    rows = good_rows()
    rows.insert(0, rows[0] | {"quality": None})  # blank first: the scored copy is kept
    rows.append(rows[1] | {"quality": 0.77})  # a later scored copy is the duplicate
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    loaded = load_log(path)
    assert loaded.log.stats.rejected_by_reason == {"blank score": 1, "duplicate outcome": 1}
    assert_good_rows_survive(loaded)


def test_duplicates_are_found_with_many_models(tmp_path: Path) -> None:
    """The per-query record of seen outcomes is not limited to 64 models."""
    models = [f"m{k:02d}" for k in range(70)]
    rows = [{"query_id": q, "query": q, "model": m, "quality": 0.5, "cost": 0.0} for q in ("q1", "q2") for m in models]
    rows.append(rows[69] | {"quality": 1.0})
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    log = load_log(path).log
    assert log.stats.rejected_by_reason == {"duplicate outcome": 1}
    assert log.quality.shape == (2, 70) and (log.quality == 0.5).all()


def test_embedding_of_another_length_is_rejected(tmp_path: Path) -> None:
    """Rejected, and its model (seen nowhere else) does not become an arm that no query has."""
    rows = [r | {"embedding": [0.1, 0.2, 0.3]} for r in good_rows()]
    rows.append(bad(embedding=[0.1, 0.2], model="c"))
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    loaded = load_log(path)
    assert loaded.log.stats.rejected_by_reason == {"bad embedding": 1}
    assert loaded.log.embeddings is not None and loaded.log.embeddings.shape == (3, 3)


def test_price_table_gives_cost_from_tokens(tmp_path: Path) -> None:
    rows = [r | {"cost": None, "prompt_tokens": 1000, "completion_tokens": 500} for r in good_rows()]
    path = write_jsonl(tmp_path / "log.jsonl", [{k: v for k, v in r.items() if v is not None} for r in rows])
    log = load_log(path, prices=PRICES).log
    # (1000 × input + 500 × output) / 1e6 USD: a = (1000 + 1000) / 1e6, b = (3000 + 2000) / 1e6
    np.testing.assert_allclose(log.cost, [[0.002, 0.005]] * 3)


def test_price_table_file_is_read_and_checked(tmp_path: Path) -> None:
    table = tmp_path / "prices.yaml"
    table.write_text("models:\n  a: {input: 1.0, output: 2.0}\n", encoding="utf-8")
    assert PriceTable.load(table).get("a") == Price(1.0, 2.0)
    table.write_text("models:\n  a: {input: cheap}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"prices\.yaml.*'a'"):
        PriceTable.load(table)
    for bad in (".nan", ".inf", "-1"):  # NaN passed a `< 0` test before
        table.write_text(f"models:\n  a: {{input: {bad}, output: 1}}\n", encoding="utf-8")
        with pytest.raises(DataError, match=r"model 'a': prices must be finite numbers >= 0"):
            PriceTable.load(table)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"quality": ""}, RejectReason.BLANK_SCORE),
        ({"cost": "nan"}, RejectReason.BAD_COST),
        ({"query": "PLACEHOLDER"}, RejectReason.INVALID_UTF8),
    ],
)
def test_csv_rows_are_rejected_with_their_row_number(
    change: dict[str, str], reason: RejectReason, tmp_path: Path
) -> None:
    """CSV: an empty score cell, a 'nan' cost, a field that is not UTF-8; rows exclude the header."""
    rows = good_rows()
    rows.insert(3, bad() | change)
    path = tmp_path / "log.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(good_rows()[0]))
        writer.writeheader()
        writer.writerows(rows)
    path.write_bytes(path.read_bytes().replace(b"PLACEHOLDER", b"caf\xe9"))
    loaded = load_log(path)
    stats = loaded.log.stats
    assert stats.rows_read == stats.rows_accepted + stats.rows_rejected == len(good_rows()) + 1
    assert stats.rejected_by_reason == {reason.value: 1}
    assert_good_rows_survive(loaded)
    [record] = read_rejected(loaded, tmp_path)
    assert (record["file"], record["row"], record["reason"]) == (str(path), 4, reason.value)


def test_strict_raises_at_the_first_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    number = write_log(path, CASES["quality above 1"])
    with pytest.raises(StrictModeError, match=rf"log\.jsonl: line {number}: bad quality"):
        load_log(path, strict=True)
    assert load_log(path).log.stats.rows_rejected == 1  # without strict the row is quarantined


def test_bandit_feedback_is_detected(tmp_path: Path) -> None:
    rows = good_rows()
    rows = [rows[0] | {"propensity": 0.5}, rows[3] | {"propensity": 0.25}, rows[4] | {"propensity": 1}]
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    log = load_log(path).log
    assert log.feedback == "bandit"
    assert log.action is not None and log.propensity is not None
    assert log.action.tolist() == [0, 1, 0] and log.propensity.tolist() == [0.5, 0.25, 1.0]
    logged = log.quality[np.arange(3), log.action]
    assert logged.tolist() == [rows[0]["quality"], rows[1]["quality"], rows[2]["quality"]]
    assert np.isnan(log.quality).sum() == 3  # only the logged action's outcome is known


def test_full_information_is_detected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "log.jsonl", good_rows())
    log = load_log(path).log
    assert log.feedback == "full" and log.action is None and log.propensity is None


def test_a_log_mixing_full_and_bandit_rows_is_one_error(tmp_path: Path) -> None:
    rows = [*good_rows(), bad(propensity=0.5)]
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    with pytest.raises(DataError, match=r"log\.jsonl: line 7: the log mixes full-information"):
        load_log(path)


def test_a_repeated_bandit_query_is_a_duplicate(tmp_path: Path) -> None:
    rows = [r | {"propensity": 0.5} for r in good_rows()[::2]]
    rows.append(rows[0] | {"model": "c"})
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    log = load_log(path).log
    assert log.stats.rejected_by_reason == {"duplicate outcome": 1}
    assert log.models == ("a",)  # the rejected row's model is no arm


@pytest.mark.parametrize("cost", [1e6, 1e100, 1e308])
def test_an_absurd_cost_is_rejected_and_counted(cost: float, tmp_path: Path) -> None:
    """Issue 15, item 5: no real call costs 1e6 USD; such a row would skew (or crash) training."""
    path = tmp_path / "log.jsonl"
    write_log(path, Case(RejectReason.BAD_COST, bad(cost=cost)))
    loaded = load_log(path)
    assert loaded.log.stats.rejected_by_reason == {"bad cost": 1}
    [record] = read_rejected(loaded, tmp_path)
    assert record["detail"] == f"cost={cost!r} is above data.max_cost={rules.MAX_COST!r} (USD per call)"
    assert rule_of(record["reason"], record["detail"]) == "COST_ABOVE_MAX"


def test_the_maximum_cost_is_configurable(tmp_path: Path) -> None:
    rows = good_rows()
    rows[1]["cost"] = 150.0  # an expensive call, above the default maximum
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    assert load_log(path).log.stats.rejected_by_reason == {"bad cost": 1, "incomplete query": 1}
    assert load_log(path, max_cost=1000.0).log.stats.rows_rejected == 0
    assert load_log(path, max_cost=math.inf).log.stats.rows_rejected == 0  # no bound at all
    cheap = load_log(path, max_cost=0.0015).log  # every row of model b costs more
    assert (cheap.stats.rejected_by_reason, cheap.models) == ({"bad cost": 3}, ("a",))
    for wrong in (0.0, -1.0, math.nan):
        with pytest.raises(DataError, match="max_cost must be a number > 0"):
            load_log(path, max_cost=wrong)


#: Numbers written as JSON strings (issue 15, item 7).
TEXT_NUMBERS = {
    "quality": "0.5", "cost": "0.001", "prompt_tokens": "12", "latency_ms": "30", "energy_wh": "0.2", "propensity": "1",
}  # fmt: skip


@pytest.mark.parametrize("field", list(TEXT_NUMBERS))
def test_numbers_as_text_are_accepted_but_not_under_strict(field: str, tmp_path: Path) -> None:
    """JSON lines: ``"0.5"`` is read as 0.5, as in CSV; ``--strict`` refuses it (JSON has numbers)."""
    row = bad(**{field: TEXT_NUMBERS[field]}) | ({"completion_tokens": 3} if field == "prompt_tokens" else {})
    rows = [row | {"query_id": "y"}] if field == "propensity" else [*good_rows(), row, row | {"model": "b"}]
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    assert load_log(path, prices=PRICES).log.stats.rows_rejected == 0
    reason = {"quality": "bad quality", "cost": "bad cost", "prompt_tokens": "bad tokens"}.get(field)
    reason = reason or {"latency_ms": "bad latency", "energy_wh": "bad energy", "propensity": "bad propensity"}[field]
    with pytest.raises(StrictModeError) as error:
        load_log(path, prices=PRICES, strict=True)
    number = len(rows) - 1 if field != "propensity" else 1
    assert str(error.value) == (
        f"{path}: line {number}: {reason}: {field}={TEXT_NUMBERS[field]!r} is a number written as text "
        "(refused by --strict in JSON lines and Parquet) (--strict stops at the first bad row)"
    )


def test_numbers_in_csv_are_text_by_nature_even_under_strict(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(good_rows()[0]))
        writer.writeheader()
        writer.writerows(good_rows())
    assert load_log(path, strict=True).log.stats.rows_accepted == len(good_rows())


def test_train_rejects_an_absurd_cost_by_its_data_max_cost(tmp_path: Path) -> None:
    """``train.py --set data.max_cost=200``: a call of 150 USD is kept, one of 1e308 USD is rejected and counted."""
    demo = Path(__file__).resolve().parents[1] / "data" / "demo" / "demo.jsonl"
    rows = [json.loads(line) for line in demo.read_text(encoding="utf-8").splitlines()[:1000]]
    rows[3]["cost"], rows[7]["cost"] = 150.0, 1e308
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    done = run_train("--data", str(path), "--out", str(tmp_path / "run"), "--set", "data.max_cost=200")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text(encoding="utf-8"))
    assert report["data"]["rejected_by_reason"] == {"bad cost": 1, "incomplete query": 4}
    assert report["data"]["rows_accepted"] == 995
    [rejected, *_] = [json.loads(line) for line in (tmp_path / "run" / "rejected.jsonl").read_text().splitlines()]
    assert (rejected["line"], rejected["detail"]) == (8, "cost=1e+308 is above data.max_cost=200.0 (USD per call)")
