"""``serve.py --workers 2`` on 127.0.0.1: one decision log per worker, metrics added up across
workers, reload reaching every worker, nothing lost, and every worker stopped with the server."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from test_serve import _load_local, _start_server, _stop
from test_serve_ops import ADMIN, _auth, _metric, _records, _resave, _version

from data.loading import load_log
from serving.decisions import DecisionLog
from serving.workers import worker_log_path

REQUESTS = 240


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux ``/proc``): workers and multiprocessing's helper."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _route(base_url: str, i: int) -> tuple[str, str]:
    """One ``/route`` on a fresh connection (so that the kernel may pick either worker)."""
    query = f"question {i}: how do I sort a list of {i} numbers in python?"
    response = httpx.post(base_url + "/route", json={"query": query}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["query_id"], query


@pytest.mark.slow
def test_two_workers_log_count_and_reload_together(demo_policy: Path, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "decisions.jsonl"
    running = _start_server(
        demo_policy, tmp_path, "--workers", "2", "--decision-log", str(log), env={"ROUTERL_ADMIN_TOKEN": ADMIN}
    )
    workers = [
        pid for pid in _children(running.process.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()
    ]
    models = _load_local(demo_policy)[0].models()
    try:
        assert len(workers) == 2
        with ThreadPoolExecutor(max_workers=8) as pool:
            answered = dict(pool.map(lambda i: _route(running.base_url, i), range(REQUESTS)))
        assert httpx.post(
            running.base_url + "/feedback", json={"query_id": next(iter(answered)), "quality": 1.0}
        ).is_success
        for _ in range(4):  # whichever worker answers /metrics, it gives the sum over all workers
            with httpx.Client(base_url=running.base_url, timeout=60) as http:
                assert _metric(http, "routerl_requests_total", route="/route", status="200") == REQUESTS
                assert _metric(http, "routerl_requests_total", route="/feedback", status="200") == 1
                assert sum(_metric(http, "routerl_decisions_total", model=m) for m in models) == REQUESTS

        # one log per worker, each written, together exactly the answered decisions
        per_worker = [_records(worker_log_path(log, index)) for index in range(2)]
        assert all(records for records in per_worker), [len(r) for r in per_worker]
        decisions_logged = [r for records in per_worker for r in records if "policy_version" in r]
        assert Counter(r["query_id"] for r in decisions_logged) == Counter(answered.keys())
        assert all(r["query"] == answered[r["query_id"]] for r in decisions_logged)
        assert sum(1 for records in per_worker for r in records if "quality" in r) == 1
        assert not log.exists()

        # a reload on one worker reaches the other
        other = _resave(demo_policy, tmp_path / "other.pt", created_at="2000-01-01T00:00:00+00:00")
        answer = httpx.post(
            running.base_url + "/admin/reload", json={"policy": str(other)}, headers=_auth(ADMIN), timeout=60
        )
        assert answer.status_code == 200, answer.text
        assert _versions_become(running.base_url, _version(other))

        # SIGHUP to the supervisor reloads every worker from the last reloaded path
        _resave(demo_policy, other, created_at="2001-01-01T00:00:00+00:00")
        os.kill(running.process.pid, signal.SIGHUP)
        assert _versions_become(running.base_url, _version(other))
    finally:
        _stop(running.process)
    assert running.process.returncode == 0
    for pid in workers:  # the supervisor waited for its workers before exiting
        assert not Path(f"/proc/{pid}").exists()


def _versions_become(base_url: str, version: str, timeout_s: float = 60.0) -> bool:
    """Whether, within ``timeout_s``, 20 ``/healthz`` on fresh connections all report ``version``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if {httpx.get(base_url + "/healthz", timeout=60).json()["policy"]["version"] for _ in range(20)} == {version}:
            return True
        time.sleep(0.5)
    return False


def test_training_joins_feedback_that_another_worker_logged(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"

    def decide(into: DecisionLog, query_id: str) -> None:
        into.decision(
            query_id=query_id, query="hi", model="tiny-1b", propensity=1.0, cost_weight=0.0, policy_version="v"
        )

    first, second = DecisionLog(worker_log_path(log, 0)), DecisionLog(worker_log_path(log, 1))
    decide(first, "q1")
    decide(second, "q2")
    second.feedback("q1", 1.0, 0.001)  # the client's feedback on q1 reached worker 1
    first.close()
    second.close()
    stats = load_log(tmp_path).log.stats
    assert (stats.rows_accepted, stats.pending) == (1, 1)
