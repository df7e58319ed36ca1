"""The service's live dashboard (``GET /ui``, ``GET /ui/data``, ``POST /ui/try``; docs/contracts.md §4.11).

The real ``serve.py`` is started with an API token, a decision log, exploration and a live budget,
and the page is opened in a real headless Chromium (the ``chromium`` fixture) through its sign-in
form. Its numbers are read off the page and compared with ``GET /metrics`` and ``GET /ui/data``;
more traffic is sent while the page is open, and the page must show it without being reloaded.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_serve import RunningServer, _start_server, _stop

from policies.native import load_native_policy
from serving import dashboard
from serving.dashboard import EVENTS_TAIL_BYTES, gate_events, histogram_quantile

TOKEN = "dashboard-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BUDGET = 0.0003  # USD per query: between the demo log's cheapest and dearest model
QUERIES = [f"Question {i}: {topic}" for i, topic in enumerate(["prove a theorem", "write code", "translate"] * 12)]
#: Promotion-gate events as the follower writes them beside its policy (docs/contracts.md §6).
GATE_EVENTS = [
    {"kind": "start", "round": 0, "detail": {}},
    {
        "kind": "refuse",
        "round": 600,
        "detail": {"estimate": -0.01, "lower": -0.04, "upper": 0.02, "reason": "lower bound below the margin"},
    },
    {
        "kind": "promote",
        "round": 1200,
        "detail": {"estimate": 0.05, "lower": 0.02, "upper": 0.08, "version": 1, "promoted": True},
    },
]


def _samples(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``GET /metrics``: (name, sorted labels) -> value."""
    text = httpx.get(base_url + "/metrics", headers=AUTH).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _by_model(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> dict[str, float]:
    """One counter's values by its ``model`` label."""
    return {dict(labels)["model"]: value for (sample, labels), value in samples.items() if sample == name}


@pytest.fixture(scope="module")
def live(demo_policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """``serve.py`` with a token, a decision log, ε-greedy, a budget, and the demo policy in a folder
    whose ``events.jsonl`` is a follower's."""
    folder = tmp_path_factory.mktemp("ui")
    live_dir = folder / "live"
    live_dir.mkdir()
    for name in ("policy.pt", "policy.safetensors"):
        shutil.copy(demo_policy.parent / name, live_dir / name)
    (live_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in GATE_EVENTS), encoding="utf-8")
    running = _start_server(
        live_dir / "policy.pt",
        folder,
        "--decision-log",
        str(folder / "logs" / "decisions.jsonl"),
        "--explore-epsilon",
        "0.3",
        "--budget",
        str(BUDGET),
        env={"ROUTERL_API_TOKEN": TOKEN},
    )
    yield running
    _stop(running.process)


def _send(base_url: str, queries: list[str], feedback: int) -> None:
    """Route ``queries`` one by one and a batch of them, give ``feedback`` outcomes, one of an unknown id."""
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as http:
        ids = [http.post("/route", json={"query": q}).json()["query_id"] for q in queries]
        assert http.post("/route/batch", json={"queries": queries[:5]}).is_success
        for query_id in ids[:feedback]:
            assert http.post("/feedback", json={"query_id": query_id, "quality": 0.75}).is_success
        assert http.post("/feedback", json={"query_id": "not-one-of-ours", "quality": 0.25}).is_success
        assert http.post("/route", json={"query": ""}).status_code == 422  # a client error, counted


def _signed_in_page(chromium: Any, base_url: str, tmp_path: Path, **context: Any) -> Any:
    """A page of the dashboard, signed in through its form; console errors are collected in ``page.errors``."""
    page = chromium.new_context(**context).new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    response = page.goto(base_url + "/ui")
    assert response.status == 401 and page.locator("#token").count() == 1  # the sign-in page
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#poll-count")
    return page


def _page_numbers(page: Any) -> dict[str, Any]:
    """What the page shows: the cards and the models table (model -> decisions, feedback, quality)."""
    cards = {
        name: page.inner_text(f"#{name}")
        for name in (
            "decisions-total",
            "feedback-total",
            "explored-share",
            "latency-p50",
            "latency-p99",
            "client-errors",
        )
    }
    rows = page.eval_on_selector_all(
        "#models-table tbody tr", "rows => rows.map(r => [r.dataset.model, ...[...r.cells].map(c => c.textContent)])"
    )
    return {"cards": cards, "models": {row[0]: row[2:] for row in rows}}


def _wait_for_decisions(page: Any, total: int) -> None:
    """Wait until the page, polling on its own, shows ``total`` decisions."""
    page.wait_for_function(f"document.getElementById('decisions-total').textContent === '{total}'", timeout=20_000)


def test_the_page_shows_the_numbers_of_metrics_and_of_its_json_and_updates_itself(
    chromium: Any, live: RunningServer, tmp_path: Path
) -> None:
    _send(live.base_url, QUERIES, feedback=10)
    page = _signed_in_page(chromium, live.base_url, tmp_path, viewport={"width": 1280, "height": 900})
    first = len(QUERIES) + 5
    _wait_for_decisions(page, first)
    _send(live.base_url, QUERIES[:7], feedback=3)  # while the page is open: it must follow without a reload
    total = first + 7 + 5
    _wait_for_decisions(page, total)
    page.wait_for_function("Number(document.getElementById('poll-count').textContent) >= 3")
    shown = _page_numbers(page)
    samples = _samples(live.base_url)
    document = httpx.get(live.base_url + "/ui/data", headers=AUTH).json()

    decisions = _by_model(samples, "routerl_decisions_total")
    feedback = _by_model(samples, "routerl_feedback_total")
    quality = _by_model(samples, "routerl_feedback_quality_total")
    assert sum(decisions.values()) == total == document["traffic"]["decisions_total"]
    assert document["traffic"]["decisions"] == decisions
    assert feedback == {**{m: f["count"] for m, f in document["quality"]["feedback"].items()}}
    assert sum(feedback.values()) == 10 + 3 + 2 and feedback["unknown"] == 2  # the ids no decision had
    for model, (count, share, fed, mean_quality) in shown["models"].items():
        assert int(count) == decisions.get(model, 0)
        assert share == f"{100 * decisions.get(model, 0) / total:.1f}%"
        assert int(fed) == feedback.get(model, 0)
        expected = quality[model] / feedback[model] if feedback.get(model) else None
        assert mean_quality == ("–" if expected is None else f"{expected:.3f}")
    explored = samples[("routerl_explored_decisions_total", ())]
    assert 0 < explored < total  # ε = 0.3
    assert shown["cards"]["explored-share"] == f"{100 * explored / total:.1f}%"
    assert shown["cards"]["feedback-total"] == "15"
    latency = document["traffic"]["latency"]
    assert shown["cards"]["latency-p50"] == f"{1000 * latency['p50_seconds']:.2f}"
    assert shown["cards"]["latency-p99"] == f"{1000 * latency['p99_seconds']:.2f}"
    assert int(shown["cards"]["client-errors"]) >= 2  # the two empty queries (and the sign-in's 401)
    # the charts were drawn from the polls: one stacked trace per model in the traffic chart
    traces = page.evaluate("document.getElementById('chart-traffic').data.map(t => t.name)")
    assert set(traces) == set(decisions)
    (account,) = document["spend"]["accounts"]
    assert account["budget"] == BUDGET == samples[("routerl_budget_usd", (("account", ""),))]
    assert "cost weight routed at now" in page.inner_text("#spend-note")
    assert page.errors == []
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


def test_the_page_shows_the_live_policy_and_the_promotion_gate(
    chromium: Any, live: RunningServer, tmp_path: Path
) -> None:
    page = _signed_in_page(chromium, live.base_url, tmp_path)
    page.wait_for_function("Number(document.getElementById('poll-count').textContent) >= 1")
    health = httpx.get(live.base_url + "/healthz").json()
    assert page.inner_text("#policy-version") == health["policy"]["version"]
    policy_rows = dict(
        page.eval_on_selector_all("#policy-table tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    )
    meta = load_native_policy(_policy_path(live))
    assert policy_rows["data fingerprint"] == meta.metadata["data_fingerprint"]
    assert policy_rows["held-out AIQ"] == f"{meta.metadata['metrics']['aiq']:.4f}"
    rows = page.eval_on_selector_all(
        "#gate-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    assert [row[1] for row in rows] == ["promote", "refuse", "start"]  # newest first
    assert rows[0][2:4] == ["0.0500", "[0.0200, 0.0800]"] and rows[0][4] == "version 1"
    points = page.evaluate("document.getElementById('chart-gate').data[0].y")
    assert points == [-0.01, 0.05]  # the judged events: the refusal and the promotion


def _policy_path(live: RunningServer) -> Path:
    """The policy file the server was started with (``--policy``)."""
    arguments = live.process.args
    assert isinstance(arguments, list)
    return Path(arguments[arguments.index("--policy") + 1])


def test_the_try_box_shows_the_policys_scores_at_the_chosen_weight(
    chromium: Any, live: RunningServer, tmp_path: Path
) -> None:
    page = _signed_in_page(chromium, live.base_url, tmp_path, viewport={"width": 390, "height": 844})
    before = httpx.get(live.base_url + "/ui/data", headers=AUTH).json()["traffic"]["decisions_total"]
    query = "def merge(a, b): return sorted(a + b)  # is this O(n)?"
    page.fill("#try-query", query)
    page.fill("#try-weight", "0.5")
    page.click("#try-form button")
    page.wait_for_selector("#try-result[data-model]")
    weight = float(page.get_attribute("#try-result", "data-weight"))
    assert weight == 0.5  # as asked, though the live budget routes at another weight
    policy = load_native_policy(_policy_path(live))
    scores = policy.scores([query], weight)[0].tolist()
    expected = policy.models[max(range(len(scores)), key=lambda k: (scores[k], -k))]
    assert page.get_attribute("#try-result", "data-model") == expected
    shown = page.evaluate("document.getElementById('chart-try').data[0].y")
    assert shown == pytest.approx(scores, rel=1e-6)
    after = httpx.get(live.base_url + "/ui/data", headers=AUTH).json()["traffic"]["decisions_total"]
    assert after == before  # trying a query decides nothing
    # a phone's width: nothing wider than the screen
    assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)


def test_the_dashboard_needs_the_token_like_every_route(live: RunningServer) -> None:
    url = live.base_url
    missing = httpx.get(url + "/ui")
    assert missing.status_code == 401 and 'action="/ui/login"' in missing.text  # the sign-in page
    assert httpx.get(url + "/ui", cookies={"routerl_token": "wrong"}).status_code == 403
    for path in ("/ui/data", "/ui/static/dashboard.js", "/ui/static/plotly.min.js"):
        refused = httpx.get(url + path)
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized"
        assert httpx.get(url + path, headers=AUTH).status_code == 200
    assert httpx.get(url + "/ui/static/../../serve.py", headers=AUTH).status_code == 404
    assert httpx.get(url + "/ui/static/secrets.txt", headers=AUTH).status_code == 404
    signed = httpx.post(url + "/ui/login", data={"token": TOKEN})
    assert signed.status_code == 303 and signed.headers["location"] == "/ui"
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert httpx.get(url + "/ui/data", cookies={"routerl_token": TOKEN}).status_code == 200
    # the cookie is the dashboard's only: other routes still need the bearer header
    assert httpx.post(url + "/route", json={"query": "x"}, cookies={"routerl_token": TOKEN}).status_code == 401
    # the try box takes JSON only (a cross-site form cannot post it)
    form = httpx.post(url + "/ui/try", data={"query": "x"}, headers=AUTH)
    assert form.status_code == 415
    bad = httpx.post(url + "/ui/try", json={"query": "x", "cost_weight": -1}, headers=AUTH)
    assert bad.status_code == 422 and "cost_weight" in bad.json()["error"]["message"]


def test_query_texts_are_shown_only_with_log_queries_full(demo_policy: Path, tmp_path: Path) -> None:
    running = _start_server(demo_policy, tmp_path, "--log-queries", "hash", "--decision-log", str(tmp_path / "d.jsonl"))
    try:
        secret = "my private question about the quarterly numbers"
        assert httpx.post(running.base_url + "/route", json={"query": secret}).is_success
        document = httpx.get(running.base_url + "/ui/data")
        assert secret not in document.text
        (recent,) = document.json()["recent"]
        assert recent["query"] == hashlib.sha256(secret.encode()).hexdigest()
        assert document.json()["policy"]["gate_events"] is None  # not a follower's policy
    finally:
        _stop(running.process)


def test_several_workers_show_one_set_of_numbers(demo_policy: Path, tmp_path: Path) -> None:
    running = _start_server(demo_policy, tmp_path, "--workers", "2")
    try:
        with httpx.Client(base_url=running.base_url, timeout=30) as http:
            for query in QUERIES:
                assert http.post("/route", json={"query": query}).is_success
            document = http.get("/ui/data").json()
            decisions = _by_model(_samples(running.base_url), "routerl_decisions_total")
        assert document["traffic"]["decisions"] == decisions
        assert document["traffic"]["decisions_total"] == len(QUERIES)
    finally:
        _stop(running.process)


@pytest.mark.parametrize(
    ("buckets", "quantile", "expected"),
    [
        ([(1.0, 0.0), (2.0, 10.0), (math.inf, 10.0)], 0.5, 1.5),  # inside the second bucket
        ([(1.0, 4.0), (2.0, 8.0), (math.inf, 8.0)], 0.25, 0.5),  # the first bucket starts at 0
        ([(1.0, 0.0), (2.0, 1.0), (math.inf, 10.0)], 0.99, 2.0),  # in +Inf: the largest finite bound
        ([(1.0, 0.0), (math.inf, 0.0)], 0.5, None),  # no observations
    ],
)
def test_histogram_quantile_follows_prometheus(
    buckets: list[tuple[float, float]], quantile: float, expected: float | None
) -> None:
    assert histogram_quantile(buckets, quantile) == expected


def test_gate_events_are_the_latest_whole_lines_of_a_long_file(tmp_path: Path) -> None:
    events = [
        {"kind": "refuse", "round": 500 * i, "detail": {"estimate": -0.01, "reason": "x" * 300}} for i in range(4000)
    ]
    lines = "".join(json.dumps(event) + "\n" for event in events)
    (tmp_path / "events.jsonl").write_text(lines + '{"kind": "promote", "rou', encoding="utf-8")  # a write in progress
    assert len(lines) > 4 * EVENTS_TAIL_BYTES  # only the tail is read
    assert gate_events(tmp_path / "policy.pt") == events[-dashboard.GATE_EVENTS :]
    assert gate_events(tmp_path / "elsewhere" / "policy.pt") is None  # not a follower's folder
