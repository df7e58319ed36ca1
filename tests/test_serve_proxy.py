"""The OpenAI-compatible proxy (``POST /v1/chat/completions``) against the real server.

The test starts small OpenAI-compatible fake backends on 127.0.0.1 (one answers, one fails with
500, one is unreachable, one is too slow), writes a backends file that gives the policy's best
models the broken backends, and talks to ``serve.py`` with the official ``openai`` client.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_serve import RunningServer, _assert_error, _load_local, _start_server, _stop

API_TOKEN = "test-api-token"
BACKEND_KEY = "sk-fake-backend-secret-0123456789"
QUERY = "Write a Python function that merges two sorted lists in O(n) time."


@dataclass
class FakeBackend:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that answers, fails (500) or is slow."""

    behaviour: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    #: The answer's text for a request body (default: "answer from <its model>").
    answer: Callable[[dict[str, Any]], str] | None = None

    @property
    def base_url(self) -> str:
        """The ``base_url`` of this backend (``.../v1``)."""
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> FakeBackend:
        """Serve in a daemon thread."""
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                """Keep the test output quiet."""

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                backend.requests.append({"body": body, "authorization": self.headers["authorization"]})
                if self.path != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "no such path"}}', "application/json")
                    return
                if backend.behaviour == "fail":
                    self._send(500, b'{"error": {"message": "backend broke"}}', "application/json")
                    return
                if backend.behaviour == "slow":
                    time.sleep(3)
                text = backend.answer(body) if backend.answer else f"answer from {body['model']}"
                usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
                if not body.get("stream"):
                    answer = {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "usage": usage,
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": text},
                            }
                        ],
                    }
                    self._send(200, json.dumps(answer).encode(), "application/json")
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                for piece in text.split(" "):
                    chunk = {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": body["model"],
                        "choices": [{"index": 0, "delta": {"content": piece + " "}, "finish_reason": None}],
                    }
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                final = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": body["model"],
                    "choices": [],
                    "usage": usage,
                }
                self.wfile.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


def _unreachable_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@dataclass
class Proxy:
    """A running proxy, its fake backends and what the policy ranks first."""

    running: RunningServer
    good: FakeBackend
    failing: FakeBackend
    ranked: list[str]  # the policy's models for QUERY, best first
    decision_log: Path

    def client(self, **kwargs: Any) -> openai.OpenAI:
        """An official OpenAI client pointed at the proxy."""
        return openai.OpenAI(base_url=self.running.base_url + "/v1", api_key=API_TOKEN, max_retries=0, **kwargs)


def _write_backends(path: Path, urls: dict[str, tuple[str, float]]) -> Path:
    """Write a backends file: ``{model: (base_url, timeout_s)}``, every backend with a key."""
    spec = {
        model: {
            "base_url": url,
            "model": f"backend-{model}",
            "api_key_env": "FAKE_BACKEND_KEY",
            "timeout_s": timeout,
        }
        for model, (url, timeout) in urls.items()
    }
    path.write_text(yaml.safe_dump({"backends": spec}), encoding="utf-8")
    return path


def _ranked(policy: Path, query: str) -> list[str]:
    """The policy's models for ``query`` at its default weight, best first (ties: lower index)."""
    module, _ = _load_local(policy)
    models: list[str] = module.models()
    row = module.scores([query], float(module.default_cost_weight()))[0].tolist()
    return [models[i] for i in sorted(range(len(models)), key=lambda i: (-row[i], i))]


@pytest.fixture(scope="module")
def proxy(demo_policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """The proxy with the best model on a failing backend and the second on an unreachable one."""
    tmp = tmp_path_factory.mktemp("proxy")
    good, failing = FakeBackend("ok").start(), FakeBackend("fail").start()
    ranked = _ranked(demo_policy, QUERY)
    urls = {model: (good.base_url, 30.0) for model in ranked[2:]}
    urls[ranked[0]] = (failing.base_url, 30.0)
    urls[ranked[1]] = (_unreachable_url(), 30.0)
    backends = _write_backends(tmp / "backends.yaml", urls)
    log = tmp / "decisions.jsonl"
    running = _start_server(
        demo_policy,
        tmp,
        "--backends",
        str(backends),
        "--decision-log",
        str(log),
        env={"ROUTERL_API_TOKEN": API_TOKEN, "FAKE_BACKEND_KEY": BACKEND_KEY},
    )
    yield Proxy(running, good, failing, ranked, log)
    _stop(running.process)
    good.stop()
    failing.stop()


def _metric(base_url: str, name: str, **labels: str) -> float:
    """The value of one sample of ``GET /metrics`` (0 when absent)."""
    text = httpx.get(base_url + "/metrics", headers={"authorization": f"Bearer {API_TOKEN}"}).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _records(path: Path) -> list[dict[str, Any]]:
    """The decision log's records."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_falls_back_to_the_next_best_model(proxy: Proxy) -> None:
    before = _metric(proxy.running.base_url, "routerl_fallbacks_total", reason="backend")
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="router",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": QUERY}],
    )
    served = proxy.ranked[2]
    assert raw.headers["x-routerl-model"] == served
    completion = raw.parse()
    assert completion.choices[0].message.content == f"answer from backend-{served}"
    assert completion.usage is not None and completion.usage.completion_tokens == 7
    assert proxy.failing.requests[-1]["body"]["model"] == f"backend-{proxy.ranked[0]}"
    forwarded = proxy.good.requests[-1]
    assert forwarded["body"]["model"] == f"backend-{served}"
    assert forwarded["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    assert forwarded["authorization"] == f"Bearer {BACKEND_KEY}"
    after = _metric(proxy.running.base_url, "routerl_fallbacks_total", reason="backend")
    assert after - before == 2
    record = next(r for r in _records(proxy.decision_log) if r["query_id"] == raw.headers["x-routerl-query-id"])
    assert record["model"] == served and record["fallback_from"] == proxy.ranked[0]
    assert record["query"] == QUERY
    assert (record["prompt_tokens"], record["completion_tokens"]) == (11, 7)


def test_streaming_passes_the_events_through(proxy: Proxy) -> None:
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="router:300",
        messages=[{"role": "user", "content": QUERY}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-routerl-model"] == proxy.ranked[2]
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == f"answer from backend-{proxy.ranked[2]}"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 11
    assert proxy.good.requests[-1]["body"]["stream"] is True
    query_id = raw.headers["x-routerl-query-id"]
    deadline = time.monotonic() + 10
    while not any(r["query_id"] == query_id for r in _records(proxy.decision_log)):
        assert time.monotonic() < deadline, "the streamed decision was never logged"
        time.sleep(0.05)
    record = next(r for r in _records(proxy.decision_log) if r["query_id"] == query_id)
    assert record["cost_weight"] == 300.0 and record["completion_tokens"] == 7


def test_feedback_joins_a_proxied_decision(proxy: Proxy) -> None:
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="router", messages=[{"role": "user", "content": QUERY}]
    )
    query_id = raw.headers["x-routerl-query-id"]
    answer = httpx.post(
        proxy.running.base_url + "/feedback",
        json={"query_id": query_id, "quality": 0.75},
        headers={"authorization": f"Bearer {API_TOKEN}"},
    )
    assert answer.status_code == 200 and answer.json() == {"ok": True}
    assert _records(proxy.decision_log)[-1] == {"query_id": query_id, "quality": 0.75, "cost": None}


def test_backend_keys_are_never_logged(proxy: Proxy) -> None:
    proxy.client().chat.completions.create(model="router", messages=[{"role": "user", "content": "hi"}])
    assert BACKEND_KEY not in proxy.running.stderr_path.read_text()
    assert BACKEND_KEY not in proxy.decision_log.read_text()


@pytest.mark.parametrize(
    ("model", "messages"),
    [
        ("gpt-4o", [{"role": "user", "content": "hi"}]),
        ("router:-1", [{"role": "user", "content": "hi"}]),
        ("router:nan", [{"role": "user", "content": "hi"}]),
        ("router:abc", [{"role": "user", "content": "hi"}]),
        ("router", []),
        ("router", [{"role": "system", "content": "no user message"}]),
        ("router", [{"role": "user", "content": ""}]),
    ],
)
def test_bad_chat_requests_are_422(proxy: Proxy, model: str, messages: list[dict[str, str]]) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        proxy.client().chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
    body = caught.value.response.json()
    assert set(body) == {"error"} and body["error"]["type"] == "invalid_request"


def test_chat_needs_the_api_token(proxy: Proxy) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(base_url=proxy.running.base_url + "/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model="router", messages=[{"role": "user", "content": "hi"}]
        )


def test_chat_malformed_and_wrong_content_type(proxy: Proxy) -> None:
    auth = {"authorization": f"Bearer {API_TOKEN}"}
    url = proxy.running.base_url + "/v1/chat/completions"
    _assert_error(
        httpx.post(url, content=b'{"model": "router"', headers={**auth, "content-type": "application/json"}),
        400,
        "invalid_json",
    )
    _assert_error(
        httpx.post(url, content=b"{}", headers={**auth, "content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    _assert_error(httpx.get(url, headers=auth), 405, "method_not_allowed")
    assert httpx.get(proxy.running.base_url + "/healthz").json()["status"] == "ok"


def _proxy_to(demo_policy: Path, tmp: Path, urls: dict[str, tuple[str, float]]) -> RunningServer:
    """A proxy with only the given backends."""
    backends = _write_backends(tmp / "backends.yaml", urls)
    return _start_server(demo_policy, tmp, "--backends", str(backends), env={"FAKE_BACKEND_KEY": BACKEND_KEY})


def test_all_backends_failing_is_502(demo_policy: Path, tmp_path: Path) -> None:
    failing = FakeBackend("fail").start()
    models = _ranked(demo_policy, QUERY)
    running = _proxy_to(
        demo_policy, tmp_path, {models[0]: (failing.base_url, 5.0), models[1]: (_unreachable_url(), 5.0)}
    )
    try:
        client = openai.OpenAI(base_url=running.base_url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="router", messages=[{"role": "user", "content": QUERY}])
        assert caught.value.status_code == 502
        assert caught.value.response.json()["error"]["type"] == "bad_gateway"
        assert httpx.get(running.base_url + "/healthz").status_code == 200
    finally:
        _stop(running.process)
        failing.stop()


def test_all_backends_timing_out_is_504(demo_policy: Path, tmp_path: Path) -> None:
    slow = FakeBackend("slow").start()
    models = _ranked(demo_policy, QUERY)
    running = _proxy_to(demo_policy, tmp_path, {models[0]: (slow.base_url, 0.3)})
    try:
        response = httpx.post(
            running.base_url + "/v1/chat/completions",
            timeout=30,
            json={"model": "router", "messages": [{"role": "user", "content": QUERY}]},
        )
        _assert_error(response, 504, "gateway_timeout")
    finally:
        _stop(running.process)
        slow.stop()


def test_route_on_conversation(demo_policy: Path, tmp_path: Path) -> None:
    good = FakeBackend("ok").start()
    models = _ranked(demo_policy, QUERY)
    backends = _write_backends(tmp_path / "backends.yaml", {m: (good.base_url, 5.0) for m in models})
    log = tmp_path / "decisions.jsonl"
    running = _start_server(
        demo_policy,
        tmp_path,
        "--backends",
        str(backends),
        "--decision-log",
        str(log),
        "--route-on",
        "conversation",
        "--log-queries",
        "hash",
        env={"FAKE_BACKEND_KEY": BACKEND_KEY},
    )
    try:
        messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": QUERY}]
        response = httpx.post(running.base_url + "/v1/chat/completions", json={"model": "router", "messages": messages})
        assert response.status_code == 200, response.text
        expected = hashlib.sha256(f"be brief\n{QUERY}".encode()).hexdigest()
        assert _records(log)[-1]["query"] == expected
    finally:
        _stop(running.process)
        good.stop()
