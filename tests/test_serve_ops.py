"""Operating the real server: tokens, batch routing, decision log and exploration, metrics, hot
reload under load, scoring fallback, and start-up errors of the new flags."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_serve import (
    REPO_ROOT,
    _assert_error,
    _assert_one_line_error,
    _load_local,
    _run_serve,
    _start_server,
    _stop,
)

from serving.backends import BackendsFile
from serving.decisions import DecisionLog

API = "api-token-for-tests"
ADMIN = "admin-token-for-tests"
QUERY = "Prove that there are infinitely many primes."


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _metric(http: httpx.Client, name: str, **labels: str) -> float:
    """One sample of ``GET /metrics`` (0 when absent)."""
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _resave(source: Path, target: Path, **changes: Any) -> Path:
    """Save ``source``'s module again with changed metadata (different bytes = new version)."""
    module, meta = _load_local(source)
    torch.jit.save(module, str(target), _extra_files={"metadata.json": json.dumps({**meta, **changes})})
    return target


def _version(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


# ----------------------------------------------------------------------------- a guarded server


@pytest.fixture(scope="module")
def guarded(demo_policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    """Server with both tokens, a decision log and ε = 0.5; yields (client with the API token, log)."""
    tmp = tmp_path_factory.mktemp("guarded")
    log = tmp / "decisions.jsonl"
    running = _start_server(
        demo_policy,
        tmp,
        "--decision-log",
        str(log),
        "--explore-epsilon",
        "0.5",
        "--max-batch",
        "64",
        env={"ROUTERL_API_TOKEN": API, "ROUTERL_ADMIN_TOKEN": ADMIN},
    )
    with httpx.Client(base_url=running.base_url, headers=_auth(API), timeout=60) as http:
        yield http, log
    _stop(running.process)
    assert API not in running.stderr_path.read_text() and ADMIN not in running.stderr_path.read_text()


@pytest.mark.parametrize(
    ("method", "path", "token", "status"),
    [
        ("POST", "/route", None, 401),
        ("POST", "/route", "wrong", 403),
        ("POST", "/route", ADMIN, 403),
        ("POST", "/route", API, 200),
        ("POST", "/route/batch", None, 401),
        ("POST", "/feedback", "wrong", 403),
        ("GET", "/metrics", None, 401),
        ("GET", "/metrics", API, 200),
        ("GET", "/no-such-route", None, 401),
        ("GET", "/healthz", None, 200),
        ("POST", "/admin/reload", None, 401),
        ("POST", "/admin/reload", API, 403),
        ("POST", "/admin/reload", ADMIN, 200),
    ],
)
def test_tokens(guarded: tuple[httpx.Client, Path], method: str, path: str, token: str | None, status: int) -> None:
    http, _ = guarded
    body = {"query": QUERY} if path == "/route" else None
    headers = {"authorization": ""} if token is None else _auth(token)
    response = http.request(method, path, json=body, headers=headers)
    if status >= 400:
        _assert_error(response, status)
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
    else:
        assert response.status_code == status, response.text


def test_admin_routes_are_refused_without_an_admin_token(demo_policy: Path, tmp_path: Path) -> None:
    running = _start_server(demo_policy, tmp_path)
    try:
        _assert_error(httpx.post(running.base_url + "/admin/reload", headers=_auth("guess")), 403, "forbidden")
    finally:
        _stop(running.process)


def test_exploration_logs_exact_propensities(guarded: tuple[httpx.Client, Path], local_models) -> None:
    http, log = guarded
    models, greedy = local_models
    epsilon, n = 0.5, 400
    ids = set()
    for _ in range(n):
        response = http.post("/route", json={"query": QUERY})
        assert response.status_code == 200
        ids.add(response.json()["query_id"])
    records = [r for r in _records(log) if r.get("query_id") in ids]
    assert len(records) == n
    k = len(models)
    for record in records:
        assert set(record) == {
            "query_id",
            "query",
            "model",
            "propensity",
            "cost_weight",
            "policy_version",
            "timestamp",
        }
        assert record["query"] == QUERY and record["cost_weight"] == 300.0
        expected = 1 - epsilon + epsilon / k if record["model"] == greedy else epsilon / k
        assert record["propensity"] == pytest.approx(expected, abs=1e-12)
    share = Counter(r["model"] for r in records)[greedy] / n
    assert abs(share - (1 - epsilon + epsilon / k)) < 0.1
    assert len({r["model"] for r in records}) == k  # exploration reaches every model

    allowed = [m for m in models if m != greedy][:2]
    response = http.post("/route", json={"query": QUERY, "allowed_models": allowed})
    record = _records(log)[-1]
    assert record["query_id"] == response.json()["query_id"] and record["model"] in allowed
    assert record["propensity"] in (pytest.approx(1 - epsilon + epsilon / 2), pytest.approx(epsilon / 2))


def test_explore_seed_makes_exploration_reproducible(demo_policy: Path, tmp_path: Path) -> None:
    """Two servers with the same ``--explore-seed`` explore alike; another seed explores otherwise."""

    def explored(seed: int, folder: str) -> list[str]:
        (tmp_path / folder).mkdir()
        running = _start_server(demo_policy, tmp_path / folder, "--explore-epsilon", "0.5", "--explore-seed", str(seed))
        try:
            response = httpx.post(running.base_url + "/route/batch", json={"queries": [QUERY] * 64}, timeout=60)
            assert response.status_code == 200, response.text
            return response.json()["models"]
        finally:
            _stop(running.process)

    first, again, other = explored(7, "first"), explored(7, "again"), explored(8, "other")
    assert len(set(first)) > 1  # it did explore
    assert first == again
    assert first != other


@pytest.fixture(scope="module")
def local_models(demo_policy: Path) -> tuple[list[str], str]:
    """The demo policy's models and its greedy choice for QUERY at the default weight."""
    module, _ = _load_local(demo_policy)
    return module.models(), module.route([QUERY], float(module.default_cost_weight()))[0]


def test_batch_routes_and_logs_every_query(guarded: tuple[httpx.Client, Path], local_models) -> None:
    http, log = guarded
    models, _ = local_models
    queries = [f"question number {i} about {topic}" for i, topic in enumerate(["math", "code", "poems"])]
    response = http.post("/route/batch", json={"queries": queries, "cost_weight": 0.0})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"query_ids", "models", "policy"}
    assert len(body["query_ids"]) == len(set(body["query_ids"])) == 3
    assert set(body["models"]) <= set(models)
    logged = {r["query_id"]: r for r in _records(log)[-3:]}
    for query_id, query, model in zip(body["query_ids"], queries, body["models"], strict=True):
        assert logged[query_id]["query"] == query and logged[query_id]["model"] == model


def test_feedback_is_appended(guarded: tuple[httpx.Client, Path]) -> None:
    http, log = guarded
    assert http.post("/feedback", json={"query_id": "q1", "quality": 1, "cost": 0.002}).json() == {"ok": True}
    assert _records(log)[-1] == {"query_id": "q1", "quality": 1, "cost": 0.002}


BAD_NEW_ROUTES: list[tuple[str, str, Any, int, str]] = [
    ("batch-over-limit", "/route/batch", {"queries": ["q"] * 65}, 413, "batch_too_large"),
    ("batch-empty", "/route/batch", {"queries": []}, 422, "invalid_request"),
    ("batch-empty-query", "/route/batch", {"queries": ["a", ""]}, 422, "invalid_request"),
    ("batch-not-strings", "/route/batch", {"queries": [1, 2]}, 422, "invalid_request"),
    ("batch-query-not-list", "/route/batch", {"queries": "q"}, 422, "invalid_request"),
    (
        "batch-unknown-model",
        "/route/batch",
        {"queries": ["q"], "allowed_models": ["zz"]},
        422,
        "invalid_request",
    ),
    ("batch-negative-weight", "/route/batch", {"queries": ["q"], "cost_weight": -1}, 422, "invalid_request"),
    ("batch-long-query", "/route/batch", {"queries": ["a" * 100_001]}, 413, "query_too_long"),
    ("feedback-no-id", "/feedback", {"quality": 1}, 422, "invalid_request"),
    ("feedback-quality-high", "/feedback", {"query_id": "q", "quality": 1.5}, 422, "invalid_request"),
    ("feedback-quality-str", "/feedback", {"query_id": "q", "quality": "1"}, 422, "invalid_request"),
    (
        "feedback-cost-negative",
        "/feedback",
        {"query_id": "q", "quality": 1, "cost": -1},
        422,
        "invalid_request",
    ),
    ("feedback-extra", "/feedback", {"query_id": "q", "quality": 1, "model": "m"}, 422, "invalid_request"),
    ("reload-wrong-type", "/admin/reload", {"policy": 5}, 422, "invalid_request"),
    ("chat-without-backends", "/v1/chat/completions", {"model": "router"}, 404, "not_found"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "error_type"), [pytest.param(*bad[1:], id=bad[0]) for bad in BAD_NEW_ROUTES]
)
def test_bad_requests_on_new_routes(
    guarded: tuple[httpx.Client, Path], path: str, body: Any, status: int, error_type: str
) -> None:
    http, _ = guarded
    headers = _auth(ADMIN) if path.startswith("/admin/") else {}
    _assert_error(http.post(path, json=body, headers=headers), status, error_type)
    assert http.get("/healthz").json()["status"] == "ok"


def test_bad_bodies_on_new_routes(guarded: tuple[httpx.Client, Path]) -> None:
    http, _ = guarded
    for path in ("/route/batch", "/feedback"):
        _assert_error(
            http.post(path, content=b'{"queries": [', headers={"content-type": "application/json"}),
            400,
            "invalid_json",
        )
        _assert_error(
            http.post(path, content=b'{"query_id": "\xff"}', headers={"content-type": "application/json"}),
            400,
            "invalid_json",
        )
        _assert_error(
            http.post(path, content=b"{}", headers={"content-type": "text/plain"}),
            415,
            "unsupported_media_type",
        )
        _assert_error(
            http.post(path, content=b'{"quality": NaN}', headers={"content-type": "application/json"}),
            422,
            "invalid_request",
        )
        _assert_error(http.get(path), 405, "method_not_allowed")
    _assert_error(http.post("/metrics"), 405, "method_not_allowed")
    _assert_error(
        http.post("/admin/reload", content=b"x", headers={**_auth(ADMIN), "content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert http.get("/healthz").json()["status"] == "ok"


def test_metrics_count_requests_and_decisions(guarded: tuple[httpx.Client, Path], local_models) -> None:
    http, _ = guarded
    models, _ = local_models
    before = _metric(http, "routerl_requests_total", route="/route", status="200")
    timed = _metric(http, "routerl_request_duration_seconds_count", route="/route")
    decisions = sum(_metric(http, "routerl_decisions_total", model=m) for m in models)
    for _ in range(3):
        http.post("/route", json={"query": QUERY})
    http.post("/route", json={"query": ""})
    http.get("/nowhere/at/all")
    assert _metric(http, "routerl_requests_total", route="/route", status="200") == before + 3
    assert _metric(http, "routerl_requests_total", route="/route", status="422") >= 1
    assert _metric(http, "routerl_requests_total", route="unmatched", status="404") >= 1
    assert _metric(http, "routerl_request_duration_seconds_count", route="/route") == timed + 4
    assert sum(_metric(http, "routerl_decisions_total", model=m) for m in models) == decisions + 3
    assert http.get("/metrics").headers["content-type"].startswith("text/plain")


# ----------------------------------------------------------------------------- hot reload


def test_reload_under_load_drops_nothing(demo_policy: Path, tmp_path: Path) -> None:
    live = tmp_path / "live.pt"
    live.write_bytes(demo_policy.read_bytes())
    other = _resave(demo_policy, tmp_path / "other.pt", created_at="2000-01-01T00:00:00+00:00")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(demo_policy.read_bytes()[:5000])
    embedding = _resave(demo_policy, tmp_path / "embedding.pt", input_kind="embedding")
    running = _start_server(live, tmp_path, env={"ROUTERL_ADMIN_TOKEN": ADMIN})
    statuses: Counter[int] = Counter()
    versions: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=running.base_url, timeout=60) as http:
            while not stop.is_set():
                response = http.post("/route", json={"query": QUERY})
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    versions.add(response.json()["policy"]["version"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(base_url=running.base_url, headers=_auth(ADMIN), timeout=60) as admin:
            for i in range(6):
                target = other if i % 2 == 0 else live
                answer = admin.post("/admin/reload", json={"policy": str(target)})
                assert answer.status_code == 200, answer.text
                assert answer.json()["policy"]["version"] == _version(target)
                for refused in (corrupt, embedding, tmp_path / "missing.pt"):
                    message = _assert_error(
                        admin.post("/admin/reload", json={"policy": str(refused)}), 422, "invalid_policy"
                    )
                    assert str(refused) in message
                    assert admin.get("/healthz").json()["policy"]["version"] == _version(target)
                time.sleep(0.2)
            assert admin.post("/admin/reload").json()["policy"]["version"] == _version(live)  # same file
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        _stop(running.process)
    assert set(statuses) == {200}, statuses
    assert statuses[200] > 50
    assert versions == {_version(live), _version(other)}


def test_sighup_reloads_the_file(demo_policy: Path, tmp_path: Path) -> None:
    live = tmp_path / "live.pt"
    live.write_bytes(demo_policy.read_bytes())
    running = _start_server(live, tmp_path)
    try:
        other = _resave(demo_policy, tmp_path / "other.pt", created_at="1999-01-01T00:00:00+00:00")
        os.replace(other, live)
        running.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while httpx.get(running.base_url + "/healthz").json()["policy"]["version"] != _version(live):
            assert time.monotonic() < deadline, "SIGHUP did not reload the policy"
            time.sleep(0.1)
        live.write_bytes(b"corrupt now")
        running.process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert httpx.post(running.base_url + "/route", json={"query": QUERY}).status_code == 200
        assert running.process.poll() is None
        assert "SIGHUP reload refused" in running.stderr_path.read_text()
    finally:
        _stop(running.process)


# ----------------------------------------------------------------------------- scoring fallback

FLAKY = """
import json, sys, torch
from typing import List

class Flaky(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    @torch.jit.export
    def models(self) -> List[str]:
        return self.inner.models()

    @torch.jit.export
    def default_cost_weight(self) -> float:
        return self.inner.default_cost_weight()

    @torch.jit.export
    def scores(self, queries: List[str], cost_weight: float) -> torch.Tensor:
        for query in queries:
            if query == "__fail__":
                raise RuntimeError("scoring broke")
        return self.inner.scores(queries, cost_weight)

    @torch.jit.export
    def route(self, queries: List[str], cost_weight: float) -> List[str]:
        return self.inner.route(queries, cost_weight)

    @torch.jit.export
    def prices(self) -> torch.Tensor:
        return self.inner.prices()

    def forward(self, queries: List[str]) -> torch.Tensor:
        return self.inner(queries)

extra = {"metadata.json": ""}
inner = torch.jit.load(sys.argv[1], _extra_files=extra)
torch.jit.save(torch.jit.script(Flaky(inner)), sys.argv[2], _extra_files=extra)
"""


def test_scoring_failure_routes_to_the_fallback_model(demo_policy: Path, tmp_path: Path) -> None:
    flaky = tmp_path / "flaky.pt"
    script = tmp_path / "make_flaky.py"  # TorchScript reads the class's source from a file
    script.write_text(FLAKY, encoding="utf-8")
    subprocess.run([sys.executable, str(script), str(demo_policy), str(flaky)], check=True, timeout=120)
    running = _start_server(flaky, tmp_path, "--fallback-model", "tiny-1b", "--engine", "torchscript")
    try:
        with httpx.Client(base_url=running.base_url, timeout=60) as http:
            answer = http.post("/route", json={"query": "__fail__"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["model"] == "tiny-1b" and answer.json()["scores"] == {}
            restricted = http.post("/route", json={"query": "__fail__", "allowed_models": ["small-7b"]})
            assert restricted.json()["model"] == "small-7b"
            assert http.post("/route/batch", json={"queries": ["ok", "__fail__"]}).json()["models"] == [
                "tiny-1b",
                "tiny-1b",
            ]
            assert http.post("/route", json={"query": "fine"}).json()["scores"] != {}
            assert _metric(http, "routerl_fallbacks_total", reason="scoring") == 4
    finally:
        _stop(running.process)


# ----------------------------------------------------------------------------- start-up and safety


def test_bad_new_flags_exit_2(demo_policy: Path, tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("backends: [unclosed", encoding="utf-8")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("backends:\n  gpt-9:\n    base_url: http://127.0.0.1:1/v1\n    model: x\n", encoding="utf-8")
    no_key = tmp_path / "no_key.yaml"
    no_key.write_text(
        "backends:\n  tiny-1b:\n    base_url: http://127.0.0.1:1/v1\n    model: x\n"
        "    api_key_env: ROUTERL_TEST_UNSET_KEY\n",
        encoding="utf-8",
    )
    policy = ("--policy", str(demo_policy), "--port", "0")
    _assert_one_line_error(_run_serve(*policy, "--backends", str(bad_yaml)), str(bad_yaml))
    _assert_one_line_error(_run_serve(*policy, "--backends", str(unknown)), "gpt-9")
    _assert_one_line_error(_run_serve(*policy, "--backends", str(no_key)), "ROUTERL_TEST_UNSET_KEY")
    _assert_one_line_error(_run_serve(*policy, "--backends", str(tmp_path / "none.yaml")), "none.yaml")
    _assert_one_line_error(_run_serve(*policy, "--fallback-model", "gpt-9"), "gpt-9")
    _assert_one_line_error(_run_serve(*policy, "--explore-epsilon", "1.5"), "--explore-epsilon")
    _assert_one_line_error(_run_serve(*policy, "--max-batch", "0"), "--max-batch")


def test_backends_example_is_valid() -> None:
    parsed = BackendsFile.model_validate(yaml.safe_load((REPO_ROOT / "configs" / "backends.yaml").read_text()))
    assert parsed.backends


def test_nothing_on_the_serving_path_unpickles() -> None:
    sources = [
        REPO_ROOT / "serve.py",
        REPO_ROOT / "policies" / "artifact.py",
        *sorted((REPO_ROOT / "serving").glob("*.py")),
    ]
    for source in sources:
        text = source.read_text(encoding="utf-8")
        assert not re.search(r"\bpickle\b|torch\.load\(|numpy\.load|np\.load", text), source


@pytest.mark.parametrize("mode", ["full", "hash", "none"])
def test_log_queries_modes(tmp_path: Path, mode: str) -> None:
    log = DecisionLog(tmp_path / "d.jsonl", mode)  # type: ignore[arg-type]
    log.decision(query_id="a", query="héllo", model="m", propensity=1.0, cost_weight=0.0, policy_version="v")
    log.close()
    expected = {"full": "héllo", "hash": hashlib.sha256("héllo".encode()).hexdigest(), "none": None}[mode]
    assert _records(tmp_path / "d.jsonl")[0]["query"] == expected
