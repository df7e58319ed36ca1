"""The live budget and runtime prices through the real service (``serve.py --budget``, ``PUT /admin/prices``).

Synthetic traffic: the demo log's queries in a seeded random order, each routed by ``POST /route``
and answered by ``POST /feedback`` with the chosen model's logged cost (the demo log is full
information: every model's cost of every query is known). Half-way the costs change: every
feedback reports twice the logged cost, as when a provider doubles its prices, which the policy's
predictions do not know. After a warm-up of :data:`WARM_UP` requests, the mean actual cost of every
window of 1,000 consecutive requests must be within ±5% of the budget, with one worker and with two.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_serve import REPO_ROOT, _assert_one_line_error, _run_serve, _start_server, _stop

BUDGET = 0.0003  # USD per query: between the demo log's cheapest and dearest model
REQUESTS = 6000
CHANGE_AT = 4000  # from here every actual cost is twice the logged one
WARM_UP = 2000
WINDOW = 1000
ADMIN = "budget-admin-token"


def _demo_outcomes() -> tuple[list[str], dict[str, dict[str, float]]]:
    """The demo log's query texts and each query's cost per model."""
    texts: dict[str, str] = {}
    costs: dict[str, dict[str, float]] = defaultdict(dict)
    for line in (REPO_ROOT / "data" / "demo" / "demo.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        texts[row["query"]] = row["query"]
        costs[row["query"]][row["model"]] = row["cost"]
    return sorted(texts), costs


def _traffic(base_url: str) -> np.ndarray:
    """Route :data:`REQUESTS` queries with feedback, 4 clients at a time; the actual costs in order."""
    texts, costs = _demo_outcomes()
    order = np.random.default_rng(0).integers(len(texts), size=REQUESTS)

    def one(http: httpx.Client, step: int) -> float:
        query = texts[order[step]]
        decision = http.post("/route", json={"query": query}).json()
        actual = costs[query][decision["model"]] * (2.0 if step >= CHANGE_AT else 1.0)
        feedback = {"query_id": decision["query_id"], "quality": 1.0, "cost": actual}
        assert http.post("/feedback", json=feedback).is_success
        return actual

    # 4 clients at once: requests arrive about in the order of their steps
    with httpx.Client(base_url=base_url, timeout=30) as http, ThreadPoolExecutor(max_workers=4) as pool:
        return np.array(list(pool.map(lambda step: one(http, step), range(REQUESTS))))


def _window_means(costs: np.ndarray) -> np.ndarray:
    """The mean of every window of :data:`WINDOW` consecutive costs after :data:`WARM_UP`."""
    total = np.concatenate([[0.0], np.cumsum(costs[WARM_UP:])])
    return (total[WINDOW:] - total[:-WINDOW]) / WINDOW


def _metric(base_url: str, name: str, headers: dict[str, str] | None = None, **labels: str) -> float | None:
    """The value of one sample of ``GET /metrics``, None when absent."""
    text = httpx.get(base_url + "/metrics", headers=headers).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


@pytest.mark.parametrize("workers", [1, 2])
def test_mean_cost_stays_within_five_percent_of_the_budget(demo_policy: Path, tmp_path: Path, workers: int) -> None:
    log = tmp_path / "decisions.jsonl"
    running = _start_server(
        demo_policy, tmp_path, "--budget", str(BUDGET), "--decision-log", str(log), "--workers", str(workers)
    )
    try:
        actual = _traffic(running.base_url)
        deadline = time.monotonic() + 10  # a feedback that overtook its decision's booking is retried (0.2 s)
        while (_metric(running.base_url, "routerl_budget_corrections_total", result="applied") or 0) < REQUESTS:
            assert time.monotonic() < deadline and not _metric(
                running.base_url, "routerl_budget_corrections_total", result="unmatched"
            )
            time.sleep(0.1)
        assert _metric(running.base_url, "routerl_budget_usd", account="") == BUDGET
        weight_now = _metric(running.base_url, "routerl_budget_cost_weight", account="")
        spent = _metric(running.base_url, "routerl_budget_spend_usd", account="")
        applied = _metric(running.base_url, "routerl_budget_corrections_total", result="applied")
        unmatched = _metric(running.base_url, "routerl_budget_corrections_total", result="unmatched")
    finally:
        _stop(running.process)
    means = _window_means(actual) / BUDGET
    assert means.min() >= 0.95 and means.max() <= 1.05, (means.min(), means.max())
    assert (applied, unmatched) == (REQUESTS, None)  # every feedback found its decision's prediction, on any worker
    assert spent == pytest.approx(actual.sum(), rel=1e-6)  # and replaced it by the actual cost
    logs = [log] if workers == 1 else [tmp_path / f"decisions-{i}.jsonl" for i in range(workers)]
    records = [json.loads(line) for path in logs for line in path.read_text().splitlines()]
    weights = [record["cost_weight"] for record in records if "policy_version" in record]
    assert len(weights) == REQUESTS
    assert weight_now is not None and min(weights) <= weight_now <= max(weights) * 1.5
    assert max(weights) > 1.5 * min(weights)  # the controller moved the weight, and the log says so


def _route(http: httpx.Client, query: str) -> str:
    answer = http.post("/route", json={"query": query})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["model"])


def test_a_new_price_table_moves_routing_at_the_next_request(demo_policy: Path, tmp_path: Path) -> None:
    """``PUT /admin/prices`` with the chosen model a thousand times dearer: the next request, on
    either worker, goes elsewhere; no reload, no retrain."""
    running = _start_server(demo_policy, tmp_path, "--workers", "2", env={"ROUTERL_ADMIN_TOKEN": ADMIN})
    admin = {"authorization": f"Bearer {ADMIN}"}
    query = "Fagobrum breshan zovutum togil besus tatul troupar baran trovu vebam tovovu vuvus dotem."
    try:
        with httpx.Client(base_url=running.base_url, timeout=30) as http:
            before = _route(http, query)
            version = http.get("/healthz").json()["policy"]["version"]
            table = {"models": {before: {"input": 5000.0, "output": 15000.0}}}
            answer = http.put("/admin/prices", json=table, headers=admin)
            assert answer.status_code == 200, answer.text
            assert answer.json()["cost_mode"] == "tokens" and answer.json()["routing_follows"] is True
            after = {_route(http, query) for _ in range(8)}  # the kernel spreads them over both workers
            assert before not in after
            assert http.get("/healthz").json()["policy"]["version"] == version
            unknown = http.put(
                "/admin/prices", json={"models": {"no-such-model": {"input": 1, "output": 1}}}, headers=admin
            )
            assert unknown.status_code == 422 and "no-such-model" in unknown.json()["error"]["message"]
            negative = http.put("/admin/prices", json={"models": {before: {"input": -1, "output": 1}}}, headers=admin)
            assert negative.status_code == 422
            as_text = http.put("/admin/prices", json={"models": {before: {"input": "1", "output": 1}}}, headers=admin)
            assert as_text.status_code == 422  # a price written as text is refused, not converted
            assert http.put("/admin/prices", json=table).status_code == 401  # an admin route
    finally:
        _stop(running.process)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--budget", "0"], "--budget must be a finite number > 0, got 0.0"),
        (["--budget", "nan"], "--budget must be a finite number > 0, got nan"),
        (["--budget-step", "-1", "--budget", "0.001"], "--budget-step must be a finite number > 0, got -1.0"),
        (["--session-switch-cost", "-1"], "--session-switch-cost must be a finite number >= 0, got -1.0"),
        (["--session-ttl", "0"], "--session-ttl must be a finite number > 0, got 0.0"),
    ],
)
def test_bad_spend_flags_exit_2_with_one_line(demo_policy: Path, flags: list[str], message: str) -> None:
    _assert_one_line_error(
        _run_serve("--policy", str(demo_policy), "--port", "0", *flags), f"serve.py: error: {message}"
    )


def test_a_budget_needs_a_policy_that_predicts_costs(demo_policy: Path, tmp_path: Path) -> None:
    """With ``--engine torchscript``, a policy without ``scores_costs`` (as older exports are) is refused at
    start, in one line (the native engine prices any routerl export from its head; this wrapper it refuses)."""
    from test_serve_ops import FLAKY

    wrapped = tmp_path / "no-costs.pt"
    script = tmp_path / "wrap.py"  # TorchScript reads the class's source from a file
    script.write_text(FLAKY, encoding="utf-8")
    subprocess.run([sys.executable, str(script), str(demo_policy), str(wrapped)], check=True, timeout=120)
    refused = _run_serve("--policy", str(wrapped), "--port", "0", "--budget", "0.001", "--engine", "torchscript")
    _assert_one_line_error(refused, "it predicts no costs", "a live budget needs them")
    native = _run_serve("--policy", str(wrapped), "--port", "0", "--budget", "0.001")
    _assert_one_line_error(native, "it has no portable form", "serve it with --engine torchscript")


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ("models:\n  gpt-9: {input: 1, output: 2}\n", "unknown model(s) ['gpt-9']; the service routes to"),
        (
            "models:\n  tiny-1b: {input: -1, output: 2}\n",
            "models.tiny-1b.input: Input should be greater than or equal",
        ),
        ("models: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_bad_price_file_exits_2_with_one_line(demo_policy: Path, tmp_path: Path, table: str, problem: str) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(table, encoding="utf-8")
    refused = _run_serve("--policy", str(demo_policy), "--port", "0", "--prices", str(prices))
    _assert_one_line_error(refused, f"serve.py: error: --prices {prices}: {problem}")
