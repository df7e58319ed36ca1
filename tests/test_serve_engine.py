"""``serve.py --engine native|torchscript``: the same routes from the portable twin and from ``policy.pt``.

Both services are started for real on 127.0.0.1 and asked over HTTP (docs/contracts.md §2.11, §4.1).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from conftest import ROOT
from test_serve import _start_server, _stop

from data.loading import load_log
from policies.portable import twin_path

QUERIES = [
    "?!",
    "What is 2+2?",
    "Explain the café's crème brûlée — in 日本語, please!",
    "Prove that there are infinitely many primes. " * 40,
    *load_log(ROOT / "data" / "demo" / "demo.jsonl").log.queries[:150],
]


def _answers(base_url: str, weight: float) -> tuple[list[str], list[dict[str, float]], dict]:
    """The batch route's models, each single route's scores, and /healthz."""
    with httpx.Client(base_url=base_url, timeout=60) as http:
        batch = http.post("/route/batch", json={"queries": QUERIES, "cost_weight": weight})
        assert batch.status_code == 200, batch.text
        singles = [http.post("/route", json={"query": query, "cost_weight": weight}).json() for query in QUERIES[:40]]
        assert [single["model"] for single in singles] == batch.json()["models"][:40]
        return batch.json()["models"], [single["scores"] for single in singles], http.get("/healthz").json()


def test_native_and_torchscript_engines_serve_the_same_routes(demo_policy: Path, tmp_path: Path) -> None:
    servers = {}
    try:
        for engine in ("native", "torchscript"):
            (tmp_path / engine).mkdir()
            servers[engine] = _start_server(demo_policy, tmp_path / engine, "--engine", engine)
        for weight in (0.0, 300.0, 1e4):
            native, torchscript = (_answers(servers[engine].base_url, weight) for engine in ("native", "torchscript"))
            assert native[0] == torchscript[0]
            for ours, theirs in zip(native[1], torchscript[1]):
                assert ours.keys() == theirs.keys()
                assert all(ours[model] == pytest.approx(theirs[model], rel=1e-6, abs=1e-9) for model in ours)
            assert native[2]["policy"] == torchscript[2]["policy"]
            assert (native[2]["engine"], torchscript[2]["engine"]) == ("native", "torchscript")
    finally:
        for running in servers.values():
            _stop(running.process)


def test_the_native_engine_serves_a_policy_without_its_twin_and_says_so(demo_policy: Path, tmp_path: Path) -> None:
    """A ``policy.pt`` copied alone (an older export) is converted in memory at start, with a warning."""
    alone = tmp_path / "policy.pt"
    shutil.copyfile(demo_policy, alone)
    running = _start_server(alone, tmp_path)
    try:
        health = httpx.get(running.base_url + "/healthz").json()
        assert health["engine"] == "native"
        warning = f"{alone}: no twin beside it (policy.safetensors): converted in memory"
        assert warning in running.stderr_path.read_text()
        route = httpx.post(running.base_url + "/route", json={"query": "What is 2+2?"})
        assert route.status_code == 200 and route.json()["policy"] == health["policy"]
    finally:
        _stop(running.process)
    assert not twin_path(alone).exists()  # the service writes nothing beside the policy
