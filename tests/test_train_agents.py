"""Every agent kind trains through train.py; PPO is deterministic and resumes after SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from policies.artifact import load_policy

ROOT = Path(__file__).resolve().parent.parent
PPO_SMALL = ["--config", str(ROOT / "configs" / "ppo.yaml"), "--set", "evaluation.bootstrap=0",
             "--set", "agent.ppo.total_steps=40960", "--set", "agent.ppo.eval_every=5000"]


def _train(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), "--quiet", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("kind", ["lints", "direct", "knn", "logistic"])
def test_each_agent_kind_trains_and_exports(kind: str, tmp_path: Path) -> None:
    done = _train("--out", str(tmp_path / kind), "--set", f"agent.kind={kind}", "--set", "evaluation.bootstrap=0")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / kind / "report.json").read_text())
    assert report["policy"]["agent"] == kind
    assert report["test"]["mean_reward"] > report["baselines"]["random"]["mean_reward"]
    policy = load_policy(tmp_path / kind / "policy.pt")
    assert policy.metadata["agent"] == kind and policy.score_kind == "utility"


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
    assert policy.metadata["cost_weight_range"] == [0.0, 100000.0]
    # weights beyond the trained range are clamped into it, not refused
    assert policy.module.route(["a query"], 1e9) == policy.module.route(["a query"], 100000.0)


@pytest.mark.slow
def test_ppo_sigkill_then_resume_ends_with_exactly_the_configured_steps(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [*PPO_SMALL, "--set", "agent.ppo.total_steps=122880", "--set", "agent.ppo.patience=0",
            "--set", "agent.checkpoint_every=10000"]
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--quiet", "--out", str(out), *args],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "checkpoints" / "ppo.zip"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None and not checkpoint.exists():
        time.sleep(0.05)
    assert checkpoint.exists(), "no PPO checkpoint appeared"
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL and not (out / "report.json").exists()
    resumed = _train("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["policy"]["steps"] == 122880
    assert 0 < report["policy"]["resumed_from"] < 122880
    assert len(load_policy(out / "policy.pt").module.route(["a query"], 300.0)) == 1


def test_ppo_with_a_budget_exports_the_learned_multiplier(tmp_path: Path) -> None:
    budget = 2e-4  # USD per query; the demo models cost ~3e-5 to ~1e-3
    done = _train("--out", str(tmp_path / "budget"), *PPO_SMALL, "--set", f"reward.budget.budget={budget}")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "budget" / "report.json").read_text())
    weight = report["policy"]["cost_weight"]
    assert weight != 30.0 and report["policy"]["steps"] == 40960  # λ̄ moved from its start; no early stop
    assert abs(report["test"]["mean_cost"] - budget) <= 0.2 * budget  # a small demo test split: ±20 %
    policy = load_policy(tmp_path / "budget" / "policy.pt")
    assert policy.metadata["default_cost_weight"] == pytest.approx(weight)
