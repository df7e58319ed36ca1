"""One training run, end to end: read → split → featurize → learn → evaluate → export → report."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from agents.base import Agent
from agents.baselines import RandomRouter, SingleModelRouter
from data.featurizer import TextFeaturizer
from data.loading import load_log
from data.prices import PriceTable
from data.routing_log import RoutingLog
from data.schema import DataError
from data.splits import hash_unit, split
from envs.estimators import PredictedOutcomes, RewardModel
from evaluation.bootstrap import Bootstrap
from evaluation.budget import BudgetTarget, budget_report, calibrate
from evaluation.evaluate import Sweep, frontier_report, metrics_with_intervals
from evaluation.figures import save_frontier
from evaluation.frontier import cost_weight_grid
from evaluation.metrics import oracle_actions, route_metrics
from evaluation.ope import counterfactual_log, off_policy_estimates
from evaluation.report import data_section, write_markdown
from training.config import RunConfig, dump_config
from training.exporting import export_policy, featurizer_summary
from training.inputs import FeaturizedSplit, Learned, RunInputs
from training.learning import learn
from training.tensorboard import TensorBoardLogger

BUDGET_GRID_POINTS = 201  # finer cost-weight grid searched for --target-cost / --target-quality


@dataclass(frozen=True)
class RunResult:
    """Where the run wrote its outputs, and its report."""

    directory: Path
    report: dict[str, Any]


def prepare_directory(out: Path, overwrite: bool) -> None:
    """Create the run directory; an existing non-empty one needs ``overwrite``."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"{out}: run directory exists and is not empty (pass --overwrite or --resume)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def train(
    config: RunConfig,
    out: Path,
    strict: bool = False,
    quiet: bool = False,
    target: BudgetTarget | None = None,
) -> RunResult:
    """Run ``config`` and write the run directory of CONTRACTS.md §3 into ``out``."""
    with threadpool_limits(limits=config.blas_threads, user_api="blas"):
        return _train(config, out, strict, quiet, target)


def _train(config: RunConfig, out: Path, strict: bool, quiet: bool, target: BudgetTarget | None) -> RunResult:
    progress = not quiet
    dump_config(config, out / "config.yaml")  # first, so that --resume can read it
    loaded = load_log(
        config.data.path,
        prices=PriceTable.load_or_default(config.data.prices),
        strict=strict,
        allow_pickle=config.data.allow_pickle,
        progress=progress,
    )
    loaded.quarantine.write(out / "rejected.jsonl")
    log = loaded.log
    splits = split(log, config.data.fractions, config.seed, config.data.split)
    if len(splits.train) == 0 or len(splits.test) == 0:
        raise DataError(f"{config.data.path}: too few queries ({log.n_queries}) to split into train and test")
    featurizer = fit_featurizer(config, log.subset(splits.train)) if config.input == "text" else None
    train_set, validation_set, test_set = (
        FeaturizedSplit(part, _features(part, featurizer))
        for part in (log.subset(splits.train), log.subset(splits.validation), log.subset(splits.test))
    )
    off_policy = None
    if log.feedback == "bandit":
        train_set, validation_set, test_set, off_policy = _counterfactual_splits(
            config, train_set, validation_set, test_set
        )

    tensorboard = TensorBoardLogger(out / "tb")
    agent, training, learned_weight = learn(config, train_set, validation_set, tensorboard, out, progress)
    inputs = RunInputs(
        data=data_section(log, config.data.path),
        models=log.models,
        fingerprint=log.fingerprint,
        split_counts=splits.counts(),
        featurizer=featurizer,
        dimension=train_set.features.shape[1],
        train_mean_quality=np.nanmean(train_set.log.quality, axis=0),
        train_mean_cost=np.nanmean(train_set.log.cost, axis=0),
    )
    learned = Learned(agent, training, learned_weight)
    return evaluate_and_export(
        config, out, inputs, learned, validation_set, test_set, tensorboard, off_policy, target, progress
    )


def evaluate_and_export(
    config: RunConfig,
    out: Path,
    inputs: RunInputs,
    learned: Learned,
    validation_set: FeaturizedSplit,
    test_set: FeaturizedSplit,
    tensorboard: TensorBoardLogger,
    off_policy: _OffPolicy | None = None,
    target: BudgetTarget | None = None,
    progress: bool = False,
) -> RunResult:
    """Evaluate on the test split; write report.json, report.md, frontier.png, TensorBoard and policy.pt."""
    agent, training, learned_weight = learned.agent, learned.training, learned.weight
    featurizer = inputs.featurizer
    steps = training["steps"]
    weights = cost_weight_grid(inputs.train_mean_quality, inputs.train_mean_cost, config.evaluation.frontier_points)
    weight = config.reward.cost_weight if learned_weight is None else learned_weight
    report_budget = None
    if target is not None:
        weight, report_budget = _calibrate(agent, inputs, validation_set, test_set, target, config)

    test = test_set.log
    bootstrap = (
        Bootstrap(test.n_queries, config.evaluation.bootstrap, config.seed) if config.evaluation.bootstrap > 0 else None
    )
    test_metrics = metrics_with_intervals(test, agent.predict(test_set.features, weight), weight, bootstrap)
    baselines = {
        "random": RandomRouter(len(inputs.models), seed=config.seed).predict(test_set.features, weight),
        "cheapest": SingleModelRouter(inputs.train_mean_quality, inputs.train_mean_cost, False, "cheapest").predict(
            test_set.features, weight
        ),
        "best single": SingleModelRouter(
            inputs.train_mean_quality, inputs.train_mean_cost, True, "best single"
        ).predict(test_set.features, weight),
    }
    if off_policy is None:  # the per-query oracle needs every model's outcome
        baselines["oracle"] = oracle_actions(test, weight)
    baseline_metrics = {
        name: metrics_with_intervals(test, actions, weight, bootstrap) for name, actions in baselines.items()
    }
    expected = test.expected_quality is not None and off_policy is None  # synthetic ground truth, every cell
    if expected:
        baseline_metrics["expected oracle"] = route_metrics(
            test, oracle_actions(test, weight, expected=True), weight, expected=True
        )
    sweep = Sweep.run(test, lambda w: agent.predict(test_set.features, w), weights, progress=progress)
    frontier = frontier_report(test, sweep, test_metrics, config.evaluation, bootstrap)

    report: dict[str, Any] = {
        "data": inputs.data,
        "split": {
            "kind": config.data.split,
            "seed": config.seed,
            "fractions": asdict(config.data.fractions),
            "queries": inputs.split_counts,
        },
        "featurizer": featurizer_summary(config, featurizer, inputs.dimension),
        "policy": {
            "agent": agent.name,
            "cost_weight": weight,
            "learning": config.agent.learning,
            "steps": steps,
            "best_step": training["best_step"],
            "resumed_from": training.get("resumed_from"),
            "score_kind": agent.score_kind,
        },
        "test": test_metrics,
        "baselines": baseline_metrics,
        "frontier": frontier,
    }
    if expected:
        report["test_expected"] = route_metrics(test, agent.predict(test_set.features, weight), weight, expected=True)
    if report_budget is not None:
        report["budget"] = report_budget
    if off_policy is not None:
        report["evaluated_on"] = "Test split, estimated by DR from bandit feedback"
        report["off_policy"] = off_policy.estimates(agent.predict(test_set.features, weight), weight, bootstrap)

    figure = save_frontier(
        frontier, f"{agent.name} on {Path(config.data.path).name} (test split)", out / "frontier.png"
    )
    tensorboard.log_metrics(test_metrics, steps)
    tensorboard.log_choices(agent.predict(test_set.features, weight), len(inputs.models), steps)
    tensorboard.log_config(yaml.safe_dump(config.to_dict(), sort_keys=False))
    tensorboard.log_hparams(
        _flatten(config.to_dict()),
        {
            "test_reward": test_metrics["mean_reward"],
            "test_quality": test_metrics["mean_quality"],
            "test_cost": test_metrics["mean_cost"],
            "aiq": frontier["aiq"],
        },
    )
    tensorboard.log_figure("charts/frontier", figure, steps)
    tensorboard.close()
    with tqdm(total=1, desc="exporting policy.pt", disable=not progress, leave=False) as bar:
        export_policy(config, inputs, agent, weight, frontier, test_metrics, out)
        bar.update()
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_markdown(report, out / "report.md")
    return RunResult(out, report)


@dataclass(frozen=True)
class _OffPolicy:
    """A bandit-feedback test split: the logged rounds and the reward model's predictions."""

    log: RoutingLog
    predictions: PredictedOutcomes
    seed: int
    max_weight: float | None

    def estimates(self, actions: np.ndarray, weight: float, bootstrap: Bootstrap | None) -> dict[str, Any]:
        """DM, IPS, SNIPS, DR and replay estimates of the policy's choices."""
        return off_policy_estimates(self.log, actions, self.predictions, weight, bootstrap, self.seed, self.max_weight)


def _counterfactual_splits(
    config: RunConfig, train_set: FeaturizedSplit, validation_set: FeaturizedSplit, test_set: FeaturizedSplit
) -> tuple[FeaturizedSplit, FeaturizedSplit, FeaturizedSplit, _OffPolicy]:
    """Turn the splits of a bandit-feedback log into counterfactual full-information tables.

    A reward model (per-arm ridge on the training split's logged rounds) gives m̂, and each
    split becomes a table of estimated outcomes (:func:`evaluation.ope.counterfactual_log`). The
    training split uses ``env.feedback`` (DM when it is left at "full": lowest variance for
    learning); validation and test always use DR, whose mean over a deterministic policy's cells
    is that policy's DR estimate, unbiased when the propensities are right. The test split is
    also estimated by every OPE estimator.
    """
    train = train_set.log
    assert train.action is not None
    model = RewardModel(train.n_models, config.env.reward_model)
    rows = np.arange(train.n_queries)
    model.fit(train_set.features, train.action, train.quality[rows, train.action], train.cost[rows, train.action])
    learning = "dm" if config.env.feedback == "full" else config.env.feedback

    def table(part: FeaturizedSplit, kind: Literal["dm", "ips", "dr"]) -> FeaturizedSplit:
        if part.log.n_queries == 0:
            return part
        estimated = counterfactual_log(part.log, model.predict(part.features), kind, config.env.max_weight)
        return FeaturizedSplit(estimated, part.features)

    off_policy = _OffPolicy(test_set.log, model.predict(test_set.features), config.seed, config.env.max_weight)
    return table(train_set, learning), table(validation_set, "dr"), table(test_set, "dr"), off_policy


def _calibrate(
    agent: Agent,
    inputs: RunInputs,
    validation_set: FeaturizedSplit,
    test_set: FeaturizedSplit,
    target: BudgetTarget,
    config: RunConfig,
) -> tuple[float, dict[str, Any]]:
    """Choose the cost weight meeting ``target`` on validation (CONTRACTS.md §3 --target-*)."""
    if validation_set.log.n_queries == 0:
        raise DataError("--target-cost / --target-quality need a validation split (data.fractions.validation > 0)")
    grid = cost_weight_grid(inputs.train_mean_quality, inputs.train_mean_cost, BUDGET_GRID_POINTS)
    validation = Sweep.run(validation_set.log, lambda w: agent.predict(validation_set.features, w), grid)
    test = Sweep.run(test_set.log, lambda w: agent.predict(test_set.features, w), grid)
    chosen = calibrate(validation, target)
    return float(grid[chosen]), budget_report(validation, test, target, chosen)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → {"agent.linucb.alpha": 1.0, ...} for the HParams plugin."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def fit_featurizer(config: RunConfig, train: RoutingLog) -> TextFeaturizer:
    """The featurizer of ``train``'s texts; beyond ``fit_sample`` of them, those first by query-id hash.

    The hash (:func:`data.splits.hash_unit` with the run's seed) is the ``split`` value that
    ``train.py --ray`` keeps per query, so the distributed fit samples exactly these texts.
    """
    keys = hash_unit(train.query_ids, config.seed) if train.n_queries > config.featurizer.fit_sample else None
    return TextFeaturizer(config.featurizer).fit(train.queries, sample_keys=keys)


def _features(part: RoutingLog, featurizer: TextFeaturizer | None) -> np.ndarray:
    """Text features, or the log's own embeddings and a bias column (``input: embedding``)."""
    if featurizer is not None:
        return featurizer.transform(part.queries)
    if part.embeddings is None:
        raise DataError("input: embedding needs an 'embedding' column on every row of the log")
    return np.hstack([part.embeddings, np.ones((part.n_queries, 1), dtype=np.float32)])


