"""Checkpoints and resume: a run killed with SIGKILL continues with the remaining steps only."""

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
STEPS, EVERY = 60000, 3000


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_exactly_the_configured_steps(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        "--set",
        "agent.learning=online",
        "--set",
        f"agent.online_steps={STEPS}",
        "--set",
        f"agent.checkpoint_every={EVERY}",
        "--set",
        "evaluation.bootstrap=0",
    ]
    first = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--quiet", "--out", str(out), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoints = out / "checkpoints"
    deadline = time.monotonic() + 300
    killed_after: list[int] = []
    while time.monotonic() < deadline and first.poll() is None:
        steps = (
            sorted(int(p.stem.split("-")[1]) for p in checkpoints.glob("step-*.npz")) if checkpoints.exists() else []
        )
        if steps and steps[-1] < STEPS:
            first.send_signal(signal.SIGKILL)
            killed_after = steps
            break
        time.sleep(0.05)
    first.wait(timeout=60)
    assert killed_after, "no checkpoint below the total appeared before training ended"
    assert first.returncode == -signal.SIGKILL
    assert not (out / "report.json").exists()
    assert not list(checkpoints.glob(".checkpoint-*"))  # atomic writes leave no partial file

    resumed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--quiet", "--resume", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["policy"]["steps"] == STEPS
    assert report["policy"]["resumed_from"] >= killed_after[-1]
    assert 0 < report["policy"]["best_step"] <= STEPS and report["policy"]["best_step"] % EVERY == 0
    policy = load_policy(out / "policy.pt")
    assert len(policy.module.route(["a query about nothing"], 300.0)) == 1


def test_resume_needs_a_run_directory(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--quiet", "--resume", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "no config.yaml" in done.stderr
