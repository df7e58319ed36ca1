"""Checkpoints and resume: a run killed at any write point and resumed gives the uninterrupted run's result.

Kills are injected, not raced: ``ROUTERL_FAULT=<point>:<n>`` makes ``train.py`` SIGKILL itself the
n-th time it reaches a named point of a checkpoint write (policies/faults.py). LinUCB learning
online is exact: the checkpoint holds its statistics, θ, the environment's generator and the
keep-best state, so the resumed run plays the same episodes and ends with the same parameters
and the same report. A resume that silently dropped any of it would change the parameters, and
one that started over would report ``resumed_from`` None.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_train

from data.outputs import is_temporary
from policies.faults import CHECKPOINT_POINTS, FAULT_VARIABLE
from training.checkpoints import CHECKPOINT, read_checkpoint

STEPS, EVERY = 3000, 500
ONLINE = ["--set", "agent.learning=online", "--set", f"agent.online_steps={STEPS}",
          "--set", f"agent.checkpoint_every={EVERY}", "--set", "evaluation.bootstrap=0"]


def _report(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())


def _parameters(out: Path) -> dict[str, np.ndarray]:
    """The learner's final statistics, from the run's last checkpoint."""
    return read_checkpoint(out / "checkpoints" / CHECKPOINT)["learner"]["parameters"]


def _killed_at(point: str, out: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    """Run ``train.py ARGS`` with the fault ``point``; it must die by SIGKILL before its report."""
    monkeypatch.setenv(FAULT_VARIABLE, point)
    done = run_train(*args)
    monkeypatch.delenv(FAULT_VARIABLE)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert not (out / "report.json").exists()


def _assert_same_run(resumed: Path, uninterrupted: Path, resumed_from: int) -> None:
    report, reference = _report(resumed), _report(uninterrupted)
    assert report["policy"].pop("resumed_from") == resumed_from
    assert reference["policy"].pop("resumed_from") is None
    assert report == reference
    expected = _parameters(uninterrupted)
    for name, value in _parameters(resumed).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    assert not [entry for entry in (resumed / "checkpoints").iterdir() if is_temporary(entry.name)]  # cleaned up


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = run_train("--out", str(out), *ONLINE)
    assert done.returncode == 0, done.stderr
    report = _report(out)
    assert report["policy"]["steps"] == STEPS and 0 < report["policy"]["best_step"] <= STEPS
    return out


# The third checkpoint is step 1500: killed before it is written or before its rename, the run
# resumes from step 1000; killed after the rename, from step 1500.
@pytest.mark.slow
@pytest.mark.parametrize(("point", "resumed_from"), list(zip(CHECKPOINT_POINTS, (1000, 1000, 1500))))
def test_a_kill_at_each_write_point_then_resume_gives_the_uninterrupted_run(
    point: str, resumed_from: int, uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    _killed_at(f"{point}:3", out, monkeypatch, "--out", str(out), *ONLINE)
    resumed = run_train("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_run(out, uninterrupted, resumed_from)


@pytest.mark.slow
def test_two_kills_then_resume_give_the_uninterrupted_run(
    uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    _killed_at("checkpoint-written:2", out, monkeypatch, "--out", str(out), *ONLINE)  # on disk: step 500
    _killed_at("checkpoint-renamed:4", out, monkeypatch, "--resume", str(out))  # 1000, ..., 2500 renamed
    resumed = run_train("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_run(out, uninterrupted, 2500)


@pytest.mark.slow
def test_a_kill_after_the_last_checkpoint_resumes_to_the_same_export(
    uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final checkpoint (7th: steps 500, ..., 3000, then the end of training) is written, the report is not."""
    out = tmp_path / "run"
    _killed_at("checkpoint-renamed:7", out, monkeypatch, "--out", str(out), *ONLINE)
    resumed = run_train("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_run(out, uninterrupted, STEPS)


def test_resume_needs_a_run_directory(tmp_path: Path) -> None:
    done = run_train("--resume", str(tmp_path), timeout=120)
    assert done.returncode == 2 and "no config.yaml" in done.stderr
