"""``python -m training.compare``: fold schemes, the best peer, embeddings on the same folds, the reference.

Small synthetic logs (a few hundred queries, each with its topic as its task) keep every test to
seconds; the routers are LinUCB and kNN, which fit in one pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, synthetic_log

import training.compare as compare_module
from data.loading import load_log
from data.routing_log import RoutingLog
from data.synth import SynthConfig, generate, write
from evaluation.evaluate import EvaluationConfig, EvaluationPlan, best_single_model, evaluate
from training.compare import Folds, Router, cross_validate, main
from training.config import RunConfig, load_config

CONFIG = ROOT / "configs" / "default.yaml"
QUICK = ["--set", "featurizer.components=4", "--set", "evaluation.bootstrap=50", "--agents", "linucb,knn"]


def synth_log(path: Path, embedding: bool = False, topics: int = 3, queries: int = 300) -> Path:
    """A synthetic log whose tasks are its topics; with ``embedding``, each query's topic one-hot plus noise."""
    synth = generate(SynthConfig(queries=queries, models=3, topics=topics, seed=5))
    write(synth, path)
    if embedding:
        rng = np.random.default_rng(0)
        vectors = np.eye(topics)[synth.topic] + rng.normal(0.0, 0.1, size=(queries, topics))
        by_id = dict(zip(synth.query_ids, vectors.round(4).tolist()))
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        path.write_text("".join(json.dumps(row | {"embedding": by_id[row["query_id"]]}) + "\n" for row in rows))
    return path


def run(tmp_path: Path, data: Path, *args: str) -> dict[str, Any]:
    """The comparison's compare.json (exit status 0 asserted)."""
    out = tmp_path / "out"
    assert main(["--config", str(CONFIG), "--data", str(data), "--out", str(out), *QUICK, *args]) == 0
    markdown = (out / "compare.md").read_text(encoding="utf-8")
    return json.loads((out / "compare.json").read_text(encoding="utf-8")) | {"markdown": markdown}


def config() -> RunConfig:
    return load_config(CONFIG, ["featurizer.components=4"])


def test_leaving_one_task_out_trains_each_fold_on_the_other_tasks_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = load_log(synth_log(tmp_path / "log.jsonl")).log
    folds = Folds.by_task(log)
    assert folds.names == ("topic-0", "topic-1", "topic-2")
    held = np.concatenate([folds.held_out(fold) for fold in range(3)])
    assert sorted(held.tolist()) == list(range(log.n_queries))  # every query held out exactly once
    trained_on: list[set[str]] = []
    fit_fold = compare_module.fit_fold

    def spy(config: RunConfig, kind: str, train: RoutingLog, *args: Any) -> Any:
        assert train.tasks is not None
        trained_on.append(set(train.tasks.tolist()))
        return fit_fold(config, kind, train, *args)

    monkeypatch.setattr(compare_module, "fit_fold", spy)
    cross_validate(log, config(), [Router("linucb")], folds, np.array([0.0, 300.0]))
    assert trained_on == [{"topic-1", "topic-2"}, {"topic-0", "topic-2"}, {"topic-0", "topic-1"}]


def test_compare_by_task_reports_its_scheme_each_task_and_the_best_peer(tmp_path: Path) -> None:
    report = run(tmp_path, synth_log(tmp_path / "log.jsonl"), "--folds-by", "task")
    assert (report["folds_by"], report["folds"]) == ("task", 3)
    assert report["fold_queries"] == {
        name: entry["queries"] for name, entry in report["per_fold"].items()
    } and sum(report["fold_queries"].values()) == 300
    assert set(report["per_fold"]["topic-0"]["aiq"]) == {"linucb", "knn"}
    assert report["best_peer"] == "knn"
    difference = report["aiq_difference_vs_best_peer"]["linucb - knn"]
    assert difference == report["aiq_difference_vs_first"]["linucb - knn"]
    assert difference["value"] == pytest.approx(report["agents"]["linucb"]["aiq"] - report["agents"]["knn"]["aiq"])
    assert "leave-one-task-out, 3 tasks" in report["markdown"] and "| task left out |" in report["markdown"]
    assert "Best peer" in report["markdown"]


def test_compare_by_query_is_the_default(tmp_path: Path) -> None:
    report = run(tmp_path, synth_log(tmp_path / "log.jsonl"), "--folds", "3")
    assert (report["folds_by"], report["folds"], list(report["fold_queries"])) == ("query", 3, ["1", "2", "3"])
    assert "3 folds by query" in report["markdown"]


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("no tasks", ["--folds-by", "task"], "needs a 'task' column"),
        ("one task", ["--folds-by", "task"], "needs at least 2 tasks"),
        ("tasks", ["--folds-by", "task", "--folds", "3"], "--folds is for --folds-by query"),
        ("tasks", ["--inputs", "text,embedding"], "--inputs embedding needs an 'embedding' column"),
        ("tasks", ["--inputs", "pixels"], "unknown --inputs value 'pixels'"),
    ],
)
def test_a_fold_scheme_or_input_the_log_cannot_give_is_a_one_line_user_error(
    setup: str, args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = synth_log(tmp_path / "log.jsonl", topics=1 if setup == "one task" else 3, queries=40)
    if setup == "no tasks":
        rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
        data.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "task"}) + "\n" for row in rows))
    assert main(["--config", str(CONFIG), "--data", str(data), "--out", str(tmp_path / "out"), *QUICK, *args]) == 2
    error = capsys.readouterr().err
    assert error.startswith("compare: error:") and message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "compare.json").exists()


def test_each_agent_also_reads_the_logs_embeddings_on_the_same_folds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--inputs text,embedding``: ``linucb[embedding]`` beside ``linucb``, trained on the same queries.

    The embeddings carry each query's topic, on which the best model depends: routing on them
    beats the single models.
    """
    trained: dict[str, list[list[str]]] = {"text": [], "embedding": []}
    fit_fold = compare_module.fit_fold

    def spy(config: RunConfig, kind: str, train: RoutingLog, *args: Any) -> Any:
        trained[config.input].append(train.query_ids.tolist())
        return fit_fold(config, kind, train, *args)

    monkeypatch.setattr(compare_module, "fit_fold", spy)
    report = run(tmp_path, synth_log(tmp_path / "log.jsonl", embedding=True), "--inputs", "text,embedding")
    assert list(report["agents"]) == ["linucb", "knn", "linucb[embedding]", "knn[embedding]"]
    assert report["agents"]["linucb[embedding]"] | {"kind": "linucb", "input": "embedding"} == (
        report["agents"]["linucb[embedding]"]
    )
    assert trained["text"] == trained["embedding"] and len(trained["text"]) == 5 * 2
    assert report["agents"]["linucb[embedding]"]["aiq"] > report["zero_router"]["aiq"]
    assert "linucb - linucb[embedding]" in report["aiq_difference_vs_first"]


def test_the_default_reference_is_the_best_single_model_cheaper_on_ties() -> None:
    """Not the dearest model: "cost to reach 95%" asks for the best quality a single model gives."""
    quality = np.array([[0.9, 0.6, 0.9], [0.7, 0.6, 0.7]])  # m0 and m2 tie on quality; m1, the dearest, is worst
    cost = np.array([[2.0, 5.0, 1.0], [2.0, 5.0, 1.0]])
    log = synthetic_log(quality, cost)
    assert best_single_model(log) == "m2"
    plan = EvaluationPlan(EvaluationConfig(bootstrap=0), seed=0, cost_weight=None)
    frontier = evaluate(log, lambda weight: np.zeros(2, dtype=np.int64), plan).sections["frontier"]
    assert frontier["reference_model"] == "m2"
    pinned = EvaluationPlan(EvaluationConfig(bootstrap=0, reference_model="m1"), seed=0, cost_weight=None)
    pinned_frontier = evaluate(log, lambda weight: np.zeros(2, dtype=np.int64), pinned).sections["frontier"]
    assert pinned_frontier["reference_model"] == "m1"
