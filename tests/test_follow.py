"""The production learning loop (``python -m training.follow``): exact statistics, kills, the gate, drift, rollback.

The scenarios of the issue run through the real service over HTTP (:func:`serve_http`: clients route
and report outcomes, the follower reads the service's log and reloads it at each promotion): a stale
policy replaced, a worse candidate refused, kills of the service and of the follower, drift, a model
added to the pool. The unit tests of the statistics and the gate write decision logs as ``serve.py``
writes them (:func:`serve_offline`: the policy in service decides ε-greedy, each decision with its
exact propensity, and the feedback follows with the logged world's outcome).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import ROOT, run_train
from test_serve import RunningServer, _start_server, _stop

from agents.linucb_statistics import LinUCBStatistics
from data.loading import load_log
from data.routing_log import RoutingLog
from data.schema import DataError
from data.splits import hash_unit
from policies.artifact import load_policy
from policies.export import PolicyMetadata, build_text_policy, save_policy
from training.checkpoints import read_checkpoint
from training.drift import DriftConfig, PageHinkley
from training.follower import CHECKPOINT, FollowConfig, Follower
from training.live_learner import LEARNER_FILE, LiveLearner, save_learner
from training.promotion import compare
from training.run import RunResult

DEMO = ROOT / "data" / "demo" / "demo.jsonl"


def serve_offline(
    policy: Path,
    log: RoutingLog,
    path: Path,
    order: np.ndarray,
    epsilon: float = 0.5,
    seed: int = 0,
    new_models: tuple[str, ...] = (),
    share: float = 0.0,
) -> None:
    """Append the decisions and feedback of ``log``'s queries in ``order`` as serve.py would: ε-greedy
    over the policy's models and, as ``--explore-new-models`` with ``--explore-floor share``, each of
    ``new_models`` (models of ``log`` the policy does not know) with probability ``share``."""
    served = load_policy(policy)
    rng = random.Random(seed)
    weight = served.default_cost_weight
    scores = served.scores([log.queries[i] for i in order], weight).double().numpy()
    k, rest = len(served.models), 1.0 - share * len(new_models)
    with open(path, "a", encoding="utf-8") as out:
        for row, i in zip(scores, order.tolist()):
            greedy = int(np.argmax(row))
            draw = rng.random() if new_models else 1.0
            if draw < share * len(new_models):
                model, propensity = new_models[int(draw / share)], share
            else:
                action = rng.randrange(k) if rng.random() < epsilon else greedy
                model = served.models[action]
                propensity = rest * ((1 - epsilon if action == greedy else 0.0) + epsilon / k)
            column = log.models.index(model)
            query_id = uuid.UUID(int=rng.getrandbits(128)).hex
            decision = {
                "query_id": query_id,
                "query": log.queries[i],
                "model": model,
                "propensity": propensity,
                "cost_weight": weight,
                "policy_version": served.version,
                "timestamp": "2025-01-01T00:00:00+00:00",
            }
            feedback = {
                "query_id": query_id,
                "quality": float(log.quality[i, column]),
                "cost": float(log.cost[i, column]),
            }
            out.write(json.dumps(decision) + "\n" + json.dumps(feedback) + "\n")


def follow_cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m training.follow ARGS``, optionally killed at a fault point."""
    env = {**os.environ, "ROUTERL_FAULT": fault or ""}
    return subprocess.run(
        [sys.executable, "-m", "training.follow", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


Answered = list[tuple[str, int, str]]  # (query_id, row of the world, model) of routed queries


def route_batch(client: httpx.Client, world: RoutingLog, rows: list[int]) -> Answered:
    """``POST /route/batch`` the rows' queries; what the service answered for each."""
    answer = client.post("/route/batch", json={"queries": [world.queries[i] for i in rows]})
    answer.raise_for_status()
    body = answer.json()
    return list(zip(body["query_ids"], rows, body["models"]))


def send_feedback(client: httpx.Client, world: RoutingLog, answered: Answered) -> int:
    """``POST /feedback`` each answered query's outcome in ``world`` (the served model's); the number sent."""
    for query_id, row, model in answered:
        k = world.models.index(model)
        sent = {"query_id": query_id, "quality": float(world.quality[row, k]), "cost": float(world.cost[row, k])}
        assert client.post("/feedback", json=sent).status_code == 200
    return len(answered)


@pytest.fixture(scope="module")
def demo_log() -> RoutingLog:
    return load_log(DEMO).log


@pytest.fixture(scope="module")
def stale_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy trained on 80 queries of the demo's world: production traffic can prove a better one."""
    folder = tmp_path_factory.mktemp("stale")
    small = folder / "small.jsonl"
    subprocess.run(
        [sys.executable, "-m", "data", "synth", "--queries", "80", "--out", str(small)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    result = run_train("--data", str(small), "--out", str(folder / "run"), "--no-tune")
    assert result.returncode == 0, result.stderr
    return folder / "run"


@pytest.fixture(scope="module")
def reversed_run(demo_run: RunResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose policy was built to be bad (the demo run's quality estimates given to the models
    in reverse order) and whose learner keeps the demo's featurizer but no statistics: production
    traffic proves a better policy within a few hundred held-out rounds whatever the split."""
    run = tmp_path_factory.mktemp("reversed")
    learner = LiveLearner.load(demo_run.directory / LEARNER_FILE)
    learner.statistics["target_quality"] = learner.statistics["target_quality"][::-1].copy()
    agent = learner.agent()
    metadata = load_policy(demo_run.directory / "policy.pt").metadata
    kept = ("models", "default_cost_weight", "cost_weight_range", "score_kind", "agent", "featurizer")
    described = PolicyMetadata(**{key: metadata[key] for key in kept}, data_fingerprint="reversed")
    module = build_text_policy(learner.featurizer, agent.linear_map(), agent.head(), described)
    save_policy(module, described, run / "policy.pt")
    save_learner(run / LEARNER_FILE, learner.featurizer, learner.models, learner.ridge, None)
    return run


def test_statistics_equal_a_batch_fit_on_the_same_rounds(stale_run: Path, demo_log: RoutingLog, tmp_path: Path) -> None:
    """With discount 1 the learner's statistics are the run's plus LinUCB's batch statistics of the
    learned rounds, as the batch reader (data.loading) joins them from the same log."""
    logs = tmp_path / "logs"
    logs.mkdir()
    serve_offline(stale_run / "policy.pt", demo_log, logs / "decisions.jsonl", np.arange(600))
    with open(logs / "decisions.jsonl", "a") as log:  # two rejected records, counted
        log.write('{"query_id": "x", "quality": 0.5, "cost": 0}\n{"query_id": "x", "quality": 0.5, "cost": 0}\n')
    config = FollowConfig(poll_bytes=30_000)
    follower = Follower(stale_run, logs, tmp_path / "live", config)
    while follower.step():
        pass
    batch = load_log(logs).log
    assert follower.rounds == batch.n_queries == 600
    assert follower.stream.rejected == {"duplicate outcome": 1} and list(follower.stream.early) == ["x"]
    learned = hash_unit(batch.query_ids, config.seed) >= config.holdout_share
    assert follower.learned == learned.sum() and len(follower.holdout) == 600 - learned.sum()
    start = LiveLearner.load(stale_run / LEARNER_FILE)
    assert batch.action is not None
    actions = batch.action[learned]
    rows = np.arange(batch.n_queries)[learned]
    expected = LinUCBStatistics.of(
        start.features([batch.queries[i] for i in rows]),
        batch.quality[rows, actions],
        batch.cost[rows, actions],
        actions,
        n_models=batch.n_models,
    )
    assert np.allclose(follower.learner.statistics["gram"], start.statistics["gram"] + expected.gram, rtol=1e-12)
    assert np.allclose(
        follower.learner.statistics["target_quality"],
        start.statistics["target_quality"] + expected.target_quality,
        rtol=1e-12,
    )
    assert np.array_equal(
        follower.learner.statistics["observations"], start.statistics["observations"] + expected.observations
    )


def test_discount_weights_rounds_by_age_whatever_the_batching(stale_run: Path, demo_log: RoutingLog) -> None:
    """Adding rounds in two batches with γ < 1 equals adding them at once: round i of n weighs γ^(n−1−i)."""
    learner = LiveLearner.load(stale_run / LEARNER_FILE)
    x = learner.features(demo_log.queries[:50])
    actions, quality, cost = np.arange(50) % demo_log.n_models, np.linspace(0, 1, 50), np.full(50, 1e-4)
    once, twice = LiveLearner.load(stale_run / LEARNER_FILE), LiveLearner.load(stale_run / LEARNER_FILE)
    once.add(x, actions, quality, cost, 0.99)
    twice.add(x[:20], actions[:20], quality[:20], cost[:20], 0.99)
    twice.add(x[20:], actions[20:], quality[20:], cost[20:], 0.99)
    for name, value in once.statistics.items():
        assert np.allclose(value, twice.statistics[name], rtol=1e-12, atol=1e-15), name
    assert once.statistics["observations"].sum() == pytest.approx(
        0.99**50 * learner.statistics["observations"].sum() + sum(0.99**age for age in range(50))
    )


@pytest.mark.parametrize("fault", ["checkpoint-written:3", "checkpoint-renamed:5", "policy-written:2"])
def test_a_kill_at_any_point_then_a_restart_ends_as_an_uninterrupted_run(
    fault: str, reversed_run: Path, demo_log: RoutingLog, tmp_path: Path
) -> None:
    """SIGKILL inside a step (before or after its checkpoint, or while promoting), then a restart:
    the checkpoint, the versions and the events equal those of a run that was never killed."""
    logs = tmp_path / "logs"
    logs.mkdir()
    serve_offline(reversed_run / "policy.pt", demo_log, logs / "decisions.jsonl", np.tile(np.arange(1500), 1)[:1400])
    settings = ["--set", "poll_bytes=60000", "--set", "gate_every=300", "--set", "min_holdout=100"]
    common = ["--run", str(reversed_run), "--logs", str(logs), "--exit-when-idle", *settings]
    whole = follow_cli("--out", str(tmp_path / "whole"), *common)
    assert whole.returncode == 0, whole.stderr
    killed = follow_cli("--out", str(tmp_path / "killed"), *common, fault=fault)
    assert killed.returncode == -9, killed.stderr
    again = follow_cli("--out", str(tmp_path / "killed"), *common)
    assert again.returncode == 0, again.stderr
    expected, got = read_checkpoint(tmp_path / "whole" / CHECKPOINT), read_checkpoint(tmp_path / "killed" / CHECKPOINT)
    for name, value in expected["learner"].items():
        assert np.array_equal(value, got["learner"][name]), name
    for key in ("stream", "holdout", "rounds", "learned", "version", "drift"):
        assert expected[key] == got[key], key
    assert [e["kind"] for e in expected["events"]] == [e["kind"] for e in got["events"]]
    assert "promote" in [e["kind"] for e in expected["events"]]
    versions = sorted(p.name for p in (tmp_path / "whole" / "versions").glob("v*.pt"))
    assert versions == sorted(p.name for p in (tmp_path / "killed" / "versions").glob("v*.pt"))
    whole_policy, killed_policy = (
        load_policy(tmp_path / "whole" / "policy.pt"),
        load_policy(tmp_path / "killed" / "policy.pt"),
    )
    assert whole_policy.fingerprint == killed_policy.fingerprint  # the same data (the file's bytes hold its time)
    queries = demo_log.queries[:200]
    assert np.array_equal(whole_policy.scores(queries, 300.0).numpy(), killed_policy.scores(queries, 300.0).numpy())


def test_a_stale_policy_is_replaced_and_rollback_restores_it(
    reversed_run: Path, demo_log: RoutingLog, tmp_path: Path
) -> None:
    """From a policy built to be bad, replayed demo traffic proves a better one within 1,500 rounds;
    ``--rollback 0`` puts the starting policy back in service."""
    logs = tmp_path / "logs"
    logs.mkdir()
    serve_offline(reversed_run / "policy.pt", demo_log, logs / "decisions.jsonl", np.arange(1500))
    out = tmp_path / "live"
    result = follow_cli("--run", str(reversed_run), "--logs", str(logs), "--out", str(out), "--exit-when-idle")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    promotions = [e for e in events if e["kind"] == "promote"]
    assert promotions and promotions[0]["round"] <= 1500 and promotions[0]["detail"]["lower"] > 0
    record = json.loads((out / "versions" / "v0001.json").read_text())
    assert record["evaluation"]["promoted"] and record["policy_version"] == load_policy(out / "policy.pt").version
    back = follow_cli("--out", str(out), "--rollback", "0")
    assert back.returncode == 0 and "version 0 installed" in back.stdout
    assert load_policy(out / "policy.pt").version == load_policy(reversed_run / "policy.pt").version
    missing = follow_cli("--out", str(out), "--rollback", "7")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no version 7" in missing.stderr


def test_through_the_real_service_the_gate_refuses_a_candidate_built_to_be_worse(
    tmp_path: Path, demo_run: RunResult, demo_log: RoutingLog
) -> None:
    """The trained policy is served (serve.py, ε = 0.5, 1,500 queries by HTTP with their feedback);
    the follower's learner starts from a prior that swaps the models' quality estimates, so its
    candidates are worse than the policy in service: every decision of the gate is a refusal, the
    estimates are negative on average, and version 0 stays in service. (Which rounds are held out
    follows the service's random query ids, so one estimate alone may land at or above 0: CI saw it.)"""
    run = tmp_path / "run"
    run.mkdir()
    (run / "policy.pt").write_bytes((demo_run.directory / "policy.pt").read_bytes())
    with np.load(demo_run.directory / LEARNER_FILE) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["target_quality"] = arrays["target_quality"][::-1].copy()  # the best model's estimate to the worst
    np.savez(run / LEARNER_FILE, **arrays)
    logs = tmp_path / "logs"
    logs.mkdir()
    follower = Follower(run, logs, tmp_path / "live", FollowConfig(gate_every=400))
    log = ["--decision-log", str(logs / "decisions.jsonl"), "--explore-epsilon", "0.5", "--explore-seed", "5"]
    server = _start_server(follower.history.serving, tmp_path, *log)
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            for start in range(0, 1500, 100):
                send_feedback(client, demo_log, route_batch(client, demo_log, list(range(start, start + 100))))
    finally:
        _stop(server.process)
    follower.step()
    decisions = [e for e in follower.events if e["kind"] in ("promote", "refuse")]
    assert decisions and all(e["kind"] == "refuse" for e in decisions)
    estimates = [e["detail"]["estimate"] for e in decisions if "estimate" in e["detail"]]
    assert estimates and np.mean(estimates) < 0, estimates
    assert follower.history.versions() == [0]


def test_compare_is_the_paired_doubly_robust_difference() -> None:
    """Rounds where both policies agree add 0; with m̂ = 0 the estimate is IPS of the difference."""
    actions = np.array([0, 1, 0, 1])
    rewards = np.array([1.0, 0.0, 1.0, 0.5])
    propensities = np.full(4, 0.5)
    result = compare(
        np.array([0, 0, 0, 0]),
        np.array([1, 1, 0, 1]),
        np.zeros((4, 2)),
        actions,
        rewards,
        propensities,
        margin=0.0,
        confidence=0.95,
    )
    per_round = np.array([1.0 / 0.5, -0.0 / 0.5, 0.0, -0.5 / 0.5])
    assert result.estimate == pytest.approx(per_round.mean())
    assert result.differing == 3 and result.rounds == 4 and result.support == 1  # round 0 logged the candidate's 0
    half = 1.6448536269514722 * per_round.std(ddof=1) / 2
    assert result.lower == pytest.approx(per_round.mean() - half) and result.promoted == (result.lower > 0)


def test_a_candidate_never_logged_on_its_own_choices_is_refused_whatever_its_estimate() -> None:
    """m̂ alone says the candidate gains 0.5 on every round, but no held-out round was logged on its
    choice: with ``min_support`` 1 it is refused, with 0 it would pass."""
    n = 50
    predictions = np.tile([0.5, 1.0], (n, 1))
    rounds = (np.ones(n, dtype=int), np.zeros(n, dtype=int), predictions, np.zeros(n, dtype=int), np.full(n, 0.5))
    strict = compare(*rounds, np.full(n, 0.5), margin=0.0, confidence=0.95, min_support=1)
    assert strict.estimate == pytest.approx(0.5) and strict.lower > 0 and strict.support == 0
    assert not strict.promoted
    assert compare(*rounds, np.full(n, 0.5), margin=0.0, confidence=0.95, min_support=0).promoted


def test_page_hinkley_alarms_soon_after_a_known_drop_and_not_before() -> None:
    """Rewards Bernoulli(0.8) for 3,000 rounds, then Bernoulli(0.5): no alarm before, one within 400 after."""
    rng = np.random.default_rng(0)
    rewards = np.concatenate([rng.random(3000) < 0.8, rng.random(2000) < 0.5]).astype(float)
    test = PageHinkley(tolerance=0.05, threshold=50.0)
    alarms = test.update(rewards)
    assert alarms and 3000 <= alarms[0] <= 3400


ADMIN = "follow-admin-token"


def live_service(follower: Follower, tmp_path: Path, logs: Path, *flags: str) -> RunningServer:
    """``serve.py`` on the follower's policy in service, logging into ``logs`` (ε = 0.5), reloadable with
    :data:`ADMIN`: the follower (given its address) reloads it at each promotion."""
    log = ["--decision-log", str(logs / "decisions.jsonl"), "--explore-epsilon", "0.5", "--explore-seed", "7"]
    return _start_server(follower.history.serving, tmp_path, *log, *flags, env={"ROUTERL_ADMIN_TOKEN": ADMIN})


def serve_http(server: RunningServer, world: RoutingLog, rows: np.ndarray, follower: Follower) -> None:
    """Clients route ``rows``' queries through the real service and report each served model's outcome in
    ``world``; then the follower reads the service's log to its end (promoting, and reloading the service)."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        send_feedback(client, world, route_batch(client, world, rows.tolist()))
    while follower.step():
        pass


def test_drift_at_a_known_round_is_detected_and_the_policy_recovers(
    demo_run: RunResult, demo_log: RoutingLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real service: after round 1,500 the model the trained policy serves most and the worst
    model swap answers. The follower raises a drift alarm after the change (not before), forgets, and
    promotes a policy learned from the new world, which the service then routes with."""
    monkeypatch.setenv("ROUTERL_ADMIN_TOKEN", ADMIN)  # the follower's reloads
    logs = tmp_path / "logs"
    logs.mkdir()
    served = load_policy(demo_run.directory / "policy.pt")
    choices = served.scores(demo_log.queries, served.default_cost_weight).numpy().argmax(axis=1)
    most, worst = int(np.bincount(choices).argmax()), int(demo_log.quality.mean(axis=0).argmin())
    swap = np.arange(demo_log.n_models)
    swap[most], swap[worst] = worst, most
    changed = dataclasses.replace(demo_log, quality=demo_log.quality[:, swap])
    # λ = 30: the alarm comes about 1,000 rounds after this change (with the default 50, about 1,300), and
    # a promotion about 1,000 later (whatever the held-out split of the service's random query ids: 3,370 to
    # 4,050 in six runs); still far from a false alarm in 1,500 rounds of a steady world
    config = FollowConfig(gate_every=300, min_holdout=100, drift=DriftConfig(threshold=30.0))
    server = None
    try:
        follower = Follower(demo_run.directory, logs, tmp_path / "live", config)
        server = live_service(follower, tmp_path, logs)
        follower.service = server.base_url
        for chunk in range(20):  # 6 x 250 rounds of the old world, then 14 of the new
            rows = np.arange(chunk * 250, (chunk + 1) * 250) % 1500
            serve_http(server, demo_log if chunk < 6 else changed, rows, follower)
        drifts = [e for e in follower.events if e["kind"] == "drift"]
        seen = [(e["kind"], e["round"], e["detail"].get("reason", "")) for e in follower.events]
        assert drifts and all(e["round"] > 1500 for e in drifts), seen
        promoted = [e for e in follower.events if e["kind"] == "promote" and e["round"] > drifts[0]["round"]]
        assert promoted and promoted[-1]["detail"]["service"] == "reloaded", seen
        live = httpx.get(server.base_url + "/healthz").json()["policy"]["version"]
        assert live == load_policy(tmp_path / "live" / "policy.pt").version != served.version
    finally:
        if server is not None:
            _stop(server.process)


def test_through_the_real_service_killed_once_the_follower_counts_each_round_once_and_promotes_live(
    reversed_run: Path, demo_log: RoutingLog, tmp_path: Path
) -> None:
    """A policy built to be bad is served; serve.py explores (ε = 0.5) and logs; clients route by
    HTTP and send feedback one batch late. The service is SIGKILLed once, after writing a decision
    it never answered (fault point ``decision-written``), and restarted on the same log. The
    follower then joins exactly the rounds whose feedback was acknowledged (the unanswered batch
    stays pending, nothing is rejected or counted twice), promotes a better policy (query ids are
    random, so the held-out split is too; the traffic is long enough for the gate whatever the
    split) and, with the service's address and admin token, reloads the running service, whose
    next decisions are logged with the new version."""
    logs, out = tmp_path / "logs", tmp_path / "live"
    logs.mkdir()
    first = follow_cli("--run", str(reversed_run), "--logs", str(logs), "--out", str(out), "--exit-when-idle")
    assert first.returncode == 0, first.stderr  # the folder exists, version 0 in service
    token = {"ROUTERL_ADMIN_TOKEN": "admin-secret"}

    def start(fault: str = "") -> RunningServer:
        log = ["--decision-log", str(logs / "decisions.jsonl"), "--explore-epsilon", "0.5", "--explore-seed", "3"]
        return _start_server(out / "policy.pt", tmp_path, *log, env={**token, "ROUTERL_FAULT": fault})

    servers = [start("decision-written:700")]  # dies inside the 14th batch of 50
    acknowledged, start_row, late = 0, 0, Answered()
    try:
        while start_row < 3000:  # the demo's queries twice
            rows = [i % 1500 for i in range(start_row, start_row + 50)]
            with httpx.Client(base_url=servers[-1].base_url, timeout=30) as client:
                try:
                    answered = route_batch(client, demo_log, rows)
                except httpx.TransportError:  # killed: its decisions were written, never answered
                    servers[-1].process.wait(timeout=30)
                    servers.append(start())
                    continue
                acknowledged += send_feedback(client, demo_log, late)  # the previous batch's outcomes arrive now
            late = answered
            start_row += 50
        assert len(servers) == 2 and servers[0].process.returncode == -9
        settings = ["--set", "gate_every=300", "--set", "min_holdout=100", "--exit-when-idle"]
        followed = subprocess.run(
            [
                sys.executable,
                "-m",
                "training.follow",
                "--run",
                str(reversed_run),
                "--logs",
                str(logs),
                "--out",
                str(out),
                "--service",
                servers[-1].base_url,
                *settings,
            ],
            cwd=ROOT,
            env={**os.environ, **token},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert followed.returncode == 0, followed.stderr
        state = read_checkpoint(out / CHECKPOINT)
        assert state["rounds"] == acknowledged == 59 * 50  # every answered batch but the last
        assert len(state["stream"]["pending"]) == 100 and state["stream"]["rejected"] == {}
        promotions = [e for e in state["events"] if e["kind"] == "promote"]
        assert promotions and all(e["detail"]["service"] == "reloaded" for e in promotions)
        live = load_policy(out / "policy.pt").version
        with httpx.Client(base_url=servers[-1].base_url, timeout=30) as client:
            assert client.get("/healthz").json()["policy"]["version"] == live
            client.post("/route/batch", json={"queries": demo_log.queries[:20]})
    finally:
        for server in servers:
            _stop(server.process)
    records = [json.loads(line) for line in (logs / "decisions.jsonl").read_text().splitlines()]
    decisions = [r for r in records if "policy_version" in r]
    assert len(decisions) == 3000 + 50 + 20 and {r["policy_version"] for r in decisions[-20:]} == {live}


def test_the_learner_file_continues_the_run_exactly(demo_run: RunResult, demo_log: RoutingLog) -> None:
    """``learner.npz`` holds the run's featurizer, λ and statistics: solved with no new round, it
    scores the queries as the run's exported ``policy.pt`` does."""
    learner = LiveLearner.load(demo_run.directory / LEARNER_FILE)
    served = load_policy(demo_run.directory / "policy.pt")
    queries = demo_log.queries[:300]
    ours = learner.agent().scores(learner.features(queries), served.default_cost_weight)
    theirs = served.scores(queries, served.default_cost_weight).double().numpy()
    assert learner.models == list(served.models)
    assert np.allclose(ours, theirs, atol=1e-5)
    assert np.array_equal(ours.argmax(axis=1), theirs.argmax(axis=1))


@pytest.fixture(scope="module")
def four_model_run(demo_log: RoutingLog, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained on the demo log without ``medium-34b``: its policy knows four models."""
    folder = tmp_path_factory.mktemp("four")
    lines = DEMO.read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "four.jsonl").write_text("".join(line for line in lines if json.loads(line)["model"] != NEW_MODEL))
    result = run_train("--data", str(folder / "four.jsonl"), "--out", str(folder / "run"), "--no-tune")
    assert result.returncode == 0, result.stderr
    return folder / "run"


NEW_MODEL = "medium-34b"


def test_a_model_added_to_the_pool_is_explored_learned_and_then_used(
    four_model_run: Path, demo_log: RoutingLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real service: a fifth model joins the pool, as good as the best of the three dearest
    at a middle price. The service explores it with share 0.1 (``--explore-new-models``); the follower
    (``add_models``) learns it, keeps it out of candidates until ``min_observations``, then promotes a
    policy that routes to it, which the service reloads and routes with."""
    monkeypatch.setenv("ROUTERL_ADMIN_TOKEN", ADMIN)
    quality = demo_log.quality.copy()
    column = demo_log.models.index(NEW_MODEL)
    quality[:, column] = quality[:, :3].max(axis=1)
    world = dataclasses.replace(demo_log, quality=quality)
    logs = tmp_path / "logs"
    logs.mkdir()
    config = FollowConfig(gate_every=300, min_holdout=100, add_models=[NEW_MODEL])
    server = None
    try:
        follower = Follower(four_model_run, logs, tmp_path / "live", config)
        server = live_service(follower, tmp_path, logs, "--explore-new-models", NEW_MODEL, "--explore-floor", "0.1")
        follower.service = server.base_url
        for chunk in range(6):  # 6 x 250 rounds
            serve_http(server, world, np.arange(chunk * 250, (chunk + 1) * 250), follower)
        assert follower.learner.models == [*load_policy(four_model_run / "policy.pt").models, NEW_MODEL]
        promotions = [e for e in follower.events if e["kind"] == "promote"]
        assert promotions, follower.events
        promoted = load_policy(follower.history.policy_path(promotions[0]["detail"]["version"]))
        assert promoted.models[-1] == NEW_MODEL
        choices = promoted.scores(demo_log.queries, promoted.default_cost_weight).numpy().argmax(axis=1)
        assert (choices == len(promoted.models) - 1).mean() > 0.2  # used for a good share of the queries
        with httpx.Client(base_url=server.base_url, timeout=30) as client:  # the service routes with it now
            assert client.get("/healthz").json()["policy"]["version"] == load_policy(follower.history.serving).version
            models = client.post("/route/batch", json={"queries": demo_log.queries[:200]}).json()["models"]
        assert models.count(NEW_MODEL) > 0.2 * 200
    finally:
        if server is not None:
            _stop(server.process)


def test_an_added_model_is_masked_until_observed_and_a_removed_one_always(stale_run: Path, tmp_path: Path) -> None:
    """A candidate never chooses an added model with fewer than ``min_observations`` rounds, nor a removed one."""
    logs = tmp_path / "logs"
    logs.mkdir()
    config = FollowConfig(add_models=["brand-new-9b"], remove_models=["tiny-1b"], min_observations=5)
    follower = Follower(stale_run, logs, tmp_path / "live", config)
    models = follower.learner.models
    assert follower.masked_arms() == [models.index("tiny-1b"), models.index("brand-new-9b")]
    features = follower.learner.features(["What is 2+2?", "Prove that there are infinitely many primes."])
    scores = follower.learner.agent(follower.masked_arms()).scores(features, 0.0)
    assert (scores[:, follower.masked_arms()] < -1e5).all()
    x = follower.learner.features(["a question"] * 5)
    follower.learner.add(x, np.full(5, models.index("brand-new-9b")), np.ones(5), np.zeros(5))
    assert follower.masked_arms() == [models.index("tiny-1b")]
    with pytest.raises(DataError, match="unknown-7b"):
        Follower(stale_run, logs, tmp_path / "other", FollowConfig(remove_models=["unknown-7b"]))


def test_a_line_longer_than_a_poll_reads_is_read_whole(stale_run: Path, demo_log: RoutingLog, tmp_path: Path) -> None:
    """``poll_bytes`` bounds a poll, not a record: a 20 kB query under a 1 kB poll still joins."""
    logs = tmp_path / "logs"
    logs.mkdir()
    long = dataclasses.replace(demo_log, queries=["word " * 4000, *demo_log.queries[1:]])
    serve_offline(stale_run / "policy.pt", long, logs / "decisions.jsonl", np.arange(3))
    follower = Follower(stale_run, logs, tmp_path / "live", FollowConfig(poll_bytes=1000))
    while follower.step():
        pass
    assert follower.rounds == 3 and not follower.stream.pending and not follower.stream.rejected
