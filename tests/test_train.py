"""train.py end to end: the run directory, the report, quality targets, determinism, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, run_train, run_train_on_routerbench
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from threadpoolctl import threadpool_info

import training.run as run_module
from data.loading import load_log
from data.splits import split
from evaluation.frontier import Frontier
from training.cli import main
from training.config import load_config
from training.run import RunResult

REPORT_KEYS = {
    "data": {"fingerprint", "rows_read", "rows_accepted", "rows_rejected", "rejected_by_reason"},
    "split": {"fractions", "queries"},
    "policy": {"agent", "cost_weight"},
    "test": {"mean_quality", "mean_cost", "mean_reward", "share_per_model"},
    "frontier": {"aiq", "cost_range", "points"},
}


def test_run_directory_and_report_keys(demo_run: RunResult) -> None:
    out = demo_run.directory
    for name in ("policy.pt", "report.json", "report.md", "config.yaml", "rejected.jsonl"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    for section, keys in REPORT_KEYS.items():
        assert keys <= set(report[section]), section
    assert set(report["baselines"]) >= {"random", "cheapest", "best single", "oracle"}
    for metrics in report["baselines"].values():
        assert {"mean_quality", "mean_cost", "mean_reward", "share_per_model"} <= set(metrics)
    data = report["data"]
    assert data["rows_read"] == data["rows_accepted"] + data["rows_rejected"]
    assert sum(report["split"]["queries"].values()) == data["queries"]
    assert "| **linucb** |" in (out / "report.md").read_text()


def test_tensorboard_scalars(demo_run: RunResult) -> None:
    events = EventAccumulator(str(demo_run.directory / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"charts/reward", "charts/quality", "charts/cost", "charts/regret"} <= tags
    assert events.Scalars("charts/reward")[-1].value == pytest.approx(demo_run.report["test"]["mean_reward"])


def test_linucb_beats_single_models_and_closes_the_gap(demo_run: RunResult) -> None:
    """On the demo data: above every single model and random; >= 70% of the way to the oracle."""
    report = demo_run.report
    config = load_config(ROOT / "configs" / "default.yaml", [])
    log = load_log(config.data.path).log
    test = log.subset(split(log, config.data.fractions, config.seed).test)
    weight = config.reward.cost_weight
    assert test.expected_quality is not None
    single_realised = (test.quality - weight * test.cost).mean(axis=0)
    single_expected = (test.expected_quality - weight * test.cost).mean(axis=0)
    assert report["test"]["mean_reward"] > single_realised.max()
    assert report["test"]["mean_reward"] > report["baselines"]["random"]["mean_reward"]
    policy = report["test_expected"]["mean_reward"]
    oracle = report["baselines"]["expected oracle"]["mean_reward"]
    assert oracle == pytest.approx((test.expected_quality - weight * test.cost).max(axis=1).mean())
    closed = (policy - single_expected.max()) / (oracle - single_expected.max())
    assert closed >= 0.70, f"LinUCB closes {closed:.1%} of the gap to the expected-quality oracle"


def test_demo_report_tells_the_truth_about_routing(demo_run: RunResult) -> None:
    """The README's demo story: frontier-xl, the dearest model, is the best single model on the
    held-out queries (the reference); the policy gets 95% of its quality at under half its cost and reaches 100%;
    and at a small cost weight it sends frontier-xl the hard queries (two difficulty markers,
    ground truth from the generator) more often than the plain ones."""
    import torch

    from data.synth import SynthConfig, generate

    frontier = demo_run.report["frontier"]
    single = frontier["single_models"]
    assert frontier["reference_model"] == "frontier-xl" == max(single, key=lambda m: single[m]["quality"])
    assert max(single, key=lambda m: single[m]["cost"]) == "frontier-xl"
    assert frontier["cost_to_reach"]["95%"]["policy_cost_share_of_reference"] < 0.5
    assert frontier["cost_to_reach"]["100%"]["policy_cost"] is not None

    demo = generate(SynthConfig())  # data/demo/demo.jsonl, with each query's difficulty
    config = load_config(ROOT / "configs" / "default.yaml", [])
    log = load_log(config.data.path).log
    held_out = set(log.query_ids[split(log, config.data.fractions, config.seed).test].tolist())
    rows = [i for i, query_id in enumerate(demo.query_ids) if query_id in held_out]
    policy = torch.jit.load(str(demo_run.directory / "policy.pt"))
    chosen = np.array(policy.route([demo.queries[i] for i in rows], 30.0))
    markers = demo.difficulty[rows]
    share_plain, share_hard = ((chosen[markers == m] == "frontier-xl").mean() for m in (0, 2))
    assert share_hard >= 0.6 and share_hard > share_plain + 0.2, (share_plain, share_hard)


def test_same_seed_same_report_in_two_processes(tmp_path: Path) -> None:
    first, second = run_train("--out", str(tmp_path / "a")), run_train("--out", str(tmp_path / "b"))
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    report_a = json.loads((tmp_path / "a" / "report.json").read_text())
    report_b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report_a == report_b
    assert run_train("--out", str(tmp_path / "c"), "--seed", "1").returncode == 0
    assert json.loads((tmp_path / "c" / "report.json").read_text())["split"] != report_a["split"]
    assert "serve it:  python serve.py --policy" in first.stdout


def test_user_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    cases = [
        ("--out", str(tmp_path / "busy")),
        ("--out", str(tmp_path / "busy" / "file")),  # a file, not a folder: was a NotADirectoryError traceback
        ("--out", str(tmp_path / "busy"), "--overwrite"),  # not a folder routerl wrote: deletes nothing
        ("--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")),
        ("--set", "agent.linucb.alhpa=1", "--out", str(tmp_path / "y")),
        ("--set", "reward.cost_weight=cheap", "--out", str(tmp_path / "z")),
        ("--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "w")),
    ]
    first = run_train(*cases[0])  # a real process: the exit status and all it prints
    outcomes = [(first.returncode, first.stderr)]
    for args in cases[1:]:  # the same entry point in this process (a second each saved)
        try:
            status = main(["--quiet", *args])
        except SystemExit as exit_:
            status = exit_.code
        outcomes.append((status, capsys.readouterr().err))
    for args, (status, stderr) in zip(cases, outcomes, strict=True):
        assert status == 2, (args, stderr)
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert "Traceback" not in stderr and stderr.startswith("train.py: error:")
    assert (tmp_path / "busy" / "file").read_text() == "x"


def test_set_overrides_reach_the_run(tmp_path: Path) -> None:
    done = run_train(
        "--out", str(tmp_path / "run"), "--set", "reward.cost_weight=50", "--set", "agent.linucb.ridge=2.5"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["policy"]["cost_weight"] == 50
    resolved = (tmp_path / "run" / "config.yaml").read_text()
    assert "ridge: 2.5" in resolved and "cost_weight: 50.0" in resolved


@pytest.mark.parametrize(("setting", "expected"), [(1, 1), (None, "default")])
def test_blas_threads_hold_during_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: int | None, expected: int | str
) -> None:
    seen: list[int] = []
    learn = run_module.learn

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
        return learn(*args, **kwargs)

    monkeypatch.setattr(run_module, "learn", spy)
    config = load_config(ROOT / "configs" / "default.yaml", [f"blas_threads={'null' if setting is None else setting}"])
    default = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    run_module.prepare_directory(tmp_path / "run", overwrite=False)
    run_module.train(config, tmp_path / "run", quiet=True)
    assert seen and seen == ([1] * len(seen) if expected == 1 else default)
    assert [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"] == default


def test_online_learning_through_the_env(tmp_path: Path) -> None:
    done = run_train(
        "--out",
        str(tmp_path / "online"),
        "--set",
        "agent.learning=online",
        "--set",
        "agent.online_steps=3000",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "online" / "report.json").read_text())
    assert report["policy"]["steps"] == 3000
    assert report["test"]["mean_reward"] > report["baselines"]["random"]["mean_reward"]
    events = EventAccumulator(str(tmp_path / "online" / "tb"))
    events.Reload()
    assert len(events.Scalars("charts/train_reward")) == 6


def test_routerbench_beats_the_single_model_hull(routerbench: Path, tmp_path: Path) -> None:
    split = ["--set", "data.fractions.train=0.6", "--set", "data.fractions.validation=0.1"]  # the default split
    done = run_train_on_routerbench(routerbench, tmp_path / "rb", *split)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "rb" / "report.json").read_text())
    data = report["data"]
    assert data["rows_read"] == data["rows_accepted"] + data["rows_rejected"]
    assert data["rejected_by_reason"]["blank score"] > 0
    assert set(data["rejected_by_reason"]) <= {
        "blank score",
        "conflicting text",
        "incomplete query",
        "duplicate outcome",
    }
    rejected = (tmp_path / "rb" / "rejected.jsonl").read_text().splitlines()
    assert len(rejected) == data["rows_rejected"]
    frontier = report["frontier"]
    hull = frontier["single_models"]
    costs = np.array([v["cost"] for v in hull.values()])
    qualities = np.array([v["quality"] for v in hull.values()])
    zero = Frontier.from_points(costs, qualities)
    point = frontier["operating_point"]
    margin = point["quality"] - float(zero.quality_at(point["cost"]))
    assert margin == pytest.approx(frontier["margin_over_zero_router"])
    assert margin > 0, f"LinUCB lies {margin:+.4f} relative to the single models' hull"
