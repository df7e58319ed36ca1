"""Decision logs of serve.py are joined with their feedback into bandit-feedback rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.loading import load_log
from data.schema import DataError


def _decision(query_id: str, model: str = "m1", propensity: float = 0.9, **extra: object) -> dict:
    return {
        "query_id": query_id,
        "query": f"text of {query_id}",
        "model": model,
        "propensity": propensity,
        "cost_weight": 100.0,
        "policy_version": "abc123",
        "timestamp": "2026-01-01T00:00:00Z",
        **extra,
    }


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def test_join_counts_pending_and_rejects_orphans_fallbacks_cascades_and_duplicates(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "decisions.jsonl",
        [
            _decision("a"),
            _decision("b", "m2", 0.05),
            _decision("c"),  # c waits for feedback
            _decision("d", "m2", 1.0, fallback_from="m1"),  # served by a fallback: not the policy's choice
            _decision("e", "m2", 0.6, cascade=[{"action": "call", "model": "m1", "probability": 0.9},
                                              {"action": "call", "model": "m2", "probability": 0.8},
                                              {"action": "return", "model": "m2", "probability": 0.8}]),
            _decision("a"),  # a second decision for a
            {"query_id": "a", "quality": 1.0, "cost": 0.002},
            {"query_id": "b", "quality": 0.0, "cost": 0.001},
            {"query_id": "b", "quality": 1.0, "cost": 0.001},  # second feedback
            {"query_id": "zz", "quality": 1.0},  # no decision
            {"query_id": "d", "quality": 1.0, "cost": 0.003},
            {"query_id": "e", "quality": 1.0, "cost": 0.004},  # on a cascade's answer (serve.py --cascade)
        ],
    )
    loaded = load_log(path)
    log, stats = loaded.log, loaded.log.stats
    assert log.feedback == "bandit" and sorted(log.query_ids.tolist()) == ["a", "b"]
    assert stats.pending == 1
    assert stats.rejected_by_reason == {
        "duplicate outcome": 2,
        "not the policy's choice": 2,
        "cascade decision": 2,
        "feedback without decision": 1,
    }
    assert stats.rows_read == stats.rows_accepted + stats.rows_rejected == 9
    row = log.query_ids.tolist().index("b")
    assert log.models[int(log.action[row])] == "m2" and log.propensity[row] == 0.05
    assert log.quality[row, log.models.index("m2")] == 0.0 and log.cost[row, log.models.index("m2")] == 0.001
    reasons = {r.reason.value for r in loaded.quarantine.rejections}
    assert reasons == {"duplicate outcome", "not the policy's choice", "cascade decision", "feedback without decision"}
    cascade = [r for r in loaded.quarantine.rejections if r.reason.value == "cascade decision"]
    assert "'m2' answered a cascade of 2 call(s), not one routing choice" in {r.detail for r in cascade}


def test_cost_from_tokens_when_feedback_gives_none(tmp_path: Path) -> None:
    from data.prices import Price, PriceTable

    path = _write(
        tmp_path / "decisions.jsonl",
        [
            _decision("a", prompt_tokens=1000, completion_tokens=2000),
            {"query_id": "a", "quality": 1.0, "cost": None},
        ],
    )
    log = load_log(path, prices=PriceTable({"m1": Price(1.0, 2.0)})).log
    assert log.cost[0, 0] == pytest.approx((1000 * 1.0 + 2000 * 2.0) / 1e6)


def test_only_pending_decisions_is_a_clear_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "decisions.jsonl", [_decision("a"), _decision("b")])
    with pytest.raises(DataError, match="no usable query"):
        load_log(path)


def test_worker_logs_of_a_directory_are_joined_together(tmp_path: Path) -> None:
    """serve.py --workers: feedback may land in another worker's log, even as its first record."""
    _write(tmp_path / "decisions-0.jsonl", [_decision("a"), _decision("b", "m2", 0.05)])
    _write(
        tmp_path / "decisions-1.jsonl",
        [{"query_id": "a", "quality": 1.0, "cost": 0.002}, _decision("c"), {"query_id": "zz", "quality": 0.0}],
    )
    stats = load_log(tmp_path).log.stats
    assert (stats.rows_accepted, stats.pending) == (1, 2)  # a joined across files; b and c wait
    assert stats.rejected_by_reason == {"feedback without decision": 1}


def _tear_first_line(path: Path) -> None:
    """Cut the file's first line short, as a crash mid-write leaves it (the newline kept)."""
    first, rest = path.read_text(encoding="utf-8").split("\n", 1)
    path.write_text(first[:30] + "\n" + rest, encoding="utf-8")


@pytest.mark.parametrize("columnar", [True, False])
def test_a_decision_log_whose_first_line_is_torn_is_still_a_decision_log(columnar: bool, tmp_path: Path) -> None:
    """The kind comes from the first record that parses, not from line 1 (issue 15, item 4)."""
    path = _write(
        tmp_path / "decisions.jsonl",
        [
            _decision("a"),
            _decision("b", "m2", 0.05),
            _decision("c"),
            {"query_id": "b", "quality": 1.0, "cost": 0.002},
            {"query_id": "c", "quality": 0.0, "cost": 0.001},
        ],
    )
    _tear_first_line(path)
    loaded = load_log(path, columnar=columnar)
    log, stats = loaded.log, loaded.log.stats
    assert log.feedback == "bandit" and sorted(log.query_ids.tolist()) == ["b", "c"]
    assert stats.rejected_by_reason == {"malformed line": 1}
    assert (loaded.quarantine.rejections[0].position, stats.rows_read, stats.pending) == (1, 3, 0)


def test_a_canonical_log_whose_first_line_is_torn_stays_canonical(tmp_path: Path) -> None:
    rows = [
        {"query_id": q, "query": f"text of {q}", "model": m, "quality": 1.0, "cost": 0.001}
        for q in ("a", "b", "c")
        for m in ("m1", "m2")
    ]
    path = _write(tmp_path / "log.jsonl", rows)
    _tear_first_line(path)
    stats = load_log(path).log.stats
    assert stats.rejected_by_reason == {"malformed line": 1, "incomplete query": 1}
    assert stats.rows_accepted == 4
