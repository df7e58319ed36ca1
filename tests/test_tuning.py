"""Self-tuning (training/tuning.py): it picks the right values, is deterministic; --no-tune pins the given ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import ROOT, run_train

from data.routing_log import RoutingLog
from training.config import RunConfig, load_config
from training.tuning import tune


def topic_log(n: int = 240, seed: int = 0) -> RoutingLog:
    """Two topics told apart only by their words (every text has 12 words): model 0 answers one, model 1 the other.

    A router that sees the words routes every query right; one that sees only the length (no
    components) or shrinks every weight to nothing (a huge ridge) cannot tell the topics apart.
    """
    rng = np.random.default_rng(seed)
    topics = rng.integers(2, size=n)
    vocabulary = [["orbit", "planet", "comet", "nebula"], ["sonnet", "verse", "rhyme", "stanza"]]
    filler = [f"w{i}" for i in range(40)]
    queries = [
        " ".join(list(rng.choice(vocabulary[t], 4)) + list(rng.choice(filler, 8))) for t in topics.tolist()
    ]
    quality = np.stack([topics == 0, topics == 1], axis=1).astype(np.float64)
    cost = np.tile([1e-4, 2e-4], (n, 1))
    return RoutingLog(
        models=("m0", "m1"),
        query_ids=np.array([f"q{i}" for i in range(n)], dtype=object),
        queries=queries,
        quality=quality,
        cost=cost,
    )


def topic_config(*extra: str) -> RunConfig:
    """A configuration whose given values are the wrong ones, and a grid holding the right ones."""
    return load_config(
        None,
        [
            "featurizer.min_df=1",
            "featurizer.components=0",
            "agent.linucb.ridge=1000000.0",
            "tuning.min_df=[1]",
            "tuning.components=[0, 8]",
            "tuning.whiten=[true]",
            "tuning.ridge=[1.0, 1000000.0]",
            *extra,
        ],
    )


def without_time(report: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in report.items() if key != "seconds"}


@pytest.mark.parametrize("objective", ["aiq", "reward"])
def test_tuning_picks_the_components_and_ridge_that_see_the_topics(objective: str) -> None:
    config = topic_config(f"tuning.objective={objective}", "reward.cost_weight=100")
    tuned = tune(config, topic_log())
    chosen = tuned.report["chosen"]
    assert (chosen["components"], chosen["ridge"]) == (8, 1.0)
    assert chosen["score"] > tuned.report["given"]["score"]
    assert tuned.config.featurizer.components == 8 and tuned.config.agent.linucb.ridge == 1.0
    assert len(tuned.report["scores"]) == 4  # 0 or 8 components × 2 ridges, the given values among them


def test_tuning_is_deterministic_for_a_seed() -> None:
    config = load_config(None, ["tuning.components=[0, 4, 8]", "tuning.ridge=[0.3, 3.0]", "tuning.min_df=[1, 2]"])
    log = topic_log(seed=3)
    first, second = tune(config, log), tune(config, log)
    assert without_time(first.report) == without_time(second.report)
    assert first.config == second.config


def test_tuning_tokenizes_the_queries_once_for_every_fold_and_min_df(monkeypatch: pytest.MonkeyPatch) -> None:
    from data.tokenizer import Tokens

    tokenized: list[int] = []
    tokens_of = Tokens.of

    def counted(cls: type[Tokens], texts: list[str]) -> Tokens:
        tokenized.append(len(texts))
        return tokens_of(texts)

    monkeypatch.setattr(Tokens, "of", classmethod(counted))
    log = topic_log()
    tuned = tune(load_config(None, ["tuning.min_df=[1, 2]", "tuning.components=[0, 8]"]), log)
    assert tuned.report["folds"] == 5 and tuned.report["grid"]["min_df"] == [1, 2]
    assert tokenized == [log.n_queries]


def test_tuning_off_keeps_the_configuration_object() -> None:
    config = topic_config("tuning.enabled=false")
    tuned = tune(config, topic_log())
    assert tuned.config is config and tuned.report == {"enabled": False}


def test_a_grid_without_candidates_is_a_configuration_error() -> None:
    from data.schema import DataError

    with pytest.raises(DataError, match=r"tuning\.ridge needs at least one candidate"):
        load_config(None, ["tuning.ridge=[]"])


def test_train_reports_the_tuning_and_learns_from_train_and_validation(demo_run: Any) -> None:
    report = demo_run.report
    tuning = report["tuning"]
    chosen = tuning["chosen"]
    assert tuning["enabled"] and tuning["folds"] == 5 and tuning["queries"] == report["split"]["queries"]["train"]
    assert max(entry["score"] for entry in tuning["scores"]) == chosen["score"]
    featurizer = report["featurizer"]
    assert (featurizer["min_df"], featurizer["components"], featurizer["whiten"]) == (
        chosen["min_df"], chosen["components"], chosen["whiten"],
    )
    counts = report["split"]["queries"]
    assert report["exported_policy"]["trained_on"] == "train+validation"
    assert report["exported_policy"]["queries"] == counts["train"] + counts["validation"]
    assert report["policy"]["steps"] == counts["train"] + counts["validation"]
    text = (demo_run.directory / "report.md").read_text(encoding="utf-8")
    assert "## Tuning" in text and "**chosen**" in text
    sessions = sorted(path.name for path in (demo_run.directory / "tb" / "tuning").iterdir())
    assert len(sessions) == len(tuning["scores"])


def test_no_tune_trains_with_the_given_values_exactly(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_train(
        "--out", str(out), "--no-tune", "--set", "featurizer.components=8", "--set", "agent.linucb.ridge=3"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    given = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text(encoding="utf-8"))["featurizer"]
    assert report["tuning"] == {"enabled": False}
    assert report["featurizer"]["components"] == 8 and report["featurizer"]["min_df"] == given["min_df"]
    assert report["featurizer"]["whiten"] is True
    assert report["exported_policy"]["trained_on"] == "train"
    config = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert config["tuning"]["enabled"] is False and config["agent"]["linucb"]["ridge"] == 3
    assert "Off (--no-tune)" in (out / "report.md").read_text(encoding="utf-8")


def test_a_supervised_peer_is_not_tuned_here_and_the_report_says_why() -> None:
    config = topic_config("agent.kind=mlp")
    tuned = tune(config, topic_log())
    assert tuned.config is config
    assert tuned.report == {
        "enabled": True,
        "skipped": "mlp chooses its own hyperparameters by cross-validation when it fits (agent.mlp)",
    }


def test_tuning_folds_hold_out_whole_tasks_when_the_log_has_enough_of_them() -> None:
    from dataclasses import replace

    from data.schema import DataError
    from training.tuning import tuning_folds

    log = topic_log(n=300)
    tasks = np.array([f"task-{i % 7}" for i in range(log.n_queries)], dtype=object)
    with_tasks = replace(log, tasks=tasks)
    folds = tuning_folds(with_tasks, 5, "auto", seed=0)
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3, 4]
    for task in set(tasks.tolist()):  # every task lies in one fold
        assert len(set(folds[tasks == task].tolist())) == 1
    assert np.array_equal(folds, tuning_folds(with_tasks, 5, "auto", seed=0))
    by_query = tuning_folds(with_tasks, 5, "query", seed=0)
    assert any(len(set(by_query[tasks == task].tolist())) > 1 for task in set(tasks.tolist()))
    assert np.array_equal(tuning_folds(log, 5, "auto", seed=0), tuning_folds(log, 5, "query", seed=0))  # no tasks
    assert load_config(None, []).tuning.folds_by == "query"
    with pytest.raises(DataError, match="needs a task on every training query"):
        tuning_folds(log, 5, "task", seed=0)


def test_ppo_tries_its_settings_on_the_chosen_representation_within_its_time() -> None:
    config = topic_config(
        "agent.kind=ppo", "agent.ppo.total_steps=1024", "agent.ppo.eval_every=512", "tuning.ppo_seconds=3",
        "reward.cost_weight=100",
    )
    tuned = tune(config, topic_log())
    assert tuned.report["chosen"]["components"] == 8  # the representation first, by the ridge criterion
    ppo = tuned.report["ppo"]
    assert ppo["trials"] and ppo["seconds_budget"] == 3
    assert ppo["trials"][0]["settings"]["learning_rate"] == config.agent.ppo.learning_rate  # the given values first
    chosen = {key: getattr(tuned.config.agent.ppo, key) for key in ppo["chosen"]}
    assert {key: list(value) if isinstance(value, tuple) else value for key, value in chosen.items()} == ppo["chosen"]
    assert "seconds" not in ppo["trials"][0] and "seconds_used" not in ppo  # no clock reading in the report
