"""Hyperparameter search: grid expansion, the gathered report, and real searches in-process and as Ray Tune trials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from data.schema import DataError
from training.search import SearchConfig, gather, load_search, main, run_search, trials

ROOT = Path(__file__).resolve().parent.parent


def _search_file(directory: Path, grid: dict[str, Any], **extra: Any) -> Path:
    """A search over a 300-query demo subset, without bootstrap intervals (fast trials)."""
    lines = (ROOT / "data" / "demo" / "demo.jsonl").read_text(encoding="utf-8").splitlines()
    (directory / "small.jsonl").write_text("\n".join(lines[:1500]) + "\n", encoding="utf-8")
    search = {
        "name": "tiny",
        "base": str(ROOT / "configs" / "default.yaml"),
        "set": {"data.path": str(directory / "small.jsonl"), "evaluation.bootstrap": 0},
        "grid": grid,
        **extra,
    }
    path = directory / "search.yaml"
    path.write_text(json.dumps(search), encoding="utf-8")  # JSON is YAML
    return path


def test_grid_is_the_cartesian_product_in_file_order(tmp_path: Path) -> None:
    search, base = load_search(_search_file(tmp_path, {"reward.cost_weight": [10, 30.5], "seed": [0, 1, 2]}))
    assert base == ROOT / "configs" / "default.yaml"
    grid = trials(search)
    assert [t.name for t in grid] == [f"trial-{i:03d}" for i in range(6)]
    assert grid[4].point == {"reward.cost_weight": 30.5, "seed": 1}
    assert grid[4].overrides[-2:] == ["reward.cost_weight=30.5", "seed=1"]
    assert f"data.path={tmp_path / 'small.jsonl'}" in grid[0].overrides


def test_bad_search_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="grid needs"):
        load_search(_search_file(tmp_path, {"seed": []}))
    with pytest.raises(DataError, match="invalid search file"):
        load_search(_search_file(tmp_path, {"seed": [0]}, select="speed"))
    bad_key = _search_file(tmp_path, {"agent.linucb.gamma": [1.0]})
    with pytest.raises(DataError, match="gamma"):  # before any trial runs
        run_search(bad_key, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert main([str(tmp_path / "missing.yaml")]) == 2


def test_gather_ranks_configurations_by_their_mean_over_seeds() -> None:
    search = SearchConfig(base="x.yaml", grid={"alpha": [1, 2], "seed": [0, 1]}, select="reward")
    rows = [
        {"trial": f"t{i}", "point": {"alpha": a, "seed": s}, "reward": r, "aiq": 0.0}
        for i, (a, s, r) in enumerate([(1, 0, 0.9), (1, 1, 0.1), (2, 0, 0.6), (2, 1, 0.6)])
    ]
    report = gather(search, rows)
    assert report["best"]["point"] == {"alpha": 2}  # 0.6 on average beats 0.5, though 0.9 was the best trial
    assert report["best"]["trials"] == ["t2", "t3"]
    assert [c["reward"] for c in report["configurations"]] == pytest.approx([0.6, 0.5])
    assert report["configurations"][1]["reward_std"] == pytest.approx(0.4)


@pytest.fixture(scope="module")
def search_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _search_file(tmp_path_factory.mktemp("search"), {"reward.cost_weight": [100, 1000], "seed": [0, 1]})


@pytest.fixture(scope="module")
def in_process(search_file: Path) -> dict[str, Any]:
    return run_search(search_file, search_file.parent / "in-process")


@pytest.mark.slow
def test_search_in_process_writes_trials_and_one_report(search_file: Path, in_process: dict[str, Any]) -> None:
    out = search_file.parent / "in-process"
    assert len(in_process["trials"]) == 4 and len(in_process["configurations"]) == 2
    for row in in_process["trials"]:
        run = out / row["trial"]
        report = json.loads((run / "report.json").read_text())
        assert report["frontier"]["aiq"] == row["aiq"]
        assert report["policy"]["cost_weight"] == row["point"]["reward.cost_weight"]
        assert list((run / "tb").glob("events.out.tfevents.*"))  # TensorBoard as usual
    best = in_process["best"]
    assert best["aiq"] == max(c["aiq"] for c in in_process["configurations"])
    assert (out / "best-frontier.png").stat().st_size > 0
    markdown = (out / "search.md").read_text()
    assert "| trial-003 |" in markdown and "best-frontier.png" in markdown
    assert json.loads((out / "search.json").read_text())["best"] == best


@pytest.mark.slow
def test_search_on_ray_tune_gives_the_in_process_results(
    ray_cluster: None, search_file: Path, in_process: dict[str, Any]
) -> None:
    out = search_file.parent / "on-ray"
    on_ray = run_search(search_file, out, use_ray=True)
    assert on_ray["trials"] == in_process["trials"]  # the same seeds, the same runs
    assert on_ray["best"] == in_process["best"]
    assert (out / "tune").is_dir()  # Tune's own experiment state, beside the trials' run directories
    assert all(list((out / row["trial"] / "tb").glob("events.out.tfevents.*")) for row in on_ray["trials"])
