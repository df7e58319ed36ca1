"""``train.py --refit-all``: the report stays held out, ``policy.pt`` is the configuration trained on every query.

The expected refit policies are built here from the layers' own pieces (featurizer, reward model,
LinUCB), not through :mod:`training.refit`, so a refit that left out a split, kept the training
split's featurizer or its reward model, or exported the evaluated agent would decide otherwise.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, run_train

from agents.base import Agent, FeaturizedSplit
from agents.linucb import LinUCB
from data.featurizer import TextFeaturizer
from data.loading import load_log
from data.routing_log import RoutingLog
from data.schema import DataError
from data.splits import SplitFractions
from data.synth import SynthConfig, generate, write
from envs.estimators import RewardModel, counterfactual_log, logged_outcomes
from evaluation.budget import BudgetTarget
from policies.artifact import load_policy
from policies.faults import FAULT_VARIABLE
from training.checkpoints import CHECKPOINT, read_checkpoint
from training.cli import main
from training.config import RunConfig, load_config
from training.learning import learn
from training.run import RunResult, prepare_directory, train
from training.tensorboard import TensorBoardLogger

DEFAULT = ROOT / "configs" / "default.yaml"
WEIGHTS = (0.0, 300.0, 3000.0)


def _train(out: Path, overrides: list[str], refit: bool) -> RunResult:
    """``train.py [--set ...] [--refit-all]`` in-process, on the default configuration."""
    prepare_directory(out, overwrite=False)
    return train(load_config(DEFAULT, overrides), out, quiet=True, refit=refit)


def _routes(policy: Path, queries: list[str]) -> dict[float, list[str]]:
    """The exported policy's decisions on ``queries`` at each of :data:`WEIGHTS`."""
    module = load_policy(policy).module
    return {weight: list(module.route(queries, weight)) for weight in WEIGHTS}


def _linucb_on_every_query(config: RunConfig, log: RoutingLog) -> tuple[LinUCB, np.ndarray, RoutingLog]:
    """LinUCB of ``config`` fitted on all of ``log`` (a bandit log: its DM table), with its featurizer on all texts.

    Returns the agent, every query's features and the table it learned from.
    """
    assert log.n_queries <= config.featurizer.fit_sample  # so every text fits the featurizer, no sample
    featurizer = TextFeaturizer(config.featurizer).fit(log.queries)
    features = featurizer.transform(log.queries)
    if log.feedback == "bandit":
        actions, _, quality, cost = logged_outcomes(log)
        model = RewardModel(log.n_models, config.env.reward_model)
        model.fit(features, actions, quality, cost)
        log = counterfactual_log(log, model.predict(features), "dm", config.env.max_weight)
    agent = LinUCB(log.n_models, featurizer.dimension, config.agent.linucb, config.reward.cost_weight)
    agent.fit(features, log.quality, log.cost)
    return agent, features, log


def _decisions(agent: Agent, features: np.ndarray, models: tuple[str, ...]) -> dict[float, list[str]]:
    return {weight: [models[i] for i in agent.predict(features, weight)] for weight in WEIGHTS}


def _tuned(report: dict[str, Any]) -> list[str]:
    """``--set`` overrides that pin the values the run's tuning chose (its featurizer values and LinUCB's ridge)."""
    chosen = report["tuning"]["chosen"]
    return [f"featurizer.{key}={chosen[key]}" for key in ("min_df", "components", "whiten")] + [
        f"agent.linucb.ridge={chosen['ridge']}"
    ]


def _without_export(report: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in report.items() if key != "exported_policy"}


@pytest.fixture(scope="module")
def refit_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """``python train.py --refit-all`` (configs/default.yaml), in-process."""
    return _train(tmp_path_factory.mktemp("refit") / "run", [], refit=True)


def test_refit_policy_decides_as_the_configuration_trained_on_every_query(
    refit_run: RunResult, demo_run: RunResult
) -> None:
    config = load_config(DEFAULT, _tuned(refit_run.report))  # the refit is the tuned configuration's
    log = load_log(config.data.path).log
    refit = _routes(refit_run.directory / "policy.pt", log.queries)
    assert refit == _decisions(*_linucb_on_every_query(config, log)[:2], log.models)
    evaluated = _routes(demo_run.directory / "policy.pt", log.queries)
    assert refit != evaluated  # more data changed decisions, so exporting the evaluated agent would fail above


def test_refit_keeps_the_held_out_report_and_says_what_policy_pt_was_trained_on(
    refit_run: RunResult, demo_run: RunResult
) -> None:
    refit, plain = refit_run.report, demo_run.report
    assert _without_export(refit) == _without_export(plain)  # the metrics are the evaluated policy's, held out
    counts = plain["split"]["queries"]
    assert plain["exported_policy"]["trained_on"] == "train+validation"  # tuned: validation had nothing to do
    assert plain["exported_policy"]["held_out_metrics"]
    assert plain["exported_policy"]["queries"] == counts["train"] + counts["validation"]
    exported = refit["exported_policy"]
    assert exported["trained_on"] == "all" and not exported["held_out_metrics"]
    assert exported["queries"] == exported["steps"] == sum(counts.values()) == refit["data"]["queries"]
    assert exported["cost_weight"] == refit["policy"]["cost_weight"]
    assert exported["cost_weight_source"] == "the evaluated policy's operating weight"
    markdown = (refit_run.directory / "report.md").read_text(encoding="utf-8")
    assert "**Exported policy (refit on all the data):**" in markdown
    assert f"refit with the same configuration on all {refit['data']['queries']} queries" in markdown
    assert "**Exported policy (trained on the training and validation splits):**" in (
        demo_run.directory / "report.md"
    ).read_text()


def test_the_policy_metadata_says_what_it_was_trained_on(refit_run: RunResult, demo_run: RunResult) -> None:
    for run in (refit_run, demo_run):
        metadata = load_policy(run.directory / "policy.pt").metadata
        assert metadata["training_data"] == run.report["exported_policy"]
        assert metadata["metrics"]["aiq"] == run.report["frontier"]["aiq"]
    assert (refit_run.directory / "tb" / "refit").is_dir()


def test_a_bandit_log_is_refit_on_its_estimated_table_over_every_round(tmp_path: Path) -> None:
    data = tmp_path / "bandit.jsonl"
    write(generate(SynthConfig(queries=600, bandit=True, logging_policy="uniform", seed=4)), data)
    overrides = [f"data.path={data}", "evaluation.bootstrap=0"]
    result = _train(tmp_path / "run", overrides, refit=True)
    assert result.report["exported_policy"]["queries"] == 600
    log = load_log(data).log
    expected = _decisions(*_linucb_on_every_query(load_config(DEFAULT, overrides), log)[:2], log.models)
    assert _routes(result.directory / "policy.pt", log.queries) == expected


def test_a_target_cost_is_calibrated_anew_for_the_refit_policy_on_every_query(tmp_path: Path) -> None:
    """The weight the evaluation chose on validation was the evaluated policy's; the refit gets the rule's own pick."""
    target = 0.0002
    config = load_config(DEFAULT, ["evaluation.bootstrap=0"])
    prepare_directory(tmp_path / "run", overwrite=False)
    result = train(config, tmp_path / "run", quiet=True, target=BudgetTarget("cost", target), refit=True)
    exported, calibration = result.report["exported_policy"], result.report["exported_policy"]["calibration"]
    assert exported["cost_weight_source"].startswith("the --target-* rule applied to the refit policy")
    assert calibration["target"] == {"kind": "cost", "value": target} and calibration["met_in_sample"]
    assert load_policy(result.directory / "policy.pt").default_cost_weight == exported["cost_weight"]
    tuned = load_config(DEFAULT, ["evaluation.bootstrap=0", *_tuned(result.report)])
    agent, features, log = _linucb_on_every_query(tuned, load_log(config.data.path).log)
    rows = np.arange(log.n_queries)
    cost = log.cost[rows, agent.predict(features, exported["cost_weight"])]
    assert cost.mean() == pytest.approx(calibration["in_sample"]["mean_cost"])
    assert cost.mean() + cost.std() / np.sqrt(len(cost)) <= target  # the rule's "met", on every query
    assert exported["cost_weight"] != result.report["budget"]["cost_weight"]  # not the evaluated policy's pick


ONLINE = ["agent.learning=online", "agent.online_steps=3000", "agent.checkpoint_every=200", "evaluation.bootstrap=0"]


@pytest.fixture(scope="module")
def online_refit(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """LinUCB learning online for 3,000 steps, keep-best every 200 on validation, with ``--refit-all``."""
    return _train(tmp_path_factory.mktemp("online") / "run", ONLINE, refit=True)


def test_an_online_refit_stops_in_the_evaluated_policys_state_of_learning(
    online_refit: RunResult, tmp_path: Path
) -> None:
    """Keep-best exported step 2,000 of 3,000: the refit learns 2,000 steps on every query, as if configured so."""
    policy = online_refit.report["policy"]
    assert policy["best_step"] < policy["steps"] == 3000  # an earlier state was exported, so the refit stops
    assert online_refit.report["exported_policy"]["steps"] == policy["best_step"]
    steps = f"agent.online_steps={policy['best_step']}"
    config = load_config(DEFAULT, [*ONLINE[:1], steps, *ONLINE[2:], *_tuned(online_refit.report)])
    log = load_log(config.data.path).log
    everything = FeaturizedSplit(log, TextFeaturizer(config.featurizer).fit(log.queries).transform(log.queries))
    nothing = FeaturizedSplit(log.subset(np.arange(0)), everything.features[:0])
    logger = TensorBoardLogger(tmp_path / "tb")
    agent = learn(config, everything, nothing, logger, tmp_path / "checkpoints", False)[0]
    logger.close()
    expected = _decisions(agent, everything.features, log.models)
    assert _routes(online_refit.directory / "policy.pt", log.queries) == expected


def test_a_refit_killed_at_its_checkpoint_resumes_to_the_uninterrupted_refit(
    online_refit: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run saves every 200 steps to 3,000 and at the end (16 checkpoints); the 17th is the refit's, at 200."""
    out = tmp_path / "run"
    settings = [argument for setting in ONLINE for argument in ("--set", setting)]
    monkeypatch.setenv(FAULT_VARIABLE, "checkpoint-renamed:17")
    killed = run_train("--out", str(out), *settings, "--refit-all")
    monkeypatch.delenv(FAULT_VARIABLE)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert read_checkpoint(out / "checkpoints" / "refit" / CHECKPOINT)["learner"]["steps_done"] == 200
    resumed = run_train("--resume", str(out), "--refit-all")
    assert resumed.returncode == 0, resumed.stderr
    assert "policy.pt: refit on all" in resumed.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["exported_policy"] == online_refit.report["exported_policy"]
    queries = load_log(load_config(DEFAULT, []).data.path).log.queries
    assert _routes(out / "policy.pt", queries) == _routes(online_refit.directory / "policy.pt", queries)


def test_a_test_share_of_0_is_refused_with_the_way_to_train_on_everything() -> None:
    with pytest.raises(DataError, match=r"keep a test split and pass train\.py --refit-all"):
        SplitFractions(0.9, 0.1, 0.0)


def test_refit_all_with_ray_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quiet", "--out", str(tmp_path / "run"), "--refit-all", "--ray"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("train.py: error: --refit-all") and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before anything is written
