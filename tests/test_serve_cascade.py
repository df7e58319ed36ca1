"""``serve.py --cascade``: the proxy runs an exported cascade against fake backends (the official ``openai`` client).

The cascade is built by hand, so that what it must do is known exactly: call the cheap model first;
return its answer unless the answer hedges ("I don't know"), and then call the strong model and
return its answer. The backends are the OpenAI-compatible fakes of ``test_serve_proxy``, answering
per model: the cheap one hedges on questions that say "hard".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import torch
import yaml
from test_serve import RunningServer, _assert_one_line_error, _run_serve, _start_server, _stop
from test_serve_budget import _metric
from test_serve_proxy import API_TOKEN, BACKEND_KEY, FakeBackend, _write_backends

from data.featurizer import FeaturizerConfig, TextFeaturizer
from policies.cascade_artifact import load_cascade
from policies.cascade_policy import build_cascade_policy, cascade_metadata, save_cascade_policy
from policies.export import PolicyMetadata
from policies.heads import MlpLogitHead
from policies.policy_file import PolicyError
from policies.response_features import FEATURE_NAMES

#: The cascade's models, cheapest first (models of the demo policy, which the proxy also serves).
CHEAP, MID, STRONG = "tiny-1b", "medium-34b", "frontier-xl"
MODELS = [CHEAP, MID, STRONG]
HEDGE = "I don't know, maybe C."


def _hand_built_cascade(path: Path) -> Path:
    """A cascade whose actor is set by hand (module docstring); hidden units: 1, cheap called, cheap hedged,
    strong called. Logits of (call cheap, call mid, call strong, return cheap, return mid, return strong)."""
    featurizer = TextFeaturizer(FeaturizerConfig(components=2)).fit(["a question", "another question", "hard one"])
    k, f, d = len(MODELS), len(FEATURE_NAMES), featurizer.dimension
    linear_map = np.zeros((d + k + k * f + k, 4))
    linear_map[d + 0, 1] = 1.0  # called: cheap
    linear_map[d + k + FEATURE_NAMES.index("hedge"), 2] = 1.0  # cheap's slot: its hedge marker
    linear_map[d + 2, 3] = 1.0  # called: strong
    layer = torch.nn.Linear(4, 2 * k, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2, -10, 0, 0], [-10, 0, 0, 0], [0, 0, 3, -10],
                                         [0, 1, -5, -10], [-10, 0, 0, 0], [0, 0, 0, 10]], dtype=torch.float64))
        layer.bias.zero_()
    head = MlpLogitHead(torch.zeros(4), torch.tensor([1.0, 0.0, 0.0, 0.0]), [layer], "relu", 1.0, 1e4,
                        torch.zeros(2 * k))
    metadata = PolicyMetadata(models=MODELS, default_cost_weight=100.0, cost_weight_range=[0.0, 1e4],
                              score_kind="logit", agent="cascade-by-hand", featurizer={}, data_fingerprint="t" * 16)
    module = build_cascade_policy(featurizer, linear_map, head, metadata, max_calls=k)
    return save_cascade_policy(module, cascade_metadata(metadata, k), path)


def _answer(body: dict[str, Any]) -> str:
    """Each fake model's answer: the cheap one hedges on a question that says "hard"."""
    question = body["messages"][-1]["content"]
    if body["model"] == f"backend-{CHEAP}":
        return HEDGE if "hard" in question else "The answer is B."
    return f"(B) from {body['model']}"


@dataclass
class Cascade:
    """The running proxy with its cascade, its backend and its decision log."""

    running: RunningServer
    backend: FakeBackend
    decision_log: Path

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.running.base_url + "/v1", api_key=API_TOKEN, max_retries=0)

    def called(self) -> list[str]:
        """The backend models called so far, in order."""
        return [request["body"]["model"].removeprefix("backend-") for request in self.backend.requests]


@pytest.fixture(scope="module")
def cascade_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _hand_built_cascade(tmp_path_factory.mktemp("cascade") / "cascade.pt")


@pytest.fixture(scope="module")
def cascade(demo_policy: Path, cascade_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cascade]:
    tmp = tmp_path_factory.mktemp("cascade-proxy")
    backend = FakeBackend("ok", answer=_answer).start()
    backends = _write_backends(tmp / "backends.yaml", {model: (backend.base_url, 30.0) for model in MODELS})
    log = tmp / "decisions.jsonl"
    env = {"ROUTERL_API_TOKEN": API_TOKEN, "FAKE_BACKEND_KEY": BACKEND_KEY}
    running = _start_server(demo_policy, tmp, "--backends", str(backends), "--cascade", str(cascade_file),
                            "--decision-log", str(log), env=env)
    yield Cascade(running, backend, log)
    _stop(running.process)
    backend.stop()


def test_the_loaded_cascade_takes_the_steps_it_was_built_for(cascade_file: Path) -> None:
    loaded = load_cascade(cascade_file)
    assert loaded.models == tuple(MODELS) and loaded.max_calls == 3
    assert loaded.step("q", [], [], 100.0).model == CHEAP
    confident = loaded.step("q", [CHEAP], ["The answer is B."], 100.0)
    hedged = loaded.step("q", [CHEAP], [HEDGE], 100.0)
    assert (confident.action, confident.model) == ("return", CHEAP)
    assert (hedged.action, hedged.model) == ("call", STRONG)
    final = loaded.step("q", [CHEAP, STRONG], [HEDGE, "(B)"], 100.0)
    assert (final.action, final.model) == ("return", STRONG) and 0.99 < final.probability <= 1.0
    # softmax over the valid actions (call mid -10, call strong 0, return cheap 1): e / (e + 1 + e^-10)
    assert confident.probability == pytest.approx(np.e / (np.e + 1 + np.exp(-10)))
    with pytest.raises(ValueError, match=rf"^called names a model twice: {CHEAP}$"):
        loaded.step("q", [CHEAP, CHEAP], ["a", "b"], 100.0)
    with pytest.raises(ValueError, match=r"^called names a model the cascade does not know: gpt-9$"):
        loaded.step("q", ["gpt-9"], ["a"], 100.0)


def test_a_confident_cheap_answer_is_returned_after_one_call(cascade: Cascade) -> None:
    before = len(cascade.backend.requests)
    raw = cascade.client().chat.completions.with_raw_response.create(
        model="cascade", messages=[{"role": "user", "content": "What is 2 + 2?"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "The answer is B."
    assert raw.headers["x-routerl-model"] == CHEAP and raw.headers["x-routerl-cascade"] == CHEAP
    assert cascade.called()[before:] == [CHEAP]


def test_a_hedged_answer_escalates_to_the_strong_model_and_only_its_answer_reaches_the_client(
    cascade: Cascade,
) -> None:
    before = len(cascade.backend.requests)
    raw = cascade.client().chat.completions.with_raw_response.create(
        model="cascade:50", messages=[{"role": "user", "content": "A hard question: prove it."}]
    )
    assert raw.parse().choices[0].message.content == f"(B) from backend-{STRONG}"
    assert raw.headers["x-routerl-model"] == STRONG and raw.headers["x-routerl-cascade"] == f"{CHEAP},{STRONG}"
    assert cascade.called()[before:] == [CHEAP, STRONG]
    assert all(request["body"]["stream"] is False for request in cascade.backend.requests[before:])
    record = [json.loads(line) for line in cascade.decision_log.read_text().splitlines()][-1]
    assert record["query_id"] == raw.headers["x-routerl-query-id"] and record["model"] == STRONG
    assert record["cost_weight"] == 50.0 and record["policy_version"] == load_cascade_version(cascade)
    assert [(step["action"], step["model"]) for step in record["cascade"]] == [
        ("call", CHEAP), ("call", STRONG), ("return", STRONG)
    ]
    assert record["propensity"] == pytest.approx(np.prod([step["probability"] for step in record["cascade"]]))
    assert record["cascade"][0]["prompt_tokens"] == 11 and record["cascade"][0]["completion_tokens"] == 7
    base = cascade.running.base_url
    calls = _metric(base, "routerl_cascade_calls_total", {"authorization": f"Bearer {API_TOKEN}"}, model=STRONG)
    assert calls is not None and calls >= 1


def load_cascade_version(cascade: Cascade) -> str:
    """The version the service reports for its cascade file (the hash of its bytes)."""
    command = cascade.running.process.args
    return load_cascade(Path(command[command.index("--cascade") + 1])).version


def test_a_streamed_request_gets_the_final_answer_only(cascade: Cascade) -> None:
    stream = cascade.client().chat.completions.create(
        model="cascade", messages=[{"role": "user", "content": "Another hard one."}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == f"(B) from backend-{STRONG}"


def test_router_requests_still_route_before_generation_and_a_bad_cascade_weight_is_422(cascade: Cascade) -> None:
    routed = cascade.client().chat.completions.with_raw_response.create(
        model="router", messages=[{"role": "user", "content": "What is 2 + 2?"}]
    )
    # the proxy routes among the models that have a backend: the cascade's three here
    assert "x-routerl-cascade" not in routed.headers and routed.headers["x-routerl-model"] in MODELS
    answer = httpx.post(cascade.running.base_url + "/v1/chat/completions",
                        headers={"authorization": f"Bearer {API_TOKEN}"},
                        json={"model": "cascade:-1", "messages": [{"role": "user", "content": "x"}]})
    assert answer.status_code == 422 and "finite cost weight" in answer.json()["error"]["message"]


def test_serve_refuses_a_cascade_without_backends_or_a_routing_policy_as_a_cascade(
    demo_policy: Path, cascade_file: Path
) -> None:
    _assert_one_line_error(_run_serve("--policy", str(demo_policy), "--cascade", str(cascade_file)),
                           "needs --backends")
    with pytest.raises(PolicyError, match="not a cascade"):
        load_cascade(demo_policy)


def test_a_failing_escalation_returns_the_answer_in_hand_and_a_tenant_needs_every_model(
    demo_policy: Path, cascade_file: Path, tmp_path: Path
) -> None:
    """The strong model's backend answers 500: the cheap answer is returned, counted as a ``cascade``
    fallback and logged with the failure; a tenant limited to the cheap model is refused the cascade."""
    good, failing = FakeBackend("ok", answer=_answer).start(), FakeBackend("fail").start()
    urls = {CHEAP: (good.base_url, 30.0), MID: (good.base_url, 30.0), STRONG: (failing.base_url, 30.0)}
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({"tenants": {"all": {"token": "t-all"}, "cheap": {"token": "t-cheap",
                                                                                          "models": [CHEAP]}}}))
    log = tmp_path / "decisions.jsonl"
    running = _start_server(demo_policy, tmp_path, "--backends", str(_write_backends(tmp_path / "b.yaml", urls)),
                            "--cascade", str(cascade_file), "--tenants", str(tenants), "--decision-log", str(log),
                            env={"FAKE_BACKEND_KEY": BACKEND_KEY})
    try:
        client = openai.OpenAI(base_url=running.base_url + "/v1", api_key="t-all", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="cascade", messages=[{"role": "user", "content": "A hard question."}]
        )
        assert raw.parse().choices[0].message.content == HEDGE
        assert raw.headers["x-routerl-model"] == CHEAP and raw.headers["x-routerl-cascade"] == CHEAP
        record = json.loads(log.read_text().splitlines()[-1])
        assert record["model"] == CHEAP and record["tenant"] == "all" and "500" in record["cascade_failed"]
        assert [(step["action"], step["model"]) for step in record["cascade"]] == [("call", CHEAP)]
        assert _metric(running.base_url, "routerl_fallbacks_total", {"authorization": "Bearer t-all"},
                       reason="cascade") == 1
        refused = httpx.post(running.base_url + "/v1/chat/completions", headers={"authorization": "Bearer t-cheap"},
                             json={"model": "cascade", "messages": [{"role": "user", "content": "x"}]})
        assert refused.status_code == 422
        assert f"the cascade calls ['{MID}', '{STRONG}'], which tenant 'cheap' may not use" in refused.text
    finally:
        _stop(running.process)
        good.stop()
        failing.stop()
