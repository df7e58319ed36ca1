"""Compare agents by K-fold cross-validation by query, with paired bootstrap intervals.

    python -m training.compare --config configs/routerbench.yaml --folds 5 --out runs/rb-compare

Every query is held out exactly once: for each fold the featurizer and each agent are fitted on
the other folds, and the held-out queries are routed at every swept cost weight. The pooled
out-of-fold decisions give each agent's frontier and AIQ on the whole log, evaluated by
:func:`evaluation.evaluate.evaluate` as any router is; differences of AIQ against the first agent
get paired bootstrap intervals (the same resampled queries for both). The zero router (single
models' hull) and the oracle are reported beside them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agents.base import FeaturizedSplit, TrainingTask
from agents.callbacks import KeepBest
from agents.registry import default_learning
from data.featurizer import TextFeaturizer
from data.loading import load_log
from data.outputs import OutputKind, check_output, create_output, write_text_atomically
from data.prices import PriceTable
from data.routing_log import RoutingLog
from data.schema import DataError
from data.splits import hash_unit
from evaluation.evaluate import EvaluationPlan, evaluate, sweep_weights
from evaluation.sweep import AIQRange, WeightSweep, paired_aiq_difference
from training.config import RunConfig, load_config
from training.factory import AGENTS, make_agent

COMPARED = ("linucb", "ppo", "knn", "logistic")
COMPARISON_FOLDER = OutputKind("comparison folder", frozenset({"compare.json", "compare.md"}))


class Featurizer(Protocol):
    """What cross-validation needs of a featurizer: fitted on the training folds' texts, then applied."""

    @property
    def dimension(self) -> int: ...

    def fit(self, texts: list[str]) -> Featurizer: ...

    def transform(self, texts: list[str]) -> np.ndarray: ...


def cross_validated_sweeps(
    log: RoutingLog,
    config: RunConfig,
    kinds: list[str],
    folds: int,
    weights: np.ndarray,
    make_featurizer: Callable[[RunConfig], Featurizer] = lambda config: TextFeaturizer(config.featurizer),
) -> dict[str, WeightSweep]:
    """Out-of-fold actions of each agent at every weight, pooled over the folds.

    ``make_featurizer`` builds each fold's featurizer (``bench/bench_featurizer_variants.py``
    compares others with routerl's own this way).
    """
    fold_of = np.floor(hash_unit(log.query_ids, config.seed) * folds).astype(int)
    actions = {kind: np.zeros((len(weights), log.n_queries), dtype=np.int64) for kind in kinds}
    for fold in range(folds):
        held, kept = np.flatnonzero(fold_of == fold), np.flatnonzero(fold_of != fold)
        train, test = log.subset(kept), log.subset(held)
        featurizer = make_featurizer(config).fit(train.queries)
        train_x, test_x = featurizer.transform(train.queries), featurizer.transform(test.queries)
        for kind in kinds:
            agent = make_agent(kind, config, log.n_models, featurizer.dimension)
            learned, validation = FeaturizedSplit(train, train_x), None
            if agent.stops_early:  # early stopping on a tenth of the training folds
                tune = hash_unit(train.query_ids, config.seed + 1) < 0.1
                learned = FeaturizedSplit(train.subset(np.flatnonzero(~tune)), train_x[~tune])
                validation = FeaturizedSplit(train.subset(np.flatnonzero(tune)), train_x[tune])
            task = TrainingTask(learned, validation, reward=config.reward, learning=default_learning(kind),
                                online_steps=config.agent.online_steps, seed=config.seed)
            agent.train(task, [KeepBest(validation, config.agent.checkpoint_every)])
            actions[kind][:, held] = np.stack([agent.predict(test_x, float(w)) for w in weights])
    return {kind: WeightSweep.from_actions(log, weights, actions[kind]) for kind in kinds}


def compare(log: RoutingLog, config: RunConfig, kinds: list[str], folds: int) -> dict[str, Any]:
    """The comparison report: per agent AIQ (with interval), costs to reach the reference, differences.

    Each agent's pooled out-of-fold choices are evaluated on the whole log with no operating point
    (they exist only at the swept weights); the zero router, oracle and reference come from the
    same evaluation. Bootstrap intervals are always given (at least one resample).
    """
    weights = sweep_weights(log, config.evaluation)
    sweeps = cross_validated_sweeps(log, config, kinds, folds, weights)
    resampled = replace(config.evaluation, bootstrap=max(config.evaluation.bootstrap, 1))
    plan = EvaluationPlan(resampled, config.seed, cost_weight=None, weights=weights)
    evaluations = {kind: evaluate(log, sweep.decide, plan) for kind, sweep in sweeps.items()}
    first = kinds[0]
    frontier = evaluations[first].sections["frontier"]
    reference = frontier["reference_model"]
    aiq_range = AIQRange.of(log)
    bootstrap = evaluations[first].bootstrap
    assert bootstrap is not None  # at least one resample
    zero_router = {"aiq": frontier["zero_router_aiq"]}
    zero_router |= {f"cost_to_{key}": reach["zero_router_cost"] for key, reach in frontier["cost_to_reach"].items()}
    return {
        "data": {
            "path": config.data.path,
            "fingerprint": log.fingerprint,
            "queries": log.n_queries,
            "models": list(log.models),
            "rows_read": log.stats.rows_read,
            "rows_rejected": log.stats.rows_rejected,
            "rejected_by_reason": log.stats.rejected_by_reason,
        },
        "folds": folds,
        "cost_range": frontier["cost_range"],
        "reference_model": reference,
        "reference": frontier["single_models"][reference],
        "zero_router": zero_router,
        "oracle": {"quality": frontier["oracle"]["quality"], "cost": frontier["oracle"]["cost"]},
        "agents": {kind: _agent_entry(evaluation.sections["frontier"]) for kind, evaluation in evaluations.items()},
        "aiq_difference_vs_first": {
            f"{first} - {kind}": paired_aiq_difference(
                evaluations[first].sweep, evaluations[kind].sweep, bootstrap, aiq_range
            )
            for kind in kinds[1:]
        },
    }


def _agent_entry(frontier: dict[str, Any]) -> dict[str, Any]:
    """An agent's row of compare.json, from its frontier section: AIQ and the costs to reach the reference."""
    entry = {"aiq": frontier["aiq"], "aiq_ci95": frontier["aiq_ci95"]}
    for key, reach in frontier["cost_to_reach"].items():
        entry[f"cost_to_{key}"] = reach["policy_cost"]
        entry[f"cost_to_{key}_share_of_reference"] = reach["policy_cost_share_of_reference"]
    return entry


def markdown(report: dict[str, Any]) -> str:
    """The comparison as tables."""
    reference = report["reference_model"]
    lines = [
        f"# Cross-validated comparison ({report['folds']} folds by query)",
        "",
        f"Data: `{report['data']['path']}`, {report['data']['queries']} queries, "
        f"{len(report['data']['models'])} models; rejected rows by reason: {report['data']['rejected_by_reason']}.",
        f"AIQ over the single models' cost range [{report['cost_range'][0]:.6f}, {report['cost_range'][1]:.6f}] "
        "USD per query; hulls allow mixing two operating points at random. 95% bootstrap intervals.",
        "",
        f"| router | AIQ | cost to 95% of {reference} | cost to 100% |",
        "|---|---|---|---|",
    ]

    def usd(value: float | None, share: float | None = None) -> str:
        if value is None:
            return "not reached"
        return f"{value:.6f}" + (f" ({share:.1%})" if share is not None else "")

    for kind, entry in report["agents"].items():
        low, high = entry["aiq_ci95"]
        lines.append(
            f"| {kind} | {entry['aiq']:.4f} [{low:.4f}, {high:.4f}] | "
            f"{usd(entry['cost_to_95%'], entry['cost_to_95%_share_of_reference'])} | "
            f"{usd(entry['cost_to_100%'], entry['cost_to_100%_share_of_reference'])} |"
        )
    zero, ref_cost = report["zero_router"], report["reference"]["cost"]
    zero_share = {k: None if zero[f"cost_to_{k}%"] is None else zero[f"cost_to_{k}%"] / ref_cost for k in (95, 100)}
    lines.append(
        f"| zero router | {zero['aiq']:.4f} | {usd(zero['cost_to_95%'], zero_share[95])} | "
        f"{usd(zero['cost_to_100%'], zero_share[100])} |"
    )
    oracle = report["oracle"]
    lines.append(
        f"| oracle (best quality per query, cheapest on ties) | - | quality {oracle['quality']:.4f} "
        f"({oracle['quality'] / report['reference']['quality']:.0%} of the reference) at "
        f"{usd(oracle['cost'], oracle['cost'] / ref_cost)} | |"
    )
    lines += [
        "",
        f"Reference {reference}: quality {report['reference']['quality']:.4f} at "
        f"{report['reference']['cost']:.6f} USD per query.",
        "",
        "| AIQ difference | value | 95% interval (paired bootstrap) |",
        "|---|---|---|",
    ]
    for name, diff in report["aiq_difference_vs_first"].items():
        lines.append(f"| {name} | {diff['value']:+.4f} | [{diff['ci95'][0]:+.4f}, {diff['ci95'][1]:+.4f}] |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI: cross-validate agents on a log and write compare.json and compare.md."""
    parser = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="run configuration (featurizer, agents, seed)")
    parser.add_argument("--data", help="log file or directory; overrides data.path")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds by query (default 5)")
    parser.add_argument(
        "--agents",
        default=",".join(COMPARED),
        help=f"comma-separated from {', '.join(AGENTS)}; the first is the reference of the differences "
        f"(default {','.join(COMPARED)})",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True, help="folder for compare.json and compare.md")
    args = parser.parse_args(argv)
    try:
        check_output(args.out, COMPARISON_FOLDER)  # before the work, which can take hours
        config = load_config(args.config, args.overrides, cli_data=args.data)
        if args.folds < 2:
            raise DataError("--folds must be at least 2")
        kinds = [k.strip() for k in args.agents.split(",") if k.strip()]
        for kind in kinds:
            if kind not in AGENTS:
                raise DataError(f"unknown agent {kind!r}; choose from {', '.join(AGENTS)}")
        prices = PriceTable.load_or_default(config.data.prices)
        log = load_log(config.data.path, prices=prices, max_cost=config.data.max_cost).log
        report = compare(log, config, kinds, args.folds)
        create_output(args.out, COMPARISON_FOLDER)
    except DataError as error:
        print(f"compare: error: {error}", file=sys.stderr)
        return 2
    write_text_atomically(args.out / "compare.json", json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    write_text_atomically(args.out / "compare.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
