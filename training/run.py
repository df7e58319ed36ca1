"""One training run, end to end: read → split → featurize → learn → evaluate → export → report."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.baselines import RandomRouter, SingleModelRouter
from agents.linucb import LinUCB
from data.featurizer import TextFeaturizer
from data.loading import load_log
from data.prices import PriceTable
from data.routing_log import RoutingLog
from data.schema import DataError
from data.splits import split
from envs.routing_env import RoutingEnv
from evaluation.frontier import Frontier, cost_weight_grid
from evaluation.metrics import oracle_actions, route_metrics
from policies.export import PolicyMetadata, build_text_policy, save_policy
from policies.heads import UtilityHead
from training.config import RunConfig, dump_config
from training.report import write_markdown
from training.tensorboard import TensorBoardLogger

DEFAULT_PRICES = Path(__file__).resolve().parent.parent / "configs" / "prices.yaml"


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


def train(config: RunConfig, out: Path, strict: bool = False, quiet: bool = False) -> RunResult:
    """Run ``config`` and write the run directory of CONTRACTS.md §3 into ``out``."""
    progress = not quiet
    prices = PriceTable.load(config.data.prices or DEFAULT_PRICES)
    loaded = load_log(config.data.path, prices=prices, strict=strict,
                      allow_pickle=config.data.allow_pickle, progress=progress)
    loaded.quarantine.write(out / "rejected.jsonl")
    log = loaded.log
    if log.feedback != "full":
        raise DataError(f"{config.data.path}: training on bandit-feedback logs is not supported yet; "
                        "give a full-information log (every model's outcome per query)")
    splits = split(log, config.data.fractions, config.seed, config.data.split)
    train_log, test_log = log.subset(splits.train), log.subset(splits.test)
    if train_log.n_queries == 0 or test_log.n_queries == 0:
        raise DataError(f"{config.data.path}: too few queries ({log.n_queries}) to split into train and test")

    featurizer = TextFeaturizer(config.featurizer).fit(train_log.queries)
    train_x, test_x = featurizer.transform(train_log.queries), featurizer.transform(test_log.queries)
    weight = config.reward.cost_weight
    agent = LinUCB(log.n_models, featurizer.dimension, config.agent.linucb, cost_weight=weight)
    tensorboard = TensorBoardLogger(out / "tb")
    if config.agent.learning == "fit":
        agent.fit(train_x, train_log.quality, train_log.cost)
        steps = train_log.n_queries
    else:
        env = RoutingEnv(train_log, train_x, weight)
        agent.learn(env, config.agent.online_steps, seed=config.seed, progress=progress,
                    callback=tensorboard.on_step)
        steps = config.agent.online_steps

    expected = test_log.expected_quality is not None
    test_metrics = route_metrics(test_log, agent.predict(test_x), weight)
    baselines = {
        "random": RandomRouter(log.n_models, seed=config.seed).predict(test_x, weight),
        "cheapest": SingleModelRouter.cheapest(train_log).predict(test_x, weight),
        "best single": SingleModelRouter.best(train_log).predict(test_x, weight),
        "oracle": oracle_actions(test_log, weight),
    }
    baseline_metrics = {name: route_metrics(test_log, actions, weight) for name, actions in baselines.items()}
    if expected:
        baseline_metrics["expected oracle"] = route_metrics(
            test_log, oracle_actions(test_log, weight, expected=True), weight, expected=True)
    frontier = _frontier_report(agent, train_log, test_log, test_x, test_metrics, config)
    tensorboard.log_metrics(test_metrics, steps)
    tensorboard.close()

    report: dict[str, Any] = {
        "data": {
            "path": str(config.data.path),
            "fingerprint": log.fingerprint,
            "feedback": log.feedback,
            "queries": log.n_queries,
            "models": list(log.models),
            "rows_read": log.stats.rows_read,
            "rows_accepted": log.stats.rows_accepted,
            "rows_rejected": log.stats.rows_rejected,
            "rejected_by_reason": log.stats.rejected_by_reason,
        },
        "split": {"kind": config.data.split, "seed": config.seed,
                  "fractions": {"train": config.data.fractions.train,
                                "validation": config.data.fractions.validation,
                                "test": config.data.fractions.test},
                  "queries": splits.counts()},
        "featurizer": {"terms": featurizer.n_terms, "dimension": featurizer.dimension},
        "policy": {"agent": agent.name, "cost_weight": weight, "learning": config.agent.learning,
                   "steps": steps, "score_kind": agent.score_kind},
        "test": test_metrics,
        "baselines": baseline_metrics,
        "frontier": frontier,
    }
    if expected:
        report["test_expected"] = route_metrics(test_log, agent.predict(test_x), weight, expected=True)

    metadata = PolicyMetadata(
        models=list(log.models),
        default_cost_weight=weight,
        cost_weight_range=[0.0, float(frontier["cost_weights"][-1])],
        score_kind=agent.score_kind,
        agent=agent.name,
        featurizer={"kind": "tfidf-lsa", "terms": featurizer.n_terms, "dimension": featurizer.dimension,
                    **config.featurizer.__dict__},
        data_fingerprint=log.fingerprint,
        metrics={key: value for key, value in test_metrics.items() if key != "share_per_model"},
    )
    module = build_text_policy(featurizer, agent.linear_map(), UtilityHead(log.n_models), metadata)
    save_policy(module, metadata, out / "policy.pt")
    dump_config(config, out / "config.yaml")
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    write_markdown(report, out / "report.md")
    return RunResult(out, report)


def _frontier_report(agent: LinUCB, train_log: RoutingLog, test_log: RoutingLog, test_x: np.ndarray,
                     operating: dict[str, Any], config: RunConfig) -> dict[str, Any]:
    """Sweep the cost weight on the test split; hulls of the policy and of the single models."""
    weights = cost_weight_grid(np.nanmean(train_log.quality, axis=0), np.nanmean(train_log.cost, axis=0),
                               config.evaluation.frontier_points)
    rows = np.arange(test_log.n_queries)
    points = []
    for weight in weights:
        actions = agent.predict(test_x, float(weight))
        points.append({"cost_weight": float(weight),
                       "cost": float(test_log.cost[rows, actions].mean()),
                       "quality": float(test_log.quality[rows, actions].mean())})
    single_cost, single_quality = test_log.cost.mean(axis=0), test_log.quality.mean(axis=0)
    zero_router = Frontier.from_points(single_cost, single_quality)
    policy_hull = Frontier.from_points(np.array([p["cost"] for p in points]),
                                       np.array([p["quality"] for p in points]))
    cost_range = (float(single_cost.min()), float(single_cost.max()))
    margin = operating["mean_quality"] - float(zero_router.quality_at(operating["mean_cost"]))
    return {
        "aiq": policy_hull.aiq(cost_range),
        "zero_router_aiq": zero_router.aiq(cost_range),
        "cost_range": list(cost_range),
        "cost_weights": [p["cost_weight"] for p in points],
        "points": points,
        "hull": policy_hull.to_json(),
        "single_models": {m: {"cost": float(c), "quality": float(q)}
                          for m, c, q in zip(test_log.models, single_cost, single_quality)},
        "operating_point": {"cost": operating["mean_cost"], "quality": operating["mean_quality"]},
        "margin_over_zero_router": margin,
        "note": "hulls allow mixing two operating points at random (non-decreasing upper convex hull)",
    }
