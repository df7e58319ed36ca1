"""Tenants (``serve.py --tenants FILE``, serving/tenants.py): the file's checks, and each tenant's
models, weight, budget, metrics and log records through the real service."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from test_serve import _assert_one_line_error, _run_serve, _start_server, _stop
from test_serve_budget import _metric

from data.loading import load_log
from serving.tenants import TenantsError, load_tenants

MODELS = ("frontier-xl", "large-70b", "medium-34b", "small-7b", "tiny-1b")
QUERY = "Write a Python function that merges two sorted lists in O(n) time."


def _write(path: Path, tenants: dict) -> Path:
    path.write_text(yaml.safe_dump({"tenants": tenants}), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("tenants", "problem"),
    [
        ({"a": {"token": "t", "models": ["gpt-9"]}}, "tenant 'a': unknown model(s) ['gpt-9']; the policy's models are"),
        ({"a": {"token": "t"}, "b": {"token": "t"}}, "tenant 'b': its token is also tenant 'a''s"),
        ({"a": {"token": "t", "colour": "red"}}, "tenant 'a': colour: Extra inputs are not permitted"),
        ({"a": {"models": ["tiny-1b"]}}, "tenant 'a': Value error, give exactly one of token and token_env"),
        ({"a": {"token": "t", "budget": 0}}, "tenant 'a': budget: Input should be greater than 0"),
        (
            {"a": {"token": "t", "cost_weight": -1}},
            "tenant 'a': cost_weight: Input should be greater than or equal to 0",
        ),
        ({"a": {"token": "t", "models": []}}, "tenant 'a': models: List should have at least 1 item"),
        ({"a": {"token": "  "}}, "tenant 'a': token is empty or unset"),
        ({"a": {"token_env": "ROUTERL_TEST_UNSET_TOKEN"}}, "tenant 'a': the variable ROUTERL_TEST_UNSET_TOKEN"),
        ({}, "tenants: Dictionary should have at least 1 item"),
    ],
)
def test_a_bad_tenants_file_is_one_line_naming_the_tenant(tmp_path: Path, tenants: dict, problem: str) -> None:
    path = _write(tmp_path / "tenants.yaml", tenants)
    with pytest.raises(TenantsError) as raised:
        load_tenants(path, MODELS, environ={})
    message = str(raised.value)
    assert message.startswith(f"--tenants {path}: {problem}") and "\n" not in message


def test_a_file_that_is_not_yaml_or_missing_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("tenants: [unclosed\n", encoding="utf-8")
    with pytest.raises(TenantsError, match=r"^--tenants .*broken\.yaml: not valid YAML"):
        load_tenants(broken, MODELS)
    with pytest.raises(TenantsError, match=r"^--tenants .*absent\.yaml: cannot read it"):
        load_tenants(tmp_path / "absent.yaml", MODELS)


def test_tokens_come_from_the_file_or_the_environment(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.yaml", {"a": {"token": "tok-a", "models": ["tiny-1b"]}, "b": {"token_env": "B_TOKEN"}})
    tenants = load_tenants(path, MODELS, environ={"B_TOKEN": "tok-b"})
    assert tenants["tok-a"].name == "a" and tenants["tok-a"].models == ("tiny-1b",)
    assert tenants["tok-b"].name == "b" and tenants["tok-b"].models is None


def test_serve_refuses_a_tenant_with_an_unknown_model_at_start(demo_policy: Path, tmp_path: Path) -> None:
    path = _write(tmp_path / "tenants.yaml", {"search": {"token": "s", "models": ["tiny-1b", "gpt-9"]}})
    refused = _run_serve("--policy", str(demo_policy), "--port", "0", "--tenants", str(path))
    _assert_one_line_error(refused, f"serve.py: error: --tenants {path}: tenant 'search': unknown model(s) ['gpt-9']")


def test_each_tenant_is_routed_within_its_models_weight_and_budget(demo_policy: Path, tmp_path: Path) -> None:
    tenants = {
        "search": {"token": "tok-search", "models": ["small-7b", "tiny-1b"], "cost_weight": 50.0},
        "research": {"token_env": "RESEARCH_TOKEN", "budget": 0.0002},
    }
    log = tmp_path / "decisions.jsonl"
    running = _start_server(
        demo_policy,
        tmp_path,
        "--tenants",
        str(_write(tmp_path / "tenants.yaml", tenants)),
        "--decision-log",
        str(log),
        env={"RESEARCH_TOKEN": "tok-research", "ROUTERL_API_TOKEN": "tok-plain"},
    )

    def post(token: str, body: dict) -> httpx.Response:
        return httpx.post(running.base_url + "/route", json=body, headers={"authorization": f"Bearer {token}"})

    try:
        for _ in range(5):
            assert post("tok-search", {"query": QUERY}).json()["model"] in ("small-7b", "tiny-1b")
        refused = post("tok-search", {"query": QUERY, "allowed_models": ["tiny-1b", "frontier-xl"]})
        assert refused.status_code == 422
        assert "'frontier-xl' not allowed for tenant 'search'" in refused.json()["error"]["message"]
        assert post("tok-research", {"query": QUERY}).status_code == 200
        assert post("tok-plain", {"query": QUERY}).status_code == 200  # ROUTERL_API_TOKEN: no tenant
        assert post("tok-unknown", {"query": QUERY}).status_code == 403
        assert httpx.post(running.base_url + "/route", json={"query": QUERY}).status_code == 401
        for decision in [json.loads(line) for line in log.read_text().splitlines()]:
            feedback = {"query_id": decision["query_id"], "quality": 1.0, "cost": 0.0001}
            answer = httpx.post(
                running.base_url + "/feedback", json=feedback, headers={"authorization": "Bearer tok-plain"}
            )
            assert answer.status_code == 200
        metrics = {"authorization": "Bearer tok-plain"}
        assert _metric(running.base_url, "routerl_tenant_decisions_total", tenant="search", headers=metrics) == 5
        assert _metric(running.base_url, "routerl_budget_usd", account="research", headers=metrics) == 0.0002
    finally:
        _stop(running.process)
    decisions = [record for line in log.read_text().splitlines() if "policy_version" in (record := json.loads(line))]
    assert [d.get("tenant") for d in decisions] == ["search"] * 5 + ["research", None]
    assert all(d["cost_weight"] == 50.0 for d in decisions[:5])  # the tenant's own default weight
    stats = load_log(log).log.stats  # the records with tenants are an ordinary bandit-feedback log
    assert stats.rows_accepted == 7 and stats.rows_rejected == 0
