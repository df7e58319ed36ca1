"""One training run, end to end: read → split → featurize → learn → evaluate → export → report."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

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
from envs.estimators import PredictedOutcomes, RewardModel, TableEstimator, counterfactual_log, logged_outcomes
from evaluation.budget import GRID_POINTS, BudgetCalibration, BudgetTarget
from evaluation.evaluate import EvaluationPlan, evaluate
from evaluation.figures import save_frontier
from evaluation.frontier import cost_weight_grid
from evaluation.report import data_section, write_markdown
from evaluation.sweep import Decide
from training.config import RunConfig, dump_config
from training.exporting import export_policy, featurizer_summary
from training.inputs import FeaturizedSplit, Learned, RunInputs
from training.learning import learn
from training.tensorboard import TensorBoardLogger


@dataclass(frozen=True)
class RunResult:
    """Where the run wrote its outputs, and its report."""

    directory: Path
    report: dict[str, Any]


@dataclass(frozen=True)
class HeldOutSplits:
    """The splits a learned agent is judged on, and m̂ on the test split when its log is bandit feedback.

    The validation split calibrates a budget target; the test split makes the report, and with
    ``test_predictions`` it is evaluated on its DR table and by every off-policy estimator.
    """

    validation: FeaturizedSplit
    test: FeaturizedSplit
    test_predictions: PredictedOutcomes | None = None


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
    """Run ``config`` and write the run directory of docs/contracts.md §3 into ``out``."""
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
    test_predictions = None
    if log.feedback == "bandit":
        train_set, validation_set, test_predictions = _counterfactual_splits(
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
    held_out = HeldOutSplits(validation_set, test_set, test_predictions)
    return evaluate_and_export(config, out, inputs, learned, held_out, tensorboard, target, progress)


def evaluate_and_export(
    config: RunConfig,
    out: Path,
    inputs: RunInputs,
    learned: Learned,
    held_out: HeldOutSplits,
    tensorboard: TensorBoardLogger,
    target: BudgetTarget | None = None,
    progress: bool = False,
) -> RunResult:
    """Evaluate on the test split; write report.json, report.md, frontier.png, TensorBoard and policy.pt.

    The report's sections are :func:`evaluation.evaluate.evaluate`'s, after the run's own (data,
    split, featurizer, policy).
    """
    agent, steps = learned.agent, learned.training["steps"]
    means = (inputs.train_mean_quality, inputs.train_mean_cost)
    budget = None
    if target is not None:
        validate = _decider(agent, held_out.validation)
        budget = BudgetCalibration(target, held_out.validation.log, validate, cost_weight_grid(*means, GRID_POINTS))
    plan = EvaluationPlan(
        config.evaluation,
        config.seed,
        config.reward.cost_weight if learned.weight is None else learned.weight,
        weights=cost_weight_grid(*means, config.evaluation.frontier_points),
        baselines=_baselines(inputs, held_out.test, config.seed),
        expected=True,
        budget=budget,
        predictions=held_out.test_predictions,
        max_weight=config.env.max_weight,
        progress=progress,
    )
    evaluation = evaluate(held_out.test.log, _decider(agent, held_out.test), plan)
    weight, actions = evaluation.cost_weight, evaluation.actions
    assert weight is not None and actions is not None  # the plan has an operating weight
    policy = {
        "agent": agent.name,
        "cost_weight": weight,
        "learning": config.agent.learning,
        "steps": steps,
        "best_step": learned.training["best_step"],
        "resumed_from": learned.training.get("resumed_from"),
        "score_kind": agent.score_kind,
    }
    split_section = {
        "kind": config.data.split,
        "seed": config.seed,
        "fractions": asdict(config.data.fractions),
        "queries": inputs.split_counts,
    }
    featurizer = featurizer_summary(config, inputs.featurizer, inputs.dimension)
    header = {"data": inputs.data, "split": split_section, "featurizer": featurizer, "policy": policy}
    report = evaluation.report(header)
    _log_to_tensorboard(tensorboard, config, report, actions, len(inputs.models), steps, out / "frontier.png")
    with tqdm(total=1, desc="exporting policy.pt", disable=not progress, leave=False) as bar:
        export_policy(config, inputs, agent, weight, report["frontier"], report["test"], out)
        bar.update()
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_markdown(report, out / "report.md")
    return RunResult(out, report)


def _decider(agent: Agent, part: FeaturizedSplit) -> Decide:
    """The agent's choices on a split's queries at a cost weight."""
    return lambda cost_weight: agent.predict(part.features, cost_weight)


def _baselines(inputs: RunInputs, test_set: FeaturizedSplit, seed: int) -> dict[str, Decide]:
    """Random, cheapest and best single model (by the training split's means) on the test split."""
    mean_quality, mean_cost = inputs.train_mean_quality, inputs.train_mean_cost
    return {
        "random": partial(RandomRouter(len(inputs.models), seed=seed).predict, test_set.features),
        "cheapest": partial(SingleModelRouter(mean_quality, mean_cost, False, "cheapest").predict, test_set.features),
        "best single": partial(
            SingleModelRouter(mean_quality, mean_cost, True, "best single").predict, test_set.features
        ),
    }


def _log_to_tensorboard(
    tensorboard: TensorBoardLogger,
    config: RunConfig,
    report: dict[str, Any],
    actions: np.ndarray,
    n_models: int,
    steps: int,
    figure_path: Path,
) -> None:
    """Save ``frontier.png``; log the test metrics, the choices, the config, hparams and the figure; close."""
    test_metrics, frontier = report["test"], report["frontier"]
    title = f"{report['policy']['agent']} on {Path(config.data.path).name} (test split)"
    figure = save_frontier(frontier, title, figure_path)
    tensorboard.log_metrics(test_metrics, steps)
    tensorboard.log_choices(actions, n_models, steps)
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


def _counterfactual_splits(
    config: RunConfig, train_set: FeaturizedSplit, validation_set: FeaturizedSplit, test_set: FeaturizedSplit
) -> tuple[FeaturizedSplit, FeaturizedSplit, PredictedOutcomes]:
    """A bandit-feedback log's training and validation splits as estimated outcome tables, and m̂ on its test split.

    A reward model (per-arm ridge on the training split's logged rounds) gives m̂, and a split
    becomes a table of estimated outcomes by :func:`envs.estimators.counterfactual_log`. The
    training split uses ``env.feedback`` (DM when it is left at "full": lowest variance for
    learning); validation uses DR, whose mean over a deterministic policy's cells is that
    policy's DR estimate, unbiased when the propensities are right. The test split is left to
    :func:`evaluation.evaluate.evaluate`, which estimates it by DR and by every OPE estimator.
    """
    actions, _, quality, cost = logged_outcomes(train_set.log)
    model = RewardModel(train_set.log.n_models, config.env.reward_model)
    model.fit(train_set.features, actions, quality, cost)
    learning: TableEstimator = "dm" if config.env.feedback == "full" else config.env.feedback

    def table(part: FeaturizedSplit, estimator: TableEstimator) -> FeaturizedSplit:
        if part.log.n_queries == 0:
            return part
        estimated = counterfactual_log(part.log, model.predict(part.features), estimator, config.env.max_weight)
        return FeaturizedSplit(estimated, part.features)

    return table(train_set, learning), table(validation_set, "dr"), model.predict(test_set.features)


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


