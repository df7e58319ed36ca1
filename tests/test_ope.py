"""Off-policy evaluation through evaluation's public API: a hand-computed case and the CLI.

The intervals' coverage of the true value, on the synthetic generator's known truth: tests/test_coverage.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python, synthetic_log

from data.routing_log import RoutingLog
from data.synth import SynthConfig, generate, write
from envs.estimators import PredictedOutcomes
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
