"""Rule overrides compiled into the policy (docs/contracts.md §2.9) applied by the real service.

The ``rules_policy`` fixture (tests/conftest.py) is the demo policy with :data:`conftest.DEMO_RULES`.
Precedence in the service: the request's ``allowed_models`` first, then the matching rule's set,
then the learned scores; a rule that would leave no model is set aside and counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_serve import _load_local, _start_server, _stop
from test_serve_budget import _metric

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
