"""Sessions (``serve.py --session-switch-cost S``, serving/sessions.py) through the proxy, with the
official ``openai`` client, on two workers that share the sessions.

A conversation opens on Q1 (the policy's best there is ``first``). Its next turn asks Q_near, where
another model beats ``first`` by less than S (the conversation stays), or Q_far, where one beats it
by more than S (it switches). S lies half-way between the two advantages, read from the policy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from test_serve import REPO_ROOT, RunningServer, _load_local, _start_server, _stop
from test_serve_proxy import FakeBackend, _write_backends

API_TOKEN = "session-api-token"


@dataclass(frozen=True)
class Conversation:
    """Q1 and its best model, and two follow-up questions with their advantage over that model."""

    opening: str
    first: str
    near: str
    far: str
    far_best: str
    switch_cost: float


def _conversation(policy: Path) -> Conversation:
    """Pick the demo queries that make the two cases, from the policy's own scores."""
    module, _ = _load_local(policy)
    models: list[str] = module.models()
    texts = sorted({json.loads(line)["query"] for line in (REPO_ROOT / "data/demo/demo.jsonl").open()})[:300]
    rows = module.scores(texts, float(module.default_cost_weight())).tolist()
    best = [max(range(len(models)), key=lambda k, row=row: (row[k], -k)) for row in rows]
    opening = max(range(len(texts)), key=lambda i: sum(b == best[i] for b in best))  # a common best model
    first = best[opening]
    gaps = sorted((max(row) - row[first], i) for i, row in enumerate(rows) if best[i] != first)
    (near_gap, near), (far_gap, far) = gaps[0], gaps[-1]
    assert far_gap > 2 * near_gap > 0
    return Conversation(
        texts[opening], models[first], texts[near], texts[far], models[best[far]], (near_gap + far_gap) / 2
    )


@pytest.fixture(scope="module")
def sessions(
    demo_policy: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, Conversation, Path]]:
    tmp = tmp_path_factory.mktemp("sessions")
    conversation = _conversation(demo_policy)
    backend = FakeBackend("ok").start()
    module, _ = _load_local(demo_policy)
    backends = _write_backends(tmp / "backends.yaml", {model: (backend.base_url, 30.0) for model in module.models()})
    log = tmp / "decisions.jsonl"
    running = _start_server(
        demo_policy,
        tmp,
        "--backends",
        str(backends),
        "--decision-log",
        str(log),
        "--workers",
        "2",
        "--session-switch-cost",
        str(conversation.switch_cost),
        env={"ROUTERL_API_TOKEN": API_TOKEN, "FAKE_BACKEND_KEY": "sk-fake"},
    )
    yield running, conversation, tmp
    _stop(running.process)
    backend.stop()


def _turns(running: RunningServer, questions: list[str], **session: str) -> list[str]:
    """Ask ``questions`` as one conversation; the model that answered each turn."""
    client = openai.OpenAI(base_url=running.base_url + "/v1", api_key=API_TOKEN, max_retries=0)
    messages: list[dict[str, str]] = []
    served = []
    for question in questions:
        messages.append({"role": "user", "content": question})
        extra = {"extra_headers": {"x-routerl-session": session["header"]}} if "header" in session else {}
        user = {"user": session["user"]} if "user" in session else {}
        raw = client.chat.completions.with_raw_response.create(model="router", messages=messages, **user, **extra)  # type: ignore[arg-type]
        answer = raw.parse()
        served.append(raw.headers["x-routerl-model"])
        messages.append({"role": "assistant", "content": answer.choices[0].message.content or ""})
    return served


def test_a_conversation_stays_unless_switching_gains_more_than_the_cost(sessions) -> None:  # type: ignore[no-untyped-def]
    running, talk, _ = sessions
    assert _turns(running, [talk.opening, talk.near], user="alice") == [talk.first, talk.first]
    assert _turns(running, [talk.opening, talk.far], user="bob") == [talk.first, talk.far_best]
    assert _turns(running, [talk.opening, talk.near, talk.near, talk.near], header="carol-1") == [talk.first] * 4
    # without a session each question is routed on its own
    assert _turns(running, [talk.near])[0] != talk.first


def test_later_turns_are_logged_as_session_turns_with_propensity_one(sessions) -> None:  # type: ignore[no-untyped-def]
    running, talk, tmp = sessions
    _turns(running, [talk.opening, talk.near, talk.near], user="dave")
    records = [json.loads(line) for path in tmp.glob("decisions-*.jsonl") for line in path.read_text().splitlines()]
    turns = [r for r in records if "policy_version" in r and r["query"] in (talk.opening, talk.near)]
    assert any(r.get("session_turn") is True and r["propensity"] == 1.0 for r in turns)
    assert all(r.get("session_turn") is not True or r["model"] == talk.first for r in turns)


def test_route_keeps_a_session_by_its_header(sessions) -> None:  # type: ignore[no-untyped-def]
    running, talk, _ = sessions
    headers = {"authorization": f"Bearer {API_TOKEN}", "x-routerl-session": "erin"}
    with httpx.Client(base_url=running.base_url, headers=headers) as http:
        chosen = [http.post("/route", json={"query": q}).json()["model"] for q in (talk.opening, talk.near, talk.far)]
    assert chosen == [talk.first, talk.first, talk.far_best]
