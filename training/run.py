"""One training run, end to end: read → split → featurize → learn → evaluate → export → report."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import yaml
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from agents.base import Agent
from agents.baselines import RandomRouter, SingleModelRouter
from agents.linucb import LinUCB
from agents.ppo import PPORouter
from data.featurizer import TextFeaturizer
from data.loading import load_log
from data.prices import PriceTable
from data.routing_log import RoutingLog
from data.schema import DataError
from data.splits import hash_unit, split
from envs.estimators import PredictedOutcomes, RewardModel
from envs.routing_env import RoutingEnv
from evaluation.bootstrap import Bootstrap
from evaluation.budget import BudgetTarget, budget_report, calibrate
from evaluation.evaluate import Sweep, frontier_report, metrics_with_intervals
from evaluation.figures import save_frontier
from evaluation.frontier import cost_weight_grid
from evaluation.metrics import oracle_actions, route_metrics
from evaluation.ope import counterfactual_log, off_policy_estimates
from evaluation.report import data_section, write_markdown
from policies.export import PolicyMetadata, build_embedding_policy, build_text_policy, save_policy
from training.checkpoints import Checkpoint, Checkpointer
from training.config import RunConfig, dump_config
from training.factory import make_agent
from training.tensorboard import TensorBoardLogger

BUDGET_GRID_POINTS = 201  # finer cost-weight grid searched for --target-cost / --target-quality


@dataclass(frozen=True)
class RunResult:
    """Where the run wrote its outputs, and its report."""

    directory: Path
    report: dict[str, Any]


@dataclass(frozen=True)
class FeaturizedSplit:
    """One split's log and its features."""

    log: RoutingLog
    features: np.ndarray


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
    agent, training, learned_weight = _learn(config, train_set, validation_set, tensorboard, out, progress)
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


@dataclass(frozen=True)
class RunInputs:
    """What evaluation and export need of the data besides the validation and test splits.

    The single-process run takes it from the loaded log; a distributed run
    (:mod:`training.distributed`) from statistics summed over the blocks of the training split.
    """

    data: dict[str, Any]  # the report's data section (fingerprint, rows by fate)
    models: tuple[str, ...]
    fingerprint: str
    split_counts: dict[str, int]
    featurizer: TextFeaturizer | None
    dimension: int  # features per query
    train_mean_quality: np.ndarray  # (K,) on the training split: baselines and the cost-weight grid
    train_mean_cost: np.ndarray  # (K,)


@dataclass(frozen=True)
class Learned:
    """A learned agent, what its training did (``steps``, ``best_step``), and a learned cost weight."""

    agent: Agent
    training: dict[str, Any]
    weight: float | None  # the averaged budget multiplier of online learning, else None


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
        "featurizer": _featurizer_summary(config, featurizer, inputs.dimension),
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
        _export(config, inputs, agent, weight, frontier, test_metrics, out)
        bar.update()
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_markdown(report, out / "report.md")
    return RunResult(out, report)


def _learn(
    config: RunConfig,
    train_set: FeaturizedSplit,
    validation_set: FeaturizedSplit,
    tensorboard: TensorBoardLogger,
    out: Path,
    progress: bool,
) -> tuple[Agent, dict[str, Any], float | None]:
    """Fit the configured agent on the training split.

    Returns the agent, what its training did (``steps``, and ``best_step``: the step whose state
    is exported), and the cost weight it learned (the averaged budget multiplier λ̄ when the
    reward has a budget and learning is online or by PPO; None otherwise).
    """
    log = train_set.log
    if config.agent.kind == "ppo":
        ppo, training = _learn_ppo(config, train_set, validation_set, tensorboard, out)
        return ppo, training, None if ppo.budget is None else ppo.cost_weight
    agent = make_agent(config.agent.kind, config, log.n_models, train_set.features.shape[1])
    if not isinstance(agent, LinUCB):  # the supervised peers learn in one fit
        agent.fit(train_set.features, log.quality, log.cost)
        return agent, {"steps": log.n_queries, "best_step": log.n_queries}, None
    if config.agent.learning == "fit":
        if config.reward.budget is not None:
            raise DataError("a budget reward needs agent.learning=online (the multiplier is learned online)")
        agent.fit(train_set.features, log.quality, log.cost)
        return agent, {"steps": log.n_queries, "best_step": log.n_queries}, None
    env = RoutingEnv(log, train_set.features, config.reward)
    return (
        agent,
        _learn_online(config, agent, env, validation_set, tensorboard, out, progress),
        env.default_cost_weight,
    )


def _learn_ppo(
    config: RunConfig,
    train_set: FeaturizedSplit,
    validation_set: FeaturizedSplit,
    tensorboard: TensorBoardLogger,
    out: Path,
) -> tuple[PPORouter, dict[str, Any]]:
    """Preference-conditioned PPO, checkpointed every ``agent.checkpoint_every`` steps.

    A checkpoint in the run directory (``--resume``) is restored first; PPO then trains only the
    remaining steps. Validation early stopping keeps the best parameters, which are exported.
    """
    log = train_set.log
    agent = cast(PPORouter, make_agent("ppo", config, log.n_models, train_set.features.shape[1]))
    checkpoint = out / "checkpoints" / "ppo.zip"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    resumed_from = None
    if checkpoint.exists():
        agent.load(checkpoint)
        resumed_from = agent.steps_done
    saved_at = agent.steps_done

    def on_rollout(step: int, scalars: dict[str, float]) -> None:
        nonlocal saved_at
        tensorboard.log_scalars(scalars, step)
        if step - saved_at >= config.agent.checkpoint_every:
            agent.save(checkpoint)
            saved_at = step

    validation = validation_set if validation_set.log.n_queries else None
    agent.fit(
        train_set.features,
        log.quality,
        log.cost,
        val_features=None if validation is None else validation.features,
        val_quality=None if validation is None else validation.log.quality,
        val_cost=None if validation is None else validation.log.cost,
        callback=on_rollout,
    )
    agent.save(checkpoint)
    return agent, {
        "steps": agent.steps_done,
        "best_step": agent.best_step,
        "resumed_from": resumed_from,
        "stopped_early": agent.stopped_early,
    }


def _learn_online(
    config: RunConfig,
    agent: LinUCB,
    env: RoutingEnv,
    validation_set: FeaturizedSplit,
    tensorboard: TensorBoardLogger,
    out: Path,
    progress: bool,
) -> dict[str, Any]:
    """LinUCB learning by interaction, checkpointed every ``agent.checkpoint_every`` steps.

    If the run directory holds checkpoints (``--resume``), learning continues from the newest
    with the remaining steps only. At each checkpoint the greedy policy's validation reward is
    measured; the best state is the one exported (``best_step`` in the report).
    """
    total = config.agent.online_steps
    checkpoints = Checkpointer(out / "checkpoints", config.agent.checkpoint_every)
    latest = checkpoints.latest()
    start, seed_or_none = 0, cast("int | None", config.seed)
    if latest is not None:
        agent.load_state_dict(latest.arrays)
        env.reset(seed=config.seed)  # builds the task; then the saved generator and multiplier replace it
        generator = np.random.default_rng()
        generator.bit_generator.state = latest.meta["env_generator"]
        env.np_random = generator
        if latest.meta.get("multiplier") is not None and env.task.multiplier is not None:
            env.task.multiplier.load_state_dict(latest.meta["multiplier"])
        start, seed_or_none = latest.step, None

    def validation_reward() -> float:
        if validation_set.log.n_queries == 0:
            return float(start)  # no validation split: the newest state counts as the best
        weight = env.default_cost_weight if env.default_cost_weight is not None else config.reward.cost_weight
        actions = agent.predict(validation_set.features, weight)
        rows = np.arange(validation_set.log.n_queries)
        return float(validation_set.log.reward(weight)[rows, actions].mean())

    def on_step(step: int, reward: float, info: dict[str, Any]) -> None:
        tensorboard.on_step(step, reward, info)
        if checkpoints.due(step) or step == total:
            multiplier = env.task.multiplier
            meta = {
                "step": step,
                "score": validation_reward() if validation_set.log.n_queries else step,
                "env_generator": env.np_random.bit_generator.state,
                "multiplier": None if multiplier is None else multiplier.state_dict(),
            }
            checkpoints.save(Checkpoint({k: v.copy() for k, v in agent.state_dict().items()}, meta))

    if total > start:
        agent.learn(env, total - start, seed=seed_or_none, progress=progress, callback=on_step, start_step=start)
    best = checkpoints.best()
    if best is not None:
        agent.load_state_dict(best.arrays)
    return {"steps": total, "best_step": total if best is None else best.step, "resumed_from": start or None}


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


def _featurizer_summary(config: RunConfig, featurizer: TextFeaturizer | None, dimension: int) -> dict[str, Any]:
    """What the policy's inputs are, for the report and the artifact's metadata."""
    if featurizer is None:
        return {"kind": "embedding", "dimension": dimension - 1, "bias": True}
    return {
        "kind": "tfidf-lsa",
        "terms": featurizer.n_terms,
        "dimension": featurizer.dimension,
        **asdict(config.featurizer),
    }


def _export(
    config: RunConfig,
    inputs: RunInputs,
    agent: Agent,
    weight: float,
    frontier: dict[str, Any],
    test_metrics: dict[str, Any],
    out: Path,
) -> None:
    """Write ``policy.pt`` with the metadata of CONTRACTS.md §2."""
    linear_map = agent.linear_map()
    conditioned_range = getattr(agent, "cost_weight_range", None)  # agents conditioned on the weight (PPO)
    metadata = PolicyMetadata(
        models=list(inputs.models),
        default_cost_weight=weight,
        cost_weight_range=conditioned_range or [0.0, float(frontier["cost_weights"][-1])],
        score_kind=agent.score_kind,
        agent=agent.name,
        input_kind=config.input,
        featurizer=_featurizer_summary(config, inputs.featurizer, linear_map.shape[0]),
        data_fingerprint=inputs.fingerprint,
        metrics={key: value for key, value in test_metrics.items() if isinstance(value, float)}
        | {"aiq": frontier["aiq"]},
    )
    clamp = conditioned_range is not None
    featurizer = inputs.featurizer
    if featurizer is None:
        module = build_embedding_policy(linear_map, agent.head(), metadata, clamp_cost_weight=clamp)
    else:
        module = build_text_policy(featurizer, linear_map, agent.head(), metadata, clamp_cost_weight=clamp)
    save_policy(module, metadata, out / "policy.pt")
