"""Weights per objective through the real service (issue 22 item 5, docs/contracts.md §2.13, §4.3).

The policy is :mod:`test_objective_weights`' (three models whose quality, USD, latency and energy are
known constants, so the best model at any weight vector is known). ``serve.py`` is started for real on
127.0.0.1; ``/route``, ``/route/batch`` and the OpenAI proxy (a fake backend, the official client) are
asked at weight vectors and must route to that optimum, log the weights and count the estimated
latency and energy they route.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from test_objective_weights import SECONDS, WATT_HOURS, best_model, export_objective_policy, objective_log
from test_serve import RunningServer, _start_server, _stop
from test_serve_budget import _metric
from test_serve_proxy import API_TOKEN, BACKEND_KEY, FakeBackend, _write_backends

MODELS = ("fast", "green", "strong")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    tmp = tmp_path_factory.mktemp("serve_objectives")
    export_objective_policy(objective_log(), tmp / "policy.pt")
    backend = FakeBackend("ok").start()
    backends = _write_backends(tmp / "backends.yaml", {model: (backend.base_url, 30.0) for model in MODELS})
    log = tmp / "decisions.jsonl"
    running = _start_server(
        tmp / "policy.pt", tmp, "--backends", str(backends), "--decision-log", str(log), "--no-access-log",
        env={"ROUTERL_API_TOKEN": API_TOKEN, "FAKE_BACKEND_KEY": BACKEND_KEY},
    )
    yield running, log
    _stop(running.process)
    backend.stop()


def _post(running: RunningServer, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(running.base_url + path, json=body, headers={"authorization": f"Bearer {API_TOKEN}"}, timeout=30)


@pytest.mark.parametrize("weights", [{"usd": 0.0}, {"usd": 0.0, "latency": 0.5}, {"usd": 0.0, "energy": 0.5},
                                     {"usd": 0.0, "carbon": 2.0}, {"latency": 0.5}])
def test_route_and_batch_choose_the_known_optimum_of_the_weights_asked(
    served: tuple[RunningServer, Path], weights: dict[str, float]
) -> None:
    running, _ = served
    expected = best_model({"usd": 10.0} | weights)  # an omitted usd is the policy's default, 10
    answer = _post(running, "/route", {"query": "alpha beta", "weights": weights})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == expected
    batch = _post(running, "/route/batch", {"queries": ["alpha", "gamma delta"], "weights": weights})
    assert batch.status_code == 200 and batch.json()["models"] == [expected, expected]


def test_the_proxy_reads_weights_from_the_model_field(served: tuple[RunningServer, Path]) -> None:
    running, log = served
    client = openai.OpenAI(base_url=running.base_url + "/v1", api_key=API_TOKEN, max_retries=0)
    chosen = {}
    for model in ("router:usd=0,latency=0.5", "router:usd=0,energy=0.5", "router:0"):
        answer = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "alpha beta"}]
        )
        chosen[model] = answer.headers["x-routerl-model"]
    assert chosen == {"router:usd=0,latency=0.5": "fast", "router:usd=0,energy=0.5": "green", "router:0": "strong"}
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    weighted = [r for r in records if r.get("weights") == {"usd": 0.0, "latency": 0.5}]
    assert weighted and all(r["cost_weight"] == 0.0 and r["model"] == "fast" for r in weighted)


@pytest.mark.parametrize(
    ("body", "message"),
    [({"query": "a", "weights": {"speed": 1.0}}, "unknown objective(s) ['speed']; this policy's objectives are"),
     ({"query": "a", "weights": {"latency": -1.0}}, "greater than or equal to 0"),
     ({"query": "a", "cost_weight": 1.0, "weights": {"usd": 2.0}}, "give the USD weight once"),
     ({"query": "a", "weights": {}}, "at least 1 item")],
)
def test_bad_weights_are_a_422_that_says_why(
    served: tuple[RunningServer, Path], body: dict[str, object], message: str
) -> None:
    answer = _post(served[0], "/route", body)
    assert answer.status_code == 422 and message in answer.text, answer.text


def test_weights_so_large_that_the_scores_overflow_are_a_422(served: tuple[RunningServer, Path]) -> None:
    answer = _post(served[0], "/route", {"query": "alpha", "weights": {"latency": 1e308}})
    assert answer.status_code == 422 and "are too large; the policy's scores overflow" in answer.text, answer.text


def test_the_dashboard_preview_scores_at_the_weights_asked(served: tuple[RunningServer, Path]) -> None:
    answer = _post(served[0], "/ui/try", {"query": "alpha", "weights": {"usd": 0.0, "energy": 0.5}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "green" and answer.json()["weights"] == {"usd": 0.0, "energy": 0.5}


@pytest.mark.parametrize("model", ["router:usd=1,latency", "router:latency=-1", "router:usd=1,usd=2", "router:=3"])
def test_a_malformed_weight_suffix_is_a_422_naming_the_model(served: tuple[RunningServer, Path], model: str) -> None:
    answer = _post(served[0], "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "a"}]})
    assert answer.status_code == 422 and repr(model)[:30] in answer.text, answer.text


def test_metrics_count_the_estimated_latency_and_energy_routed(served: tuple[RunningServer, Path]) -> None:
    running, _ = served
    auth = {"authorization": f"Bearer {API_TOKEN}"}

    def counted() -> dict[str, float]:
        return {name: _metric(running.base_url, f"routerl_estimated_{name}_total", auth, model="fast") or 0.0
                for name in ("latency_seconds", "energy_wh")}

    before = counted()
    for _ in range(5):
        answer = _post(running, "/route", {"query": "alpha", "weights": {"usd": 0.0, "latency": 0.5}})
        assert answer.json()["model"] == "fast"
    after = counted()
    assert after["latency_seconds"] == pytest.approx(before["latency_seconds"] + 5 * SECONDS[0], abs=0.01)
    assert after["energy_wh"] == pytest.approx(before["energy_wh"] + 5 * WATT_HOURS[0], abs=0.01)
