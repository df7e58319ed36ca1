"""Every agent kind trains through train.py; PPO is deterministic and resumes after SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, run_train

from policies.artifact import load_policy
from policies.faults import FAULT_VARIABLE

#: A short PPO run; --no-tune: these tests are about training, resuming and exporting (tests/test_tuning.py
#: covers PPO's tuning, which would try up to nine such runs first).
PPO_SMALL = ["--config", str(ROOT / "configs" / "ppo.yaml"), "--no-tune", "--set", "evaluation.bootstrap=0",
             "--set", "agent.ppo.total_steps=40960", "--set", "agent.ppo.eval_every=5000"]


def _train(*args: str) -> subprocess.CompletedProcess[str]:
    """``train.py`` with room for a PPO run (900 s)."""
    return run_train(*args, timeout=900)


@pytest.mark.parametrize(("kind", "learning", "options"), [
    ("lints", "online", ["--set", "agent.online_steps=3000"]),  # LinTS differs from LinUCB only online
    ("knn", "fit", []),
    ("logistic", "fit", []),
])
def test_each_agent_kind_trains_and_exports(kind: str, learning: str, options: list[str], tmp_path: Path) -> None:
    """Each kind learns its own way when ``agent.learning`` is left out (configs/default.yaml leaves it null),
    in token mode on the demo log."""
    done = _train("--out", str(tmp_path / kind), "--set", f"agent.kind={kind}", "--set", "evaluation.bootstrap=0",
                  *options)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / kind / "report.json").read_text())
    assert report["policy"]["agent"] == kind and report["policy"]["learning"] == learning
    assert report["test"]["mean_reward"] > report["baselines"]["random"]["mean_reward"]
    policy = load_policy(tmp_path / kind / "policy.pt")
    assert policy.metadata["agent"] == kind and policy.score_kind == "utility"
    # the demo log has every token count: each kind estimates tokens and its policy carries a price table
    assert report["exported_policy"]["cost_mode"] == policy.cost_mode == "tokens"
    assert policy.prices_table().keys() == set(policy.models)


def test_ppo_is_deterministic_across_processes_and_exports_logits(tmp_path: Path) -> None:
    first, second = _train("--out", str(tmp_path / "a"), *PPO_SMALL), _train("--out", str(tmp_path / "b"), *PPO_SMALL)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    report_a = json.loads((tmp_path / "a" / "report.json").read_text())
    report_b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report_a == report_b
    assert report_a["policy"]["agent"] == "ppo" and report_a["policy"]["score_kind"] == "logit"
    assert report_a["test"]["mean_reward"] > report_a["baselines"]["random"]["mean_reward"]
    policy = load_policy(tmp_path / "a" / "policy.pt")
    # trained on the training split's break-even span: the span the report's frontier sweeps
    high = report_a["frontier"]["cost_weights"][-1]
    assert policy.metadata["cost_weight_range"] == [0.0, pytest.approx(high)]
    # weights beyond the trained range are clamped into it, not refused
    assert policy.module.route(["a query"], 1e9) == policy.module.route(["a query"], high)


@pytest.mark.slow
def test_ppo_killed_after_a_checkpoint_resumes_to_exactly_the_configured_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGKILL right after the second checkpoint (step 20480), then ``--resume``.

    The resumed run learns the uninterrupted run's number of steps, but not its parameters: its
    environment's query stream restarts from a seed derived from the steps done (agents/ppo.py).
    """
    out = tmp_path / "run"
    args = [*PPO_SMALL, "--set", "agent.ppo.patience=0", "--set", "agent.checkpoint_every=10000"]
    monkeypatch.setenv(FAULT_VARIABLE, "checkpoint-renamed:2")
    killed = _train("--out", str(out), *args)
    monkeypatch.delenv(FAULT_VARIABLE)
    assert killed.returncode == -signal.SIGKILL and not (out / "report.json").exists()
    resumed = _train("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["policy"]["steps"] == 40960 and report["policy"]["resumed_from"] == 20480
    assert len(load_policy(out / "policy.pt").module.route(["a query"], 300.0)) == 1


def test_ppo_with_a_budget_exports_the_learned_multiplier(tmp_path: Path) -> None:
    budget = 2e-4  # USD per query; the demo models cost ~3e-5 to ~1e-3
    no_early_stopping = PPO_SMALL[:-2]  # agent.ppo.eval_every: nothing is scored on validation under a budget
    done = _train("--out", str(tmp_path / "budget"), *no_early_stopping, "--set", f"reward.budget.budget={budget}")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "budget" / "report.json").read_text())
    weight = report["policy"]["cost_weight"]
    assert weight != 30.0 and report["policy"]["steps"] == 40960  # λ̄ moved from its start; no early stop
    assert abs(report["test"]["mean_cost"] - budget) <= 0.2 * budget  # a small demo test split: ±20 %
    policy = load_policy(tmp_path / "budget" / "policy.pt")
    assert policy.metadata["default_cost_weight"] == pytest.approx(weight)
