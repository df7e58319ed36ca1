"""Capacity through the real service (``serve.py``, the exported policy's caps or ``--capacity``).

Synthetic traffic: the demo log's queries in a seeded random order, each routed by ``POST /route``
from 4 clients at once. The capped model is the demo policy's most chosen one (about 45% of the
queries without a cap), capped at 20%.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_serve import REPO_ROOT, _assert_one_line_error, _run_serve, _start_server, _stop
from test_serve_budget import _metric

from policies.capacity import read_capacity
from policies.native import load_native_policy
from serving.capacity import Cap, CapacityController, caps_of
from serving.settings import Settings
from serving.shared_memory import SharedMemory
from training.config import load_config
from training.run import RunResult, prepare_directory, train

CAP = 0.2
WINDOW = 500


@pytest.fixture(scope="module")
def capped_model(demo_run: RunResult) -> str:
    """The demo policy's most chosen model on its test split."""
    shares = demo_run.report["test"]["share_per_model"]
    return str(max(shares, key=shares.get))


@pytest.fixture(scope="module")
def capacity_policy(tmp_path_factory: pytest.TempPathFactory, capped_model: str) -> Path:
    """The demo configuration trained with ``capacity: {capped_model: 0.2}`` (no tuning, no bootstrap: fast)."""
    out = tmp_path_factory.mktemp("capacity") / "run"
    overrides = ["tuning.enabled=false", "evaluation.bootstrap=0", f"capacity={{{capped_model}: {CAP}}}"]
    prepare_directory(out, overwrite=False)
    config = load_config(REPO_ROOT / "configs" / "default.yaml", overrides)
    return train(config, out, quiet=True).directory / "policy.pt"


def _routed(base_url: str, requests: int) -> list[str]:
    """The models chosen for ``requests`` demo queries in a seeded random order, 4 clients at a time."""
    texts = sorted({json.loads(line)["query"] for line in (REPO_ROOT / "data/demo/demo.jsonl").open(encoding="utf-8")})
    order = np.random.default_rng(0).integers(len(texts), size=requests)
    with httpx.Client(base_url=base_url, timeout=30) as http, ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda i: str(http.post("/route", json={"query": texts[order[i]]}).json()["model"]),
                             range(requests)))


def _window_shares(chosen: np.ndarray, warm_up: int) -> np.ndarray:
    """The share of every consecutive window of :data:`WINDOW` decisions after ``warm_up``."""
    return chosen[warm_up:].reshape(-1, WINDOW).mean(axis=1)


def test_the_exported_multiplier_holds_the_cap_from_the_first_request(capacity_policy: Path, capped_model: str,
                                                                      tmp_path: Path) -> None:
    running = _start_server(capacity_policy, tmp_path, "--no-access-log")
    try:
        chosen = np.array(_routed(running.base_url, 1500)) == capped_model
        gauges = {name: _metric(running.base_url, f"routerl_capacity_{name}", model=capped_model)
                  for name in ("max_share", "multiplier", "share", "decisions")}
    finally:
        _stop(running.process)
    assert abs(chosen.mean() - CAP) <= 0.025, chosen.mean()
    assert np.abs(_window_shares(chosen, 0) - CAP).max() <= 0.04, _window_shares(chosen, 0)
    assert gauges["max_share"] == CAP and gauges["decisions"] == 1500
    assert gauges["multiplier"] is not None and gauges["multiplier"] > 0
    assert gauges["share"] is not None and abs(gauges["share"] - CAP) <= 0.05


def test_capacity_flag_holds_a_cap_the_policy_lacks_across_two_workers(demo_policy: Path, capped_model: str,
                                                                       tmp_path: Path) -> None:
    """From a multiplier of 0 (the policy has no caps) the controller finds it within 1,000 decisions, and
    the two workers hold one share: the decisions counted are every worker's."""
    running = _start_server(demo_policy, tmp_path, "--no-access-log", "--workers", "2",
                            "--capacity", f"{capped_model}={CAP}")
    try:
        chosen = np.array(_routed(running.base_url, 2500)) == capped_model
        decisions = _metric(running.base_url, "routerl_capacity_decisions", model=capped_model)
    finally:
        _stop(running.process)
    assert chosen[:WINDOW].mean() > CAP + 0.05  # it starts uncapped
    assert np.abs(_window_shares(chosen, 1000) - CAP).max() <= 0.03, _window_shares(chosen, 1000)
    assert decisions == 2500


def test_capacity_none_serves_the_policy_without_its_caps(capacity_policy: Path, capped_model: str,
                                                         tmp_path: Path) -> None:
    running = _start_server(capacity_policy, tmp_path, "--no-access-log", "--capacity", "none")
    try:
        chosen = np.array(_routed(running.base_url, 300)) == capped_model
        assert _metric(running.base_url, "routerl_capacity_multiplier", model=capped_model) is None
    finally:
        _stop(running.process)
    assert chosen.mean() > CAP + 0.1


def test_a_multiplier_rises_while_its_model_takes_more_than_its_cap_and_never_falls_below_zero() -> None:
    controller = CapacityController([Cap("a", 0.5, 0.0)], SharedMemory(4096), step=0.1)
    policy = type("Policy", (), {"models": ("a", "b")})()
    for chosen, expected in ((0, "up"), (1, "down")):
        before = float(controller.snapshot()[0]["multiplier"])
        request = controller.begin(policy)  # type: ignore[arg-type]
        for _ in range(10):
            request.count([1.0, 0.0], [0, 1], chosen)
        request.book()
        after = float(controller.snapshot()[0]["multiplier"])
        assert (after > before) if expected == "up" else (after == 0.0 < before)
    assert controller.begin(policy).offset([1.0, 0.0]) == [1.0, 0.0]  # type: ignore[arg-type]


def test_capacity_flag_caps_start_at_the_policys_multiplier_only_for_the_same_share(
    capacity_policy: Path, capped_model: str, tmp_path: Path
) -> None:
    policy = load_native_policy(capacity_policy)
    ((share, multiplier),) = read_capacity(policy.metadata, policy.models).values()
    caps = tmp_path / "caps.yaml"
    caps.write_text(f"{capped_model}: {share}\ntiny-1b: 0.5\n", encoding="utf-8")
    from_file = set(caps_of(Settings(capacity=str(caps)), policy))
    assert from_file == {Cap("tiny-1b", 0.5, 0.0), Cap(capped_model, share, multiplier)}
    assert caps_of(Settings(capacity=f"{capped_model}=0.3"), policy) == [Cap(capped_model, 0.3, 0.0)]
    assert caps_of(Settings(), policy) == [Cap(capped_model, share, multiplier)] and multiplier > 0
    assert caps_of(Settings(capacity="none"), policy) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--capacity", "nosuch=0.2"], "--capacity nosuch=0.2: unknown model(s) ['nosuch']; the models are"),
        (["--capacity", "tiny-1b=1.5"], "--capacity tiny-1b=1.5: tiny-1b: a maximum share must be a number in (0, 1]"),
        (["--capacity", "tiny-1b=lots"], "--capacity tiny-1b=lots: 'tiny-1b=lots' is not MODEL=SHARE"),
        (["--capacity", "missing.yaml"], "--capacity missing.yaml: cannot read it"),
        (["--capacity-step", "0"], "--capacity-step must be a finite number > 0, got 0.0"),
    ],
)
def test_a_bad_capacity_flag_exits_2_with_one_line(demo_policy: Path, flags: list[str], message: str) -> None:
    _assert_one_line_error(
        _run_serve("--policy", str(demo_policy), "--port", "0", *flags), f"serve.py: error: {message}"
    )
