"""Hostile requests and slow clients against the real service (docs/contracts.md §4, issue 15).

Every hostile request must be answered with a 4xx status and the usual error body
``{"error": {"type", "message"}}`` (never a 5xx, never a stall), and ``/healthz`` must answer
after it. One ``serve.py`` serves every case: both tokens, a chat proxy to a fake backend,
``--fallback-model``, a decision log that a crash left with a torn last line, a low
``--max-feedback-cost``, 1 s header and body timeouts, and a limit of 256 open files, to which
the service fits its connections (:func:`serving.connections.fit_open_files`: 64).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_serve import RunningServer, _start_server, _stop
from test_serve_proxy import FakeBackend, _write_backends

from data.loading import load_log
from serving.decisions import DecisionLog

API = "hostile-api-token"
ADMIN = "hostile-admin-token"
COST_LIMIT = 10.0
TIMEOUT_S = 1.0
OPEN_FILES = 256
CONNECTIONS = 64  # (OPEN_FILES - RESERVED_FILES) // FILES_PER_CONNECTION of serving.connections
#: Time a cut-off connection may take beyond its timeout (the deadline sweep, a loaded machine).
SLACK_S = 2.0

SEEDED_ID = "seeded-before-the-crash"
#: A log whose writer crashed mid-record: a decision, its feedback, then half a decision.
TORN_LOG = (
    json.dumps(
        {
            "query_id": SEEDED_ID,
            "query": "What is 2+2?",
            "model": "tiny-1b",
            "propensity": 1.0,
            "cost_weight": 0.0,
            "policy_version": "000000000000",
            "timestamp": "2025-01-01T00:00:00+00:00",
        }
    )
    + "\n"
    + json.dumps({"query_id": SEEDED_ID, "quality": 1.0, "cost": 0.001})
    + "\n"
    + '{"query_id": "torn", "query": "half a rec'
)


@dataclass(frozen=True)
class Served:
    """The hostile suite's server and what it was started with."""

    running: RunningServer
    decision_log: Path
    backend: FakeBackend
    policy: Path
    tmp: Path

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self.running.base_url

    def client(self, token: str = API) -> httpx.Client:
        """An HTTP client with ``token``."""
        return httpx.Client(base_url=self.base_url, headers={"authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture(scope="module")
def served(demo_policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The server every hostile case talks to (see the module docstring)."""
    tmp = tmp_path_factory.mktemp("hostile")
    backend = FakeBackend("ok").start()
    models = ["frontier-xl", "large-70b", "medium-34b", "small-7b", "tiny-1b"]
    backends = _write_backends(tmp / "backends.yaml", {model: (backend.base_url, 30.0) for model in models})
    log = tmp / "decisions.jsonl"
    log.write_text(TORN_LOG, encoding="utf-8")
    os.mkfifo(tmp / "policy.fifo")
    (tmp / "a-directory").mkdir()
    (tmp / "notes.txt").write_text("not a policy\n", encoding="utf-8")
    (tmp / "empty.pt").write_bytes(b"")
    running = _start_server(
        demo_policy,
        tmp,
        "--backends",
        str(backends),
        "--decision-log",
        str(log),
        "--fallback-model",
        "small-7b",
        "--max-feedback-cost",
        str(COST_LIMIT),
        "--header-timeout",
        str(TIMEOUT_S),
        "--body-timeout",
        str(TIMEOUT_S),
        env={"ROUTERL_API_TOKEN": API, "ROUTERL_ADMIN_TOKEN": ADMIN, "FAKE_BACKEND_KEY": "sk-fake"},
        open_files=OPEN_FILES,
    )
    yield Served(running, log, backend, demo_policy, tmp)
    _stop(running.process)
    backend.stop()


# ----------------------------------------------------------------------------- talking to it


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as the client saw it."""

    status: int
    content_type: str
    body: bytes


def _exchange(base_url: str, request: bytes, *more: bytes, timeout: float = 30.0) -> Answer:
    """Send raw ``request`` bytes (then each of ``more`` a moment later) on a new connection and
    read one answer; the server may answer and close before it has read everything."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(request)
            for part in more:
                time.sleep(0.1)
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered already: read it
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Answer(response.status, response.getheader("content-type", ""), response.read())


def _request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """A raw HTTP/1.1 request that closes its connection."""
    head = f"{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return head.encode("latin-1") + b"\r\n" + body


def _assert_error_answer(answer: Answer, status: int, error_type: str) -> str:
    """``answer`` has ``status`` and exactly the usual error body with ``error_type``; its message."""
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.content_type.startswith("application/json"), answer.content_type
    body = json.loads(answer.body)
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == error_type, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return str(body["error"]["message"])


def _metric(served: Served, name: str, **labels: str) -> float:
    """One sample of ``GET /metrics`` (0 when absent)."""
    with served.client() as http_client:
        text = http_client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _healthy(served: Served) -> None:
    """``GET /healthz`` answers 200 at once."""
    assert httpx.get(served.base_url + "/healthz", timeout=10).status_code == 200


# ----------------------------------------------------------------------------- the cases

JSON = "application/json"
CHAT = "/v1/chat/completions"


def _auth(token: str = API) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _chat(extra: str = "", content: str = '"hello"') -> bytes:
    """A chat request body (raw JSON text, so that it can hold what ``json.dumps`` refuses)."""
    return ('{"model": "router", "messages": [{"role": "user", "content": ' + content + "}]" + extra + "}").encode()


@dataclass(frozen=True)
class Hostile:
    """One hostile request (raw bytes, or built from the fields) and the error it must get."""

    id: str
    status: int
    error_type: str
    path: str = "/route"
    body: bytes = b""
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": JSON, **_auth()})
    raw: bytes | None = None

    def request(self, served: Served) -> bytes:
        """The request's bytes (``{tmp}`` in the body is the server's test folder)."""
        body = self.body.replace(b"{tmp}", str(served.tmp).encode())
        return self.raw if self.raw is not None else _request(self.method, self.path, body, self.headers)


def _reload(target: str | bytes, status: int = 422, error_type: str = "invalid_policy", **kwargs: Any) -> Hostile:
    """A ``/admin/reload`` of ``target`` (raw JSON string contents) with the admin token."""
    name = kwargs.pop("id")
    text = target if isinstance(target, bytes) else target.encode()
    headers = {"content-type": JSON, **_auth(ADMIN)}
    return Hostile(name, status, error_type, "/admin/reload", b'{"policy": "' + text + b'"}', headers=headers)


HOSTILE: list[Hostile] = [
    # 5xx before issue 15: the proxy with text that is not valid Unicode or numbers that are not finite
    Hostile("chat-lone-surrogate", 422, "invalid_request", CHAT, _chat(content='"hi \\ud800"')),
    Hostile(
        "chat-part-surrogate", 422, "invalid_request", CHAT, _chat(content='[{"type": "text", "text": "\\udfff"}]')
    ),
    Hostile(
        "chat-raw-surrogate-bytes",
        422,
        "invalid_request",
        CHAT,
        _chat(content='"hi "').replace(b'hi "', b'hi \xed\xa0\x80"'),
    ),
    Hostile("chat-temperature-nan", 422, "invalid_request", CHAT, _chat(', "temperature": NaN')),
    Hostile("chat-temperature-1e400", 422, "invalid_request", CHAT, _chat(', "temperature": 1e400')),
    Hostile("chat-nested-infinity", 422, "invalid_request", CHAT, _chat(', "metadata": {"a": [1, -Infinity]}')),
    Hostile("chat-surrogate-key", 422, "invalid_request", CHAT, _chat(', "metadata": {"\\ud800": 1}')),
    Hostile(
        "chat-surrogate-role",
        422,
        "invalid_request",
        CHAT,
        b'{"model": "router", "messages": [{"role": "\\ud800", "content": "x"}]}',
    ),
    _reload("/tmp/a\\u0000b", 422, "invalid_request", id="reload-nul-byte"),
    _reload("\\ud800.pt", 422, "invalid_request", id="reload-surrogate-path"),
    _reload("x" * 5000, 422, "invalid_request", id="reload-path-too-long"),
    # feedback: absurd costs and qualities are refused at the door
    Hostile(
        "feedback-cost-1e308", 422, "invalid_request", "/feedback", b'{"query_id": "q", "quality": 1, "cost": 1e308}'
    ),
    Hostile(
        "feedback-cost-over-limit",
        422,
        "invalid_request",
        "/feedback",
        b'{"query_id": "q", "quality": 1, "cost": 10.5}',
    ),
    Hostile(
        "feedback-cost-1e400", 422, "invalid_request", "/feedback", b'{"query_id": "q", "quality": 1, "cost": 1e400}'
    ),
    Hostile(
        "feedback-cost-negative", 422, "invalid_request", "/feedback", b'{"query_id": "q", "quality": 1, "cost": -1}'
    ),
    Hostile("feedback-quality-2", 422, "invalid_request", "/feedback", b'{"query_id": "q", "quality": 2}'),
    Hostile("feedback-quality-nan", 422, "invalid_request", "/feedback", b'{"query_id": "q", "quality": NaN}'),
    Hostile("feedback-quality-string", 422, "invalid_request", "/feedback", b'{"query_id": "q", "quality": "0.5"}'),
    Hostile("feedback-id-surrogate", 422, "invalid_request", "/feedback", b'{"query_id": "\\ud800", "quality": 1}'),
    # reload targets: only a regular file of a bounded size is read
    _reload("{tmp}/policy.fifo", id="reload-fifo"),
    _reload("/dev/zero", id="reload-dev-zero"),
    _reload("/dev/urandom", id="reload-dev-urandom"),
    _reload("{tmp}/a-directory", id="reload-directory"),
    _reload("{tmp}/notes.txt", id="reload-text-file"),
    _reload("{tmp}/empty.pt", id="reload-empty-file"),
    _reload("{tmp}/no-such.pt", id="reload-missing"),
    _reload("../../../../../../etc/hostname", id="reload-path-traversal"),
    _reload("{tmp}/decisions.jsonl", id="reload-the-decision-log"),
    # malformed HTTP and oversized heads: answered with the usual body, not uvicorn's plain text
    Hostile("bad-method", 400, "invalid_http", raw=b"G\x00T /healthz HTTP/1.1\r\nhost: x\r\n\r\n"),
    Hostile(
        "two-content-lengths",
        400,
        "invalid_http",
        raw=b"POST /route HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 30\r\n\r\n{}",
    ),
    Hostile(
        "bad-chunk-size",
        400,
        "invalid_http",
        raw=f"POST /route HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API}\r\n".encode()
        + b"content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ),
    # bodies
    Hostile("malformed-json", 400, "invalid_json", body=b'{"query": "hi"'),
    Hostile("empty-body", 400, "invalid_json"),
    Hostile("body-over-limit", 413, "payload_too_large", body=b'{"query": "' + b"a" * (1024 * 1024 + 10) + b'"}'),
    Hostile("body-a-list", 422, "invalid_request", body=b'["q"]'),
    # nesting
    Hostile("route-nested-100k", 400, "invalid_json", body=b"[" * 100_000 + b"]" * 100_000),
    Hostile("chat-nested-100k", 400, "invalid_json", CHAT, _chat(', "x": ' + "[" * 100_000 + "]" * 100_000)),
    Hostile(
        "feedback-nested-query-id", 422, "invalid_request", "/feedback", b'{"query_id": [[[["q"]]]], "quality": 1}'
    ),
    # numbers
    Hostile("cost-weight-1e999", 422, "invalid_request", body=b'{"query": "q", "cost_weight": 1e999}'),
    Hostile(
        "cost-weight-huge-int", 422, "invalid_request", body=b'{"query": "q", "cost_weight": 1' + b"0" * 400 + b"}"
    ),
    Hostile("cost-weight-nan", 422, "invalid_request", body=b'{"query": "q", "cost_weight": NaN}'),
    Hostile(
        "chat-cost-weight-nan",
        422,
        "invalid_request",
        CHAT,
        b'{"model": "router:nan", "messages": [{"role": "user", "content": "x"}]}',
    ),
    # encodings
    Hostile("invalid-utf8", 400, "invalid_json", body=b'{"query": "\xff\xfe"}'),
    Hostile("route-lone-surrogate", 422, "invalid_request", body=b'{"query": "\\ud800"}'),
    Hostile("batch-lone-surrogate", 422, "invalid_request", "/route/batch", b'{"queries": ["ok", "\\udc00"]}'),
    # content types
    Hostile(
        "text-plain",
        415,
        "unsupported_media_type",
        body=b'{"query": "q"}',
        headers={"content-type": "text/plain", **_auth()},
    ),
    Hostile("no-content-type", 415, "unsupported_media_type", body=b'{"query": "q"}', headers=_auth()),
    Hostile(
        "chat-form",
        415,
        "unsupported_media_type",
        CHAT,
        b"model=router",
        headers={"content-type": "application/x-www-form-urlencoded", **_auth()},
    ),
    # tokens
    Hostile("no-token", 401, "unauthorized", body=b'{"query": "q"}', headers={"content-type": JSON}),
    Hostile("wrong-token", 403, "forbidden", body=b'{"query": "q"}', headers={"content-type": JSON, **_auth("guess")}),
    Hostile(
        "admin-token-on-route", 403, "forbidden", body=b'{"query": "q"}', headers={"content-type": JSON, **_auth(ADMIN)}
    ),
    Hostile("api-token-on-reload", 403, "forbidden", "/admin/reload", headers=_auth()),
    Hostile(
        "basic-auth",
        401,
        "unauthorized",
        body=b'{"query": "q"}',
        headers={"content-type": JSON, "authorization": "Basic YTpi"},
    ),
    # path tricks
    Hostile("dot-dot-to-admin", 401, "unauthorized", "/route/../admin/reload", headers={}),
    Hostile("encoded-admin", 401, "unauthorized", "/%61dmin/reload", headers={}),
    Hostile("double-slash", 404, "not_found", "//route", b'{"query": "q"}'),
    Hostile("encoded-nul", 404, "not_found", "/route%00", b'{"query": "q"}'),
    Hostile("long-path", 404, "not_found", "/" + "a" * 20_000, method="GET"),
    Hostile("get-feedback", 405, "method_not_allowed", "/feedback", method="GET"),
]


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in HOSTILE])
def test_hostile_request_is_refused_cleanly(served: Served, case: Hostile) -> None:
    _assert_error_answer(_exchange(served.base_url, case.request(served)), case.status, case.error_type)
    _healthy(served)


def test_a_head_too_large_is_431(served: Served) -> None:
    """A head that spans more than one read and exceeds 64 KiB (httptools would buffer any size)."""
    start = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: "
    answer = _exchange(served.base_url, start, b"a" * 200_000)
    _assert_error_answer(answer, 431, "headers_too_large")
    _healthy(served)


def test_refused_chats_are_neither_scored_nor_forwarded(served: Served) -> None:
    """The refusals above happen at the door: no scoring fallback counted, nothing sent on."""
    chats = [case for case in HOSTILE if case.path == CHAT]
    sent = len(served.backend.requests)
    for case in chats:
        assert _exchange(served.base_url, case.request(served)).status == case.status, case.id
    assert _metric(served, "routerl_fallbacks_total", reason="scoring") == 0
    assert len(served.backend.requests) == sent
    with served.client() as http_client:  # and a good chat still goes through
        answer = http_client.post(CHAT, json={"model": "router", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text


def test_messages_name_the_field(served: Served) -> None:
    cases = {case.id: case for case in HOSTILE}
    expectations = {
        "chat-part-surrogate": "messages[0].content[0].text",
        "chat-temperature-1e400": "temperature",
        "feedback-cost-1e308": "--max-feedback-cost",
        "reload-nul-byte": "NUL",
        "reload-fifo": "not a regular file",
        "reload-dev-zero": "not a regular file",
    }
    for name, needle in expectations.items():
        case = cases[name]
        message = _assert_error_answer(_exchange(served.base_url, case.request(served)), case.status, case.error_type)
        assert needle in message, (name, message)


def test_feedback_at_the_cost_limit_is_accepted(served: Served) -> None:
    with served.client() as http_client:
        query_id = http_client.post("/route", json={"query": "at the limit"}).json()["query_id"]
        answer = http_client.post("/feedback", json={"query_id": query_id, "quality": 0.5, "cost": COST_LIMIT})
    assert answer.status_code == 200, answer.text


def test_a_refused_reload_target_holds_up_no_later_reload(served: Served) -> None:
    """Before issue 15 a FIFO hung this reload and every later one, and /dev/zero filled memory."""
    with served.client(ADMIN) as admin:
        for target in (served.tmp / "policy.fifo", Path("/dev/zero")):
            start = time.monotonic()
            assert admin.post("/admin/reload", json={"policy": str(target)}).status_code == 422
            assert time.monotonic() - start < 10
        reloaded = admin.post("/admin/reload", json={"policy": str(served.policy)})
    assert reloaded.status_code == 200, reloaded.text


def test_a_reload_that_hangs_is_refused_in_time(demo_policy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that never ends (a hung network mount) is given up after the slot's timeout, and
    the next reload is not held up by it."""
    import serving.policy as serving_policy

    current = serving_policy.load_serving_policy(demo_policy)
    slot = serving_policy.PolicySlot(current, timeout_s=0.3)
    release = threading.Event()

    def hung(path: Path, required: tuple[str, ...], needs_costs: bool, engine: str) -> serving_policy.ServingPolicy:
        release.wait(30)
        raise serving_policy.PolicyError(f"{path}: released")

    async def reload_twice() -> None:
        with monkeypatch.context() as patch:
            patch.setattr(serving_policy, "load_serving_policy", hung)
            start = time.monotonic()
            with pytest.raises(serving_policy.PolicyError, match=r"not loaded within 0\.3 s"):
                await slot.reload("/hung/mount/policy.pt")
            assert time.monotonic() - start < 5
        assert (await slot.reload(demo_policy)).version == current.version
        assert slot.current.path == demo_policy

    try:
        asyncio.run(reload_twice())
    finally:
        release.set()


def test_a_torn_decision_log_loses_nothing_acknowledged(served: Served) -> None:
    """The service started on a log whose last line a crash tore: its first record starts a new
    line, so the torn line alone is rejected when the log is read back."""
    with served.client() as http_client:
        query_id = http_client.post("/route", json={"query": "after the crash"}).json()["query_id"]
        assert http_client.post("/feedback", json={"query_id": query_id, "quality": 0.75, "cost": 0.002}).json() == {
            "ok": True
        }
    loaded = load_log(served.decision_log)
    accepted = set(loaded.log.query_ids.tolist())
    assert {SEEDED_ID, query_id} <= accepted
    rejected = loaded.log.stats.rejected_by_reason
    assert rejected.get("malformed line") == 1, rejected  # the torn line, alone
    assert "truncated line" not in rejected, rejected
    lines = served.decision_log.read_text(encoding="utf-8").splitlines()
    assert lines[2] == TORN_LOG.splitlines()[2]  # kept as it was, terminated


@pytest.mark.parametrize(
    ("content", "after_open"),
    [
        (b"", b""),
        (b'{"a": 1}\n', b'{"a": 1}\n'),
        (b'{"a": 1}\n{"b', b'{"a": 1}\n{"b\n'),
        (b'{"q": "\xc3', b'{"q": "\xc3\n'),  # torn inside a UTF-8 character
    ],
    ids=["empty", "whole", "torn", "torn-in-a-character"],
)
def test_only_a_torn_log_gets_a_newline(tmp_path: Path, content: bytes, after_open: bytes) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_bytes(content)
    DecisionLog(path).close()
    assert path.read_bytes() == after_open


# ----------------------------------------------------------------------------- slow clients

SLOW_REQUESTS: dict[str, bytes] = {
    "silent": b"",
    "partial-head": b"POST /route HTTP/1.1\r\nhost: x\r\n",
    "chunked-without-end": (
        b"POST /route HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"authorization: Bearer {API}\r\n".encode()
        + b'transfer-encoding: chunked\r\n\r\n5\r\n{"que\r\n'
    ),
    "short-body": (
        b"POST /route HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"authorization: Bearer {API}\r\n".encode()
        + b'content-length: 100\r\n\r\n{"query":'
    ),
    "short-body-refused-unread": b'POST /route HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"query":',
}


def _open_slow(served: Served, count: int) -> list[tuple[str, socket.socket]]:
    """``count`` connections, each sending one kind of slow request (round robin) and then nothing."""
    host, port = served.base_url.removeprefix("http://").split(":")
    kinds = list(SLOW_REQUESTS)
    opened = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        sock = socket.create_connection((host, int(port)), timeout=30)
        if SLOW_REQUESTS[kind]:
            sock.sendall(SLOW_REQUESTS[kind])
        opened.append((kind, sock))
    return opened


def _until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection (fails at ``deadline``)."""
    received = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"still open at the deadline; received {received[:200]!r}") from None
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def test_slow_clients_are_cut_off_and_healthz_answers_meanwhile(served: Served) -> None:
    opened = _open_slow(served, 40)  # fewer than the connections the service holds
    start = time.monotonic()
    try:
        _healthy(served)  # while all of them are open
        answers = {kind: _until_closed(sock, start + 2 * TIMEOUT_S + SLACK_S) for kind, sock in opened}
    finally:
        for _, sock in opened:
            sock.close()
    assert answers["silent"] == b""
    assert answers["short-body-refused-unread"].startswith(b"HTTP/1.1 401")
    for kind in ("partial-head", "chunked-without-end", "short-body"):
        status_line, _, rest = answers[kind].partition(b"\r\n")
        assert status_line == b"HTTP/1.1 408 Request Timeout", (kind, answers[kind][:300])
        assert b'"type":"request_timeout"' in rest, (kind, rest)
    _healthy(served)


def test_more_slow_clients_than_open_files_cannot_take_the_service_down(served: Served) -> None:
    """Before issue 15, 1,100 slow connections under a 1,024 open-file limit made /healthz fail;
    here 300 under 256: those over the connection limit are answered 503 at once, the others cut
    off at their timeout, and /healthz answers again within the timeout."""
    refused_before = _metric(served, "routerl_connections_refused_total", reason="too_many_connections")
    opened = _open_slow(served, 300)
    start = time.monotonic()
    try:
        answers = [_until_closed(sock, start + 2 * TIMEOUT_S + SLACK_S) for _, sock in opened]
        _healthy(served)  # the client still holds its 300 sockets
    finally:
        for _, sock in opened:
            sock.close()
    busy = [answer for answer in answers if answer.startswith(b"HTTP/1.1 503")]
    assert len(busy) >= 300 - 2 * CONNECTIONS  # some held ones may time out before the last opens
    assert all(b'"type":"service_unavailable"' in answer for answer in busy)
    refused = _metric(served, "routerl_connections_refused_total", reason="too_many_connections") - refused_before
    assert refused >= len(busy)
    assert "holding at most 64 connections" in served.running.stderr_path.read_text()
