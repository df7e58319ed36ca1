"""Off-policy evaluation through evaluation's public API: hand-computed cases and coverage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python, synthetic_log

from data.routing_log import RoutingLog
from data.synth import SynthConfig, generate, write
from envs.estimators import PredictedOutcomes
from evaluation.bootstrap import Bootstrap
from evaluation.ope import off_policy_estimates


def _bandit_log(
    actions: np.ndarray, propensities: np.ndarray, quality: np.ndarray, cost: np.ndarray, k: int
) -> RoutingLog:
    n = len(actions)
    grid_q, grid_c = np.full((n, k), np.nan), np.full((n, k), np.nan)
    grid_q[np.arange(n), actions], grid_c[np.arange(n), actions] = quality, cost
    return synthetic_log(grid_q, grid_c, feedback="bandit", action=actions, propensity=propensities)


def test_hand_computed_small_case() -> None:
    actions = np.array([0, 1, 1, 0])
    propensities = np.array([0.5, 0.5, 0.25, 0.75])
    quality = np.array([1.0, 0.0, 1.0, 1.0])
    cost = np.array([0.1, 0.2, 0.2, 0.1])
    target = np.array([0, 0, 1, 1])
    m_hat = PredictedOutcomes(quality=np.array([[0.5, 0.5]] * 4), cost=np.array([[0.1, 0.2]] * 4), latency_ms=None)
    result = off_policy_estimates(
        _bandit_log(actions, propensities, quality, cost, 2), target, m_hat, cost_weight=1.0, bootstrap=None
    )
    # IPS: (1/n) Σ 1{A=π} y / p = (1/0.5 + 0 + 1/0.25 + 0) / 4 = 1.5
    assert result["ips"]["mean_quality"] == pytest.approx(1.5)
    # SNIPS: Σ w y / Σ w with w = 1{A=π}/p: (2 + 4) / (2 + 4) = 1.0
    assert result["snips"]["mean_quality"] == pytest.approx(1.0)
    # DM: mean of m̂(x, π(x)) = 0.5
    assert result["dm"]["mean_quality"] == pytest.approx(0.5)
    # DR: DM + (1/n) Σ w (y − m̂(x, A)) = 0.5 + (2·0.5 + 4·0.5) / 4 = 1.25
    assert result["dr"]["mean_quality"] == pytest.approx(1.25)
    # costs: IPS (2·0.1 + 4·0.2) / 4 = 0.25; reward = quality − cost
    assert result["ips"]["mean_cost"] == pytest.approx(0.25)
    assert result["ips"]["mean_reward"] == pytest.approx(1.5 - 0.25)
    assert result["matched_rounds"] == 2 and result["rounds"] == 4


def _world(rng: np.random.Generator, n: int, logging: str) -> tuple[RoutingLog, np.ndarray, PredictedOutcomes]:
    """K=3 arms, a 2-d context; known expected quality; a deterministic target policy."""
    x = rng.standard_normal((n, 2))
    expected = 1.0 / (1.0 + np.exp(-(x @ np.array([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0]]))))
    cost = np.array([0.01, 0.03, 0.02])
    if logging == "uniform":
        probabilities = np.full((n, 3), 1 / 3)
    else:  # ε-greedy around a fixed (not the target's) preference
        greedy = np.argmax(x @ np.array([[0.2, 1.0, -0.3], [1.0, 0.0, 0.4]]), axis=1)
        probabilities = np.full((n, 3), 0.3 / 3)
        probabilities[np.arange(n), greedy] += 0.7
    actions = np.array([rng.choice(3, p=p) for p in probabilities])
    rows = np.arange(n)
    quality = (rng.random(n) < expected[rows, actions]).astype(float)
    log = _bandit_log(actions, probabilities[rows, actions], quality, np.full(n, 1.0) * cost[actions], 3)
    target = np.argmax(x @ np.array([[1.0, -0.5, 0.0], [0.0, 0.8, -1.0]]), axis=1)
    misspecified = PredictedOutcomes(quality=np.full((n, 3), 0.5), cost=np.tile(cost, (n, 1)), latency_ms=None)
    return log, target, misspecified


def _true_value(logging_seed: int) -> float:
    rng = np.random.default_rng(logging_seed)
    x = rng.standard_normal((400_000, 2))
    expected = 1.0 / (1.0 + np.exp(-(x @ np.array([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0]]))))
    target = np.argmax(x @ np.array([[1.0, -0.5, 0.0], [0.0, 0.8, -1.0]]), axis=1)
    return float(expected[np.arange(len(x)), target].mean())


@pytest.mark.parametrize("logging", ["uniform", "eps-greedy"])
def test_intervals_cover_the_true_quality(logging: str) -> None:
    """n = 1000 rounds, 200 replicates, 100-resample bootstrap intervals of the mean quality.

    IPS, SNIPS and DR: coverage >= 85%, |mean bias| < 0.01, mean width < 0.2 (uniform) or
    0.3 (ε-greedy). DM uses a misspecified constant model: its bias is reported, not bounded.
    """
    truth = _true_value(123)
    rng = np.random.default_rng(7)
    hits = {name: 0 for name in ("ips", "snips", "dr")}
    errors: dict[str, list[float]] = {name: [] for name in ("ips", "snips", "dr", "dm")}
    widths: dict[str, list[float]] = {name: [] for name in hits}
    replicates = 200
    for replicate in range(replicates):
        log, target, predictions = _world(rng, 1000, logging)
        result = off_policy_estimates(log, target, predictions, 0.0, Bootstrap(1000, 100, seed=replicate))
        for name in errors:
            errors[name].append(result[name]["mean_quality"] - truth)
        for name in hits:
            low, high = result[name]["mean_quality_ci95"]
            hits[name] += low <= truth <= high
            widths[name].append(high - low)
    bound = 0.2 if logging == "uniform" else 0.3
    for name in hits:
        assert hits[name] / replicates >= 0.85, (name, hits[name])
        assert abs(np.mean(errors[name])) < 0.01, (name, np.mean(errors[name]))
        assert np.mean(widths[name]) < bound, (name, np.mean(widths[name]))
    assert np.isfinite(np.mean(errors["dm"]))  # DM's bias is reported, not held to coverage


def test_evaluation_cli_on_a_bandit_log(demo_policy: Path, tmp_path: Path) -> None:
    """``python -m evaluation`` on a bandit-feedback log: every estimator, a DR frontier, no oracle."""
    log = tmp_path / "bandit.jsonl"
    write(generate(SynthConfig(queries=600, bandit=True, logging_policy="uniform", seed=2)), log)
    done = run_python(
        "-m", "evaluation", str(demo_policy), "--data", str(log), "--out", str(tmp_path / "eval"), "--bootstrap", "50"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert set(report["off_policy"]) >= {"dm", "ips", "snips", "dr", "replay"}
    assert report["frontier"]["oracle"] is None
    assert report["test"]["mean_reward"] == pytest.approx(report["off_policy"]["dr"]["mean_reward"])
