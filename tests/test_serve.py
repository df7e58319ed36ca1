"""End-to-end tests of the HTTP router service (serve.py, docs/contracts.md §4).

They start the real ``serve.py`` process on a free port, read its announced address from
stdout and talk HTTP to it. The policy comes from the ``demo_policy`` fixture of
``tests/conftest.py`` (a real exported ``policy.pt``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn
from unittest import mock

import httpx
import pytest
import torch

import serve

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 90.0
ANNOUNCE = re.compile(r"^routerl serving on (http://127\.0\.0\.1:(\d+))$")
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_QUERY_CHARS = 100_000

QUERIES = [
    "What is the capital of France?",
    "Write a Python function that merges two sorted lists in O(n) time.",
    "Prove that there are infinitely many primes.",
    "Ünïcödé, 日本語のテキスト, emoji 🚀 and CAPITALS!",
    "x",
    "  leading and trailing whitespace\t\n",
    "word " * 2000,
]


# ----------------------------------------------------------------------------- helpers


@dataclass
class RunningServer:
    """A started ``serve.py`` process and its base URL."""

    process: subprocess.Popen[str]
    base_url: str
    stderr_path: Path


def _start_server(
    policy: Path,
    log_dir: Path,
    *extra_args: str,
    env: dict[str, str] | None = None,
    open_files: int | None = None,
) -> RunningServer:
    """Start ``serve.py --port 0`` and wait for its ``routerl serving on ...`` line.

    ``env`` is added to this process's environment (tokens, backend keys); ``open_files`` sets
    the server's soft and hard limit on open files (``ulimit -n``).
    """
    stderr_path = log_dir / "serve.stderr.log"
    stderr_file = stderr_path.open("w")  # a file, not a pipe: access logs must never block it

    def limit_open_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    process = subprocess.Popen(
        [sys.executable, "serve.py", "--policy", str(policy), "--port", "0", *extra_args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        text=True,
        env={**os.environ, **(env or {})},
        preexec_fn=limit_open_files if open_files is not None else None,
    )
    stderr_file.close()
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=STARTUP_TIMEOUT_S)
            if line is None:
                raise AssertionError(
                    f"serve.py exited with {process.wait()} before announcing its address:\n" + stderr_path.read_text()
                )
            match = ANNOUNCE.match(line)
            if match:
                return RunningServer(process, match.group(1), stderr_path)
    except BaseException:
        _stop(process)
        raise


def _stop(process: subprocess.Popen[str]) -> None:
    """Terminate the server, killing it if it does not stop in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _load_local(path: Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """``torch.jit.load`` the policy in this process, with its metadata."""
    extra = {"metadata.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated")
        module = torch.jit.load(str(path), _extra_files=extra)
    return module, json.loads(extra["metadata.json"])


def _first_argmax(values: list[float], allowed: list[int] | None = None) -> int:
    """Index of the maximum among ``allowed`` (all by default); ties go to the lower index."""
    candidates = sorted(set(allowed)) if allowed is not None else list(range(len(values)))
    best = candidates[0]
    for index in candidates[1:]:
        if values[index] > values[best]:
            best = index
    return best


def _assert_error(response: httpx.Response, status: int, error_type: str | None = None) -> str:
    """The response has ``status`` and exactly the body ``{"error": {"type", "message"}}``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"type", "message"}, body
    assert isinstance(body["error"]["type"], str) and body["error"]["type"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if error_type is not None:
        assert body["error"]["type"] == error_type, body
    return str(body["error"]["message"])


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def local_policy(demo_policy: Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """The same policy file loaded in the test process, with its metadata."""
    return _load_local(demo_policy)


@pytest.fixture(scope="module", params=["native", "torchscript"])
def engine(request: pytest.FixtureRequest) -> str:
    """``serve.py --engine``: every test of this module runs against both engines (docs/contracts.md §2.11)."""
    return str(request.param)


@pytest.fixture(scope="module")
def server(demo_policy: Path, engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running ``serve.py --engine ENGINE`` on the demo policy (default limits); yields its base URL."""
    running = _start_server(demo_policy, tmp_path_factory.mktemp("serve"), "--engine", engine)
    yield running.base_url
    _stop(running.process)


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    """An HTTP client bound to the running server."""
    with httpx.Client(base_url=server, timeout=60.0) as http:
        yield http


# ----------------------------------------------------------------------------- happy paths


def test_healthz_reports_the_policy_and_the_engine(
    client: httpx.Client, demo_policy: Path, local_policy, engine: str
) -> None:
    _, meta = local_policy
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "policy": {
            "version": hashlib.sha256(demo_policy.read_bytes()).hexdigest()[:12],
            "fingerprint": meta["data_fingerprint"],
        },
        "engine": engine,
    }


@pytest.mark.parametrize("weight_kind", ["zero", "default", "large"])
def test_route_is_the_argmax_of_the_policy_scores(client: httpx.Client, local_policy, weight_kind: str) -> None:
    module, meta = local_policy
    models: list[str] = module.models()
    default = float(module.default_cost_weight())
    cost_weight = {"zero": 0.0, "default": default, "large": 1e6}[weight_kind]
    health = client.get("/healthz").json()
    query_ids = set()
    for query in QUERIES:
        payload: dict[str, Any] = {"query": query}
        if weight_kind != "default":
            payload["cost_weight"] = cost_weight
        response = client.post("/route", json=payload)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"query_id", "model", "scores", "score_kind", "policy"}
        assert re.fullmatch(r"[0-9a-f]{32}", body["query_id"])
        query_ids.add(body["query_id"])
        assert body["score_kind"] == meta["score_kind"]
        assert body["policy"] == health["policy"]
        assert list(body["scores"]) == models
        expected = module.scores([query], cost_weight)[0].tolist()
        served = [body["scores"][m] for m in models]
        assert served == pytest.approx(expected, rel=1e-6, abs=1e-6)
        assert body["model"] in models
        assert body["model"] == models[_first_argmax(expected)]
        assert body["model"] == models[_first_argmax(served)]
        if weight_kind == "default":
            assert body["model"] == module.route([query], default)[0]
    assert len(query_ids) == len(QUERIES)


def test_healthz_answers_head(client: httpx.Client) -> None:
    assert client.head("/healthz").status_code == 200


def test_default_cost_weight_is_the_policys(client: httpx.Client, local_policy) -> None:
    module, _ = local_policy
    default = float(module.default_cost_weight())
    for query in QUERIES[:3]:
        implicit = client.post("/route", json={"query": query}).json()
        explicit = client.post("/route", json={"query": query, "cost_weight": default}).json()
        nulled = client.post("/route", json={"query": query, "cost_weight": None}).json()
        assert implicit["scores"] == explicit["scores"] == nulled["scores"]
        assert implicit["model"] == explicit["model"] == nulled["model"]


def test_integer_cost_weight_is_a_number(client: httpx.Client) -> None:
    response = client.post("/route", json={"query": "hello", "cost_weight": 0})
    assert response.status_code == 200, response.text


def test_allowed_models_restrict_the_choice(client: httpx.Client, local_policy) -> None:
    module, _ = local_policy
    models: list[str] = module.models()
    default = float(module.default_cost_weight())
    subsets: list[list[str]] = [[m] for m in models]
    subsets.append(list(reversed(models)))
    if len(models) >= 2:
        subsets.append([models[-1], models[0]])
        subsets.append([models[1], models[1]])  # duplicates are harmless
    for cost_weight in (0.0, default, 1e6):
        for query in QUERIES[:4]:
            expected = module.scores([query], cost_weight)[0].tolist()
            for subset in subsets:
                response = client.post(
                    "/route",
                    json={"query": query, "cost_weight": cost_weight, "allowed_models": subset},
                )
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["model"] in subset
                allowed = [models.index(m) for m in subset]
                assert body["model"] == models[_first_argmax(expected, allowed)]
                assert list(body["scores"]) == models  # every model's score is still reported


def test_ties_go_to_the_lower_index() -> None:
    from serving.decisions import best, ranking

    assert best([1.0, 2.0, 2.0, 0.5], [0, 1, 2, 3]) == 1
    assert best([1.0, 2.0, 2.0, 0.5], [2, 3]) == 2
    assert best([3.0, 3.0], [0, 1]) == 0
    assert ranking([1.0, 2.0, 2.0, 0.5], [0, 1, 2, 3]) == [1, 2, 0, 3]


def test_concurrent_requests_agree(client: httpx.Client, server: str, local_policy) -> None:
    module, _ = local_policy
    models: list[str] = module.models()
    default = float(module.default_cost_weight())
    jobs = [QUERIES[i % len(QUERIES)] for i in range(48)]

    def ask(query: str) -> tuple[str, str]:
        with httpx.Client(base_url=server, timeout=60.0) as http:
            response = http.post("/route", json={"query": query})
        assert response.status_code == 200, response.text
        return query, response.json()["model"]

    with ThreadPoolExecutor(max_workers=12) as pool:
        for query, model in pool.map(ask, jobs):
            assert model == models[_first_argmax(module.scores([query], default)[0].tolist())]


# ----------------------------------------------------------------------------- client errors

JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Bad:
    """One client mistake: the request to send and the error it must get."""

    id: str
    status: int
    error_type: str
    kwargs: dict[str, Any]
    method: str = "POST"
    path: str = "/route"

    def send(self, http: httpx.Client) -> httpx.Response:
        """Send the request with ``http``."""
        return http.request(self.method, self.path, **self.kwargs)


def _raw(body: bytes) -> dict[str, Any]:
    """Request kwargs for a raw body declared as JSON."""
    return {"content": body, "headers": JSON}


BAD_REQUESTS: list[Bad] = [
    Bad("malformed-json", 400, "invalid_json", _raw(b'{"query": "hi"')),
    Bad("not-json-at-all", 400, "invalid_json", _raw(b"query=hi")),
    Bad("empty-body", 400, "invalid_json", _raw(b"")),
    Bad("nesting-too-deep", 400, "invalid_json", _raw(b"[" * 100_000 + b"]" * 100_000)),
    Bad("invalid-utf8", 400, "invalid_json", _raw(b'{"query": "\xff\xfe"}')),
    Bad("missing-query", 422, "invalid_request", {"json": {"cost_weight": 1.0}}),
    Bad("empty-query", 422, "invalid_request", {"json": {"query": ""}}),
    Bad("query-is-a-number", 422, "invalid_request", {"json": {"query": 5}}),
    Bad("query-is-null", 422, "invalid_request", {"json": {"query": None}}),
    Bad("query-is-a-list", 422, "invalid_request", {"json": {"query": ["a"]}}),
    Bad("lone-surrogate", 422, "invalid_request", _raw(b'{"query": "\\ud800"}')),
    Bad("cost-weight-string", 422, "invalid_request", {"json": {"query": "q", "cost_weight": "x"}}),
    Bad(
        "cost-weight-numeric-str",
        422,
        "invalid_request",
        {"json": {"query": "q", "cost_weight": "1"}},
    ),
    Bad("cost-weight-bool", 422, "invalid_request", {"json": {"query": "q", "cost_weight": True}}),
    Bad("cost-weight-negative", 422, "invalid_request", {"json": {"query": "q", "cost_weight": -1}}),
    Bad("cost-weight-nan", 422, "invalid_request", _raw(b'{"query": "q", "cost_weight": NaN}')),
    Bad("cost-weight-inf", 422, "invalid_request", _raw(b'{"query": "q", "cost_weight": Infinity}')),
    Bad(
        "cost-weight-overflow",
        422,
        "invalid_request",
        _raw(b'{"query": "q", "cost_weight": 1e999}'),
    ),
    Bad(
        "unknown-model",
        422,
        "invalid_request",
        {"json": {"query": "q", "allowed_models": ["zz-no"]}},
    ),
    Bad("no-allowed-models", 422, "invalid_request", {"json": {"query": "q", "allowed_models": []}}),
    Bad(
        "allowed-not-a-list",
        422,
        "invalid_request",
        {"json": {"query": "q", "allowed_models": "x"}},
    ),
    Bad("allowed-numbers", 422, "invalid_request", {"json": {"query": "q", "allowed_models": [1]}}),
    Bad("extra-field", 422, "invalid_request", {"json": {"query": "q", "temperature": 1}}),
    Bad("body-is-a-list", 422, "invalid_request", {"json": ["q"]}),
    Bad("body-is-a-string", 422, "invalid_request", {"json": "q"}),
    Bad("unknown-route", 404, "not_found", {}, method="GET", path="/nope"),
    Bad("unknown-route-post", 404, "not_found", {"json": {"query": "q"}}, path="/route/nope"),
    Bad("get-route", 405, "method_not_allowed", {}, method="GET"),
    Bad("post-healthz", 405, "method_not_allowed", {"json": {}}, path="/healthz"),
    Bad(
        "text-plain",
        415,
        "unsupported_media_type",
        {"content": b'{"query": "q"}', "headers": {"content-type": "text/plain"}},
    ),
    Bad("form-encoded", 415, "unsupported_media_type", {"data": {"query": "q"}}),
    Bad("no-content-type", 415, "unsupported_media_type", {"content": b'{"query": "q"}'}),
    Bad(
        "body-over-limit",
        413,
        "payload_too_large",
        {"json": {"query": "a" * (DEFAULT_MAX_BODY_BYTES + 10)}},
    ),
    Bad(
        "query-over-limit",
        413,
        "query_too_long",
        {"json": {"query": "a" * (DEFAULT_MAX_QUERY_CHARS + 1)}},
    ),
]


@pytest.mark.parametrize("bad", [pytest.param(bad, id=bad.id) for bad in BAD_REQUESTS])
def test_client_errors_have_the_error_format(client: httpx.Client, bad: Bad) -> None:
    _assert_error(bad.send(client), bad.status, bad.error_type)


def test_error_messages_say_what_is_wrong(client: httpx.Client) -> None:
    assert "empty" in _assert_error(client.post("/route", json={"query": ""}), 422)
    assert "query" in _assert_error(client.post("/route", json={"cost_weight": 1.0}), 422)
    assert "cost_weight" in _assert_error(client.post("/route", json={"query": "hi", "cost_weight": -1}), 422)
    assert "zz-no" in _assert_error(client.post("/route", json={"query": "hi", "allowed_models": ["zz-no"]}), 422)
    assert "Allow" in client.get("/route").headers or "allow" in client.get("/route").headers


def test_chunked_body_over_limit_is_413(client: httpx.Client) -> None:
    chunk = b" " * 65536

    def body() -> Iterator[bytes]:
        yield b'{"query": "'
        for _ in range(DEFAULT_MAX_BODY_BYTES // len(chunk) + 2):
            yield chunk
        yield b'"}'

    _assert_error(client.post("/route", content=body(), headers=JSON), 413, "payload_too_large")


def test_huge_cost_weight_is_never_a_server_error(client: httpx.Client) -> None:
    response = client.post("/route", json={"query": "hi", "cost_weight": 1e300})
    if response.status_code != 200:
        _assert_error(response, 422)


def test_server_survives_every_bad_request(client: httpx.Client) -> None:
    for bad in BAD_REQUESTS:
        assert bad.send(client).status_code == bad.status, bad.id
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.post("/route", json={"query": "still there?"}).status_code == 200


# ----------------------------------------------------------------------------- command line


def test_every_setting_but_the_tokens_comes_from_its_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve.py sets each Settings field from the flag of its name (a field without one would stay default)."""
    import serve
    from serving.settings import API_TOKEN_ENV, Settings

    args = serve.parse_args(
        ["--policy", "p.pt", "--port", "0", "--max-batch", "3", "--route-on", "conversation", "--explore-seed", "7"]
    )
    assert {field.name for field in fields(Settings)} - {"api_token", "admin_token"} <= set(vars(args))
    monkeypatch.setenv(API_TOKEN_ENV, "secret")
    settings = serve._settings(args)
    assert (settings.port, settings.max_batch, settings.route_on, settings.explore_seed) == (0, 3, "conversation", 7)
    assert settings.api_token == "secret" and settings.log_queries == "full" and settings.backends is None


def test_flags_change_the_limits(demo_policy: Path, tmp_path: Path) -> None:
    running = _start_server(demo_policy, tmp_path, "--max-body-bytes", "200", "--max-query-chars", "10")
    try:
        with httpx.Client(base_url=running.base_url, timeout=60.0) as http:
            assert http.post("/route", json={"query": "0123456789"}).status_code == 200
            _assert_error(http.post("/route", json={"query": "0123456789a"}), 413, "query_too_long")
            _assert_error(
                http.post("/route", json={"query": "q", "allowed_models": ["m" * 300]}),
                413,
                "payload_too_large",
            )
            assert http.get("/healthz").status_code == 200
    finally:
        _stop(running.process)


def _run_serve_process(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``serve.py`` in a process of its own to completion (it must exit by itself)."""
    return subprocess.run(
        [sys.executable, "serve.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _never_serve(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError("serve.py would have started serving: this call expected a refusal")


def _run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``serve.py``'s entry point (``serve.main``) in this process, for the calls that must be refused
    at start: its exit status and what it printed, as ``_run_serve_process`` gives them, a second faster.

    Serving instead of refusing fails the test (it would block): ``serving.server.serve`` and the
    supervisor of ``--workers`` raise here. The refusals of a real process are checked by the tests of
    the missing and invalid policy, which use :func:`_run_serve_process`.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        mock.patch("serving.server.serve", _never_serve),
        mock.patch("serving.server._supervise", _never_serve),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        try:
            status = serve.main(list(args))
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess(["serve.py", *args], status, stdout.getvalue(), stderr.getvalue())


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "routerl serving on" not in result.stdout


def test_missing_policy_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "runs" / "nothing" / "policy.pt"
    _assert_one_line_error(_run_serve_process("--policy", str(missing), "--port", "0"), str(missing))


def test_invalid_policy_exits_2_with_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "policy.pt"
    garbage.write_bytes(b"this is not a TorchScript archive\n" * 10)
    _assert_one_line_error(_run_serve_process("--policy", str(garbage), "--port", "0"), str(garbage))
    _assert_one_line_error(_run_serve("--policy", str(tmp_path), "--port", "0"), str(tmp_path))


def test_bad_limit_flag_exits_2(demo_policy: Path) -> None:
    result = _run_serve("--policy", str(demo_policy), "--port", "0", "--max-body-bytes", "0")
    _assert_one_line_error(result, "--max-body-bytes")


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-feedback-cost", "0"),
        ("--max-feedback-cost", "nan"),
        ("--header-timeout", "-1"),
        ("--body-timeout", "inf"),
        ("--max-connections", "0"),
    ],
)
def test_bad_limit_values_exit_2_naming_the_flag(flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    import serve

    with pytest.raises(SystemExit) as exited:
        serve._settings(serve.parse_args(["--policy", "p.pt", flag, value]))
    assert exited.value.code == 2
    assert flag in capsys.readouterr().err


def test_announced_address_is_loopback_by_default(demo_policy: Path, tmp_path: Path) -> None:
    running = _start_server(demo_policy, tmp_path)  # ANNOUNCE only matches 127.0.0.1
    try:
        assert httpx.get(running.base_url + "/healthz", timeout=60.0).status_code == 200
    finally:
        _stop(running.process)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal
    assert running.process.returncode in (0, -signal.SIGTERM)
    assert "Shutting down" in running.stderr_path.read_text()
