"""Rule overrides compiled into the policy (docs/contracts.md §2.9) applied by the real service.

The ``rules_policy`` fixture (tests/conftest.py) is the demo policy with :data:`conftest.DEMO_RULES`.
Precedence in the service: the request's ``allowed_models`` first, then the matching rule's set,
then the learned scores; a rule that would leave no model is set aside and counted. The chat
proxy's fallback after a failing backend stays within the rule's set too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from test_serve import _load_local, _start_server, _stop
from test_serve_budget import _metric
from test_serve_proxy import BACKEND_KEY, FakeBackend, _ranked, _write_backends

CODE = "Fix this:\n```\nprint(1)\n```"
FRENCH = "Please translate this sentence to French: the cat sleeps."


@pytest.fixture(scope="module")
def service(rules_policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    running = _start_server(rules_policy, tmp_path_factory.mktemp("rules-service"))
    yield running.base_url
    _stop(running.process)


def test_the_service_decides_as_the_policys_route(service: str, rules_policy: Path) -> None:
    """Without exploration, the service's choice is the artifact's own ``route`` (rules applied)."""
    module, _ = _load_local(rules_policy)
    queries = [CODE, FRENCH, "Prove that there are infinitely many primes.", "abcd", "What is the capital of Peru?"]
    expected = module.route(queries, float(module.default_cost_weight()))
    with httpx.Client(base_url=service) as http:
        single = [http.post("/route", json={"query": query}).json()["model"] for query in queries]
        batch = http.post("/route/batch", json={"queries": queries}).json()["models"]
    assert single == expected == batch
    assert single[1] == "tiny-1b" and single[0] in ("frontier-xl", "large-70b")


def test_a_rule_that_leaves_no_allowed_model_is_set_aside_and_counted(service: str) -> None:
    before = _metric(service, "routerl_rule_conflicts_total") or 0.0
    with httpx.Client(base_url=service) as http:
        answer = http.post("/route", json={"query": FRENCH, "allowed_models": ["small-7b", "medium-34b"]}).json()
        narrowed = http.post("/route", json={"query": CODE, "allowed_models": ["large-70b", "tiny-1b"]}).json()
    assert answer["model"] in ("small-7b", "medium-34b")
    assert narrowed["model"] == "large-70b"  # the rule's set met the caller's: only their common model
    assert _metric(service, "routerl_rule_conflicts_total") == before + 1


def test_a_proxy_fallback_stays_within_the_rules_set(rules_policy: Path, tmp_path: Path) -> None:
    """Through the chat proxy: the code rule allows frontier-xl and large-70b. The one of them the
    policy ranks first has a failing backend, so the proxy falls back, to the other (never to a model
    outside the rule's set, though every other backend answers); the French rule allows tiny-1b only,
    whose backend fails, so that request is 502 rather than answered by a model the rule forbids."""
    allowed = ("frontier-xl", "large-70b")
    first, second = (model for model in _ranked(rules_policy, CODE) if model in allowed)
    failing, good = FakeBackend("fail").start(), FakeBackend("ok").start()
    models = _load_local(rules_policy)[1]["models"]
    urls = {model: (good.base_url, 30.0) for model in models}
    urls[first] = urls["tiny-1b"] = (failing.base_url, 30.0)
    backends = _write_backends(tmp_path / "backends.yaml", urls)
    running = _start_server(rules_policy, tmp_path, "--backends", str(backends), env={"FAKE_BACKEND_KEY": BACKEND_KEY})
    try:
        client = openai.OpenAI(base_url=running.base_url + "/v1", api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="router", messages=[{"role": "user", "content": CODE}]
        )
        assert raw.headers["x-routerl-model"] == second
        assert [r["body"]["model"] for r in failing.requests] == [f"backend-{first}"]
        assert [r["body"]["model"] for r in good.requests] == [f"backend-{second}"]
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="router", messages=[{"role": "user", "content": FRENCH}])
        assert caught.value.status_code == 502
        assert [r["body"]["model"] for r in failing.requests][-1] == "backend-tiny-1b"
        assert len(good.requests) == 1  # no model outside the French rule's set was asked
        # one fallback: the code query's; the French one had no other model to fall back to
        assert _metric(running.base_url, "routerl_fallbacks_total", reason="backend") == 1
    finally:
        _stop(running.process)
        failing.stop()
        good.stop()
