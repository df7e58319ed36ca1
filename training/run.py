"""One training run, end to end: read → split → featurize → learn → evaluate → export → report."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from agents.base import Agent, FeaturizedSplit
from agents.baselines import RandomRouter, SingleModelRouter
from data.energy import DEFAULT_ENERGY, EnergyTable, with_energy_estimates
from data.loading import load_log
from data.outputs import Inputs, OutputKind, claim_output, remove_killed_writes, replacing, write_marker
from data.prices import DEFAULT_PRICES, PriceTable
from data.quarantine import Quarantine
from data.schema import DataError
from data.splits import Splits, split
from envs.estimators import PredictedOutcomes
from evaluation.budget import GRID_POINTS, BudgetCalibration, BudgetTarget
from evaluation.capacity import Capacity, CapacityPlan, exported_capacity
from evaluation.evaluate import EvaluationPlan, evaluate
from evaluation.figures import frontier_figure
from evaluation.frontier import cost_weight_grid
from evaluation.html_report import report_page, run_commands
from evaluation.objectives import objectives_report, tensorboard_scalars
from evaluation.report import data_section, markdown
from evaluation.sweep import Decide
from policies.faults import fault_point
from training.config import RunConfig, dump_config
from training.exporting import checked_rules, export_policy, featurizer_summary, rule_mask
from training.features import counterfactual_splits, featurize, fit_featurizer
from training.inputs import ExportedPolicy, Learned, RunInputs, TrainedOn
from training.learning import learn
from training.refit import refit_all
from training.tensorboard import TensorBoardLogger
from training.tuning import Tuning, tune


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
    ``learned_from``, the queries the agent learned from (not held out), is where capacity
    multipliers are fitted (None: a ``--ray`` run, which holds no training queries).
    """

    validation: FeaturizedSplit
    test: FeaturizedSplit
    test_predictions: PredictedOutcomes | None = None
    learned_from: FeaturizedSplit | None = None


#: ``train.py --refit-all``'s stage: the evaluated agent and its operating weight → the policy to export.
Refit = Callable[[Learned, float], ExportedPolicy]

RUN_DIRECTORY = OutputKind(
    "run directory",
    frozenset(
        {
            "config.yaml",
            "rejected.jsonl",
            "checkpoints",
            "tb",
            "frontier.png",
            "policy.pt",
            "policy.safetensors",
            "policy.pt2",  # python -m policies export-program writes it beside policy.pt
            "learner.npz",
            "report.html",
            "report.json",
            "report.md",
        }
    ),
    overwrite_hint="pass --overwrite or --resume",
)


def prepare_directory(out: Path, overwrite: bool, inputs: Inputs | None = None) -> None:
    """Create the run directory, marked first as routerl's (docs/contracts.md §3.4).

    An existing non-empty one needs ``overwrite``, and then it must be a run directory routerl
    wrote, holding nothing else; ``out`` may not be or hold any of ``inputs`` ({path: what},
    :func:`run_inputs`). :func:`data.outputs.claim_output` says exactly what is deleted.
    """
    claim_output(out, RUN_DIRECTORY, overwrite, inputs or {})


def run_inputs(config: RunConfig, config_file: Path) -> dict[str | Path, str]:
    """The files a run reads, {path: what}: its configuration file, data, price table and rules file."""
    files: dict[str | Path, str] = {config_file: "configuration", config.data.path: "data"}
    files[config.data.prices or DEFAULT_PRICES] = "price table"
    files[config.data.energy or DEFAULT_ENERGY] = "energy table"
    if config.rules is not None:
        files[config.rules] = "rules file"
    return files


def train(
    config: RunConfig,
    out: Path,
    strict: bool = False,
    quiet: bool = False,
    target: BudgetTarget | None = None,
    refit: bool = False,
) -> RunResult:
    """Run ``config`` and write the run directory of docs/contracts.md §3 into ``out``.

    ``refit``: after the evaluation, export the configuration refit on every query
    (:mod:`training.refit`, ``train.py --refit-all``) instead of the evaluated policy.
    """
    with threadpool_limits(limits=config.blas_threads, user_api="blas"):
        return _train(config, out, strict, quiet, target, refit)


def _train(
    config: RunConfig, out: Path, strict: bool, quiet: bool, target: BudgetTarget | None, refit: bool
) -> RunResult:
    progress = not quiet
    remove_killed_writes(out)  # a resumed run's: the temporary files of writes a kill interrupted
    write_marker(out, RUN_DIRECTORY)  # a resumed run's marker lists the files this version writes (report.html)
    (out / "report.md").unlink(missing_ok=True)  # a resumed run's: unfinished until its own report is in place
    dump_config(config, out / "config.yaml")  # first, so that --resume can read it
    energy = EnergyTable.load_or_default(config.data.energy)  # a bad table stops the run before it learns
    loaded = load_log(
        config.data.path,
        prices=PriceTable.load_or_default(config.data.prices),
        strict=strict,
        allow_pickle=config.data.allow_pickle,
        progress=progress,
        max_cost=config.data.max_cost,
    )
    write_rejected(loaded.quarantine, out)
    # energy where the log has none (estimated, and marked so): the learners estimate it, the report shows it
    log = with_energy_estimates(loaded.log, energy)
    rules = checked_rules(config, log.models)  # an unknown model stops the run before anything is learned
    Capacity(log.models, config.capacity)  # so do an unknown model or caps that cannot hold (evaluation.capacity)
    splits = split(log, config.data.fractions, config.seed, config.data.split)
    if len(splits.train) == 0 or len(splits.test) == 0:
        raise DataError(
            f"{config.data.path}: too few queries ({log.n_queries}) to split into train and test (the report's "
            "metrics need held-out test queries; to train the exported policy on every query, add --refit-all)"
        )
    tuning = tune(config, log.subset(splits.train), progress)
    config = tuning.config
    learning_rows = _learning_rows(config, splits, tuning, target)
    featurizer = fit_featurizer(config, log.subset(learning_rows)) if config.input == "text" else None
    train_set, validation_set, test_set = (
        featurize(part, featurizer)
        for part in (log.subset(learning_rows), log.subset(splits.validation), log.subset(splits.test))
    )
    test_predictions = None
    if log.feedback == "bandit":
        train_set, validation_set, test_predictions = counterfactual_splits(config, train_set, validation_set, test_set)

    tensorboard = TensorBoardLogger(out / "tb")
    agent, training, learned_weight = learn(
        config, train_set, validation_set, tensorboard, out / "checkpoints", progress
    )
    trained_on: TrainedOn = "train" if len(learning_rows) == len(splits.train) else "train+validation"
    inputs = RunInputs(
        data=data_section(log, config.data.path),
        models=log.models,
        fingerprint=log.fingerprint,
        split_counts=splits.counts(),
        featurizer=featurizer,
        dimension=train_set.features.shape[1],
        train_mean_quality=np.nanmean(train_set.log.quality, axis=0),
        train_mean_cost=np.nanmean(train_set.log.cost, axis=0),
        tuning=tuning.report,
        rules=rules,
        energy=energy,
    )
    tensorboard.log_scalars({"tuning/seconds": tuning.seconds}, 0)
    learned = Learned(agent, training, learned_weight, trained_on)
    held_out = HeldOutSplits(validation_set, test_set, test_predictions, train_set)
    refit_on_all = partial(refit_all, config, log, out=out, progress=progress, target=target) if refit else None
    return evaluate_and_export(config, out, inputs, learned, held_out, tensorboard, target, progress, refit_on_all)


def _learning_rows(config: RunConfig, splits: Splits, tuning: Tuning, target: BudgetTarget | None) -> np.ndarray:
    """The queries the agent learns from: the training split, and the validation split when nothing else needs it.

    Once tuning has chosen the hyperparameters on the training split by cross-validation, the
    validation split has no use left for a learner that fits in one pass: it then learns from
    both (issue: "the exported policy uses all the training data it may"). It stays held out for
    a learner that keeps its best state or stops early on it, for a ``--target-*`` calibration,
    and on a bandit-feedback log (where tuning does not run).
    """
    merge = (
        tuning.report.get("chosen") is not None
        and config.agent.learning == "fit"
        and target is None
        and len(splits.validation) > 0
    )
    return np.sort(np.concatenate([splits.train, splits.validation])) if merge else splits.train


def evaluate_and_export(
    config: RunConfig,
    out: Path,
    inputs: RunInputs,
    learned: Learned,
    held_out: HeldOutSplits,
    tensorboard: TensorBoardLogger,
    target: BudgetTarget | None = None,
    progress: bool = False,
    refit: Refit | None = None,
) -> RunResult:
    """Evaluate on the test split; write the reports (html, json, md), frontier.png, TensorBoard and policy.pt.

    The report's sections are :func:`evaluation.evaluate.evaluate`'s, after the run's own (data,
    split, featurizer, policy, exported_policy). ``policy.pt`` holds the evaluated agent, or,
    with ``refit``, what ``refit`` trains after the evaluation (:func:`training.refit.refit_all`).
    """
    agent, steps = learned.agent, learned.training["steps"]
    means = (inputs.train_mean_quality, inputs.train_mean_cost)
    budget = None
    if target is not None:
        validate = _decider(agent, held_out.validation, inputs.rules, inputs.models)
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
        capacity=_capacity_plan(config, inputs, agent, held_out),
    )
    evaluation = evaluate(held_out.test.log, _decider(agent, held_out.test, inputs.rules, inputs.models), plan)
    weight, actions = evaluation.cost_weight, evaluation.actions
    assert weight is not None and actions is not None  # the plan has an operating weight
    if refit is None:
        capacity = exported_capacity(evaluation.sections.get("capacity"))
        exported = ExportedPolicy(
            agent, inputs.featurizer, weight, learned.trained_on, learned.training["best_step"], capacity=capacity
        )
    else:
        exported = refit(learned, weight)
    report = evaluation.report(_header(config, inputs, learned, weight, exported))
    energy = inputs.energy or EnergyTable.load_or_default(config.data.energy)
    report["objectives"] = objectives_report(with_energy_estimates(held_out.test.log, energy), evaluation, plan, energy)
    _log_to_tensorboard(tensorboard, config, report, actions, len(inputs.models), steps, out / "frontier.png")
    with tqdm(total=1, desc="exporting policy.pt", disable=not progress, leave=False) as bar:
        export_policy(config, inputs, exported, report, out)
        bar.update()
    page, as_json = report_page(report, run_commands()), json.dumps(report, indent=2) + "\n"
    _write_run_file(out / "report.html", "report-html", lambda path: path.write_text(page, encoding="utf-8"))
    _write_run_file(out / "report.json", "report-json", lambda path: path.write_text(as_json, encoding="utf-8"))
    _write_run_file(out / "report.md", "report-md", lambda path: path.write_text(markdown(report), encoding="utf-8"))
    return RunResult(out, report)


def write_rejected(quarantine: Quarantine, out: Path) -> None:
    """Write the run's ``rejected.jsonl`` (atomic), passing the fault points ``rejected-written`` and ``-renamed``."""
    quarantine.write(out / "rejected.jsonl", written=partial(fault_point, "rejected-written"))
    fault_point("rejected-renamed")


def _write_run_file(path: Path, name: str, write: Callable[[Path], object]) -> None:
    """``write(temporary)``, then rename it to ``path``: whole or not at all (:func:`data.outputs.replacing`).

    On either side of the rename it passes a fault point (:mod:`policies.faults`): ``<name>-written``,
    the new file complete and the previous one (or none) still in place, and ``<name>-renamed``.
    """
    with replacing(path) as temporary:
        write(temporary)
        fault_point(f"{name}-written")
    fault_point(f"{name}-renamed")


def _header(
    config: RunConfig, inputs: RunInputs, learned: Learned, weight: float, exported: ExportedPolicy
) -> dict[str, Any]:
    """The run's own sections of the report: data, split, featurizer, policy (evaluated) and exported_policy."""
    policy = {
        "agent": learned.agent.name,
        "cost_weight": weight,
        "learning": config.agent.learning,
        "steps": learned.training["steps"],
        "best_step": learned.training["best_step"],
        "resumed_from": learned.training.get("resumed_from"),
        "score_kind": learned.agent.score_kind,
        "rules": len(inputs.rules),  # rule overrides: the metrics below are the policy's with them (§2.9)
    }
    split_section = {
        "kind": config.data.split,
        "seed": config.seed,
        "fractions": asdict(config.data.fractions),
        "queries": inputs.split_counts,
    }
    return {
        "data": inputs.data,
        "split": split_section,
        "tuning": inputs.tuning,
        "featurizer": featurizer_summary(config, inputs.featurizer, inputs.dimension),
        "policy": policy,
        # cost_mode "tokens": policy.pt prices estimated tokens with a replaceable table (docs/contracts.md §2.10)
        "exported_policy": {**exported.section(inputs.split_counts), "cost_mode": exported.agent.cost_mode},
    }


def _decider(agent: Agent, part: FeaturizedSplit, rules: list[dict[str, Any]], models: Sequence[str]) -> Decide:
    """The agent's choices on a split's queries at a cost weight, within the models the rule overrides
    allow each query (the argmax of the allowed scores, ties to the lower index, as ``policy.pt`` routes)."""
    allowed = rule_mask(rules, models, part.log.queries)
    if allowed is None:
        return lambda cost_weight: agent.predict(part.features, cost_weight)
    return lambda cost_weight: np.argmax(np.where(allowed, agent.scores(part.features, cost_weight), -np.inf), axis=1)


def _capacity_plan(config: RunConfig, inputs: RunInputs, agent: Agent, held_out: HeldOutSplits) -> CapacityPlan | None:
    """The report's ``capacity`` section (:mod:`evaluation.capacity`): multipliers fitted on the queries the
    agent learned from, the test split routed with and without them, rule overrides applied; None without caps."""
    if not config.capacity:
        return None
    fit_on, test = held_out.learned_from, held_out.test
    if fit_on is None:
        raise DataError("capacity fits its multipliers on the training queries, which a --ray run does not hold")
    return CapacityPlan(
        Capacity(inputs.models, config.capacity),
        partial(agent.scores, fit_on.features),
        rule_mask(inputs.rules, inputs.models, fit_on.log.queries),
        partial(agent.scores, test.features),
        rule_mask(inputs.rules, inputs.models, test.log.queries),
    )


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
    figure = frontier_figure(frontier, title)
    _write_run_file(figure_path, "frontier", figure.savefig)
    tensorboard.log_metrics(test_metrics, steps)
    tensorboard.log_scalars(tensorboard_scalars(report["objectives"]), steps)
    tensorboard.log_choices(actions, n_models, steps)
    tensorboard.log_config(yaml.safe_dump(config.to_dict(), sort_keys=False))
    tensorboard.log_tuning(report["tuning"])
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


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → {"agent.linucb.alpha": 1.0, ...} for the HParams plugin."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
