"""Report of any exported policy on any log: ``python -m evaluation POLICY --data LOG [--out DIR]``.

Writes ``report.json``, ``report.md`` and ``frontier.png`` into ``--out`` (default
``<policy dir>/eval-<log name>/``); it never overwrites the training report. A full-information
log gets metrics with bootstrap intervals, the frontier, AIQ and costs to reach the reference
model's quality; a bandit-feedback log gets off-policy estimates. Exit status: 0 success, 2 bad
input (one line, no traceback), 1 other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from data.featurizer import TextFeaturizer
from data.loading import load_log
from data.prices import PriceTable
from data.routing_log import RoutingLog
from data.schema import DataError
from envs.estimators import PredictedOutcomes, RewardModel
from evaluation.bootstrap import Bootstrap
from evaluation.evaluate import (
    EvaluationConfig,
    Sweep,
    frontier_report,
    metrics_with_intervals,
    sweep_weights,
)
from evaluation.figures import save_frontier
from evaluation.ope import counterfactual_log, logged_outcomes, off_policy_estimates
from evaluation.report import data_section, write_markdown
from evaluation.routers import PolicyRouter
from policies.artifact import PolicyError, load_policy


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m evaluation", description="Evaluate a policy.pt on a log.")
    parser.add_argument("policy", type=Path, help="an exported policy.pt")
    parser.add_argument("--data", required=True, help="log file or directory (full-information or bandit)")
    parser.add_argument("--out", type=Path, help="report folder (default: <policy dir>/eval-<log name>/)")
    parser.add_argument("--cost-weight", type=float, help="operating point (default: the policy's default)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--reference-model", help="reference for cost-to-reach (default: the dearest model)")
    parser.add_argument("--prices", help="price table for rows with tokens instead of cost")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read pandas pickles (RISK: unpickling runs code from the file)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return parser.parse_args(argv)


def full_information_report(
    log: RoutingLog, module: Any, weight: float, config: EvaluationConfig, seed: int
) -> dict[str, Any]:
    """Metrics at the operating point and the frontier of the policy on ``log``."""
    decide = PolicyRouter(module).decider(log)
    bootstrap = Bootstrap(log.n_queries, config.bootstrap, seed) if config.bootstrap > 0 else None
    metrics = metrics_with_intervals(log, decide(weight), weight, bootstrap)
    sweep = Sweep.run(log, decide, sweep_weights(log, config), progress=True)
    return {"test": metrics, "frontier": frontier_report(log, sweep, metrics, config, bootstrap)}


def cross_fitted_predictions(log: RoutingLog, seed: int, folds: int = 2) -> PredictedOutcomes:
    """m̂ for a bandit-feedback log, cross-fitted: each fold is predicted by a model of the others.

    The reward model (per-arm ridge of :mod:`envs.estimators`) sees text features fitted on the
    other folds only, so DM and DR do not reuse a round's own outcome (Chernozhukov et al., 2018).
    """
    fold_of = np.random.default_rng(seed).integers(folds, size=log.n_queries)
    quality, cost = np.zeros((log.n_queries, log.n_models)), np.zeros((log.n_queries, log.n_models))
    actions, _, logged_quality, logged_cost = logged_outcomes(log)
    for fold in range(folds):
        held, kept = fold_of == fold, fold_of != fold
        if not held.any():
            continue
        kept_queries = [q for q, k in zip(log.queries, kept) if k]
        featurizer = TextFeaturizer().fit(kept_queries)
        model = RewardModel(log.n_models).fit(
            featurizer.transform(kept_queries), actions[kept], logged_quality[kept], logged_cost[kept]
        )
        predicted = model.predict(featurizer.transform([q for q, h in zip(log.queries, held) if h]))
        quality[held], cost[held] = predicted.quality, predicted.cost
    return PredictedOutcomes(quality=quality, cost=cost, latency_ms=None)


def bandit_feedback_report(
    log: RoutingLog, module: Any, weight: float, config: EvaluationConfig, seed: int
) -> dict[str, Any]:
    """Every OPE estimate at the operating point, and the DR-estimated frontier."""
    predictions = cross_fitted_predictions(log, seed)
    table = counterfactual_log(log, predictions, "dr")
    report = full_information_report(table, module, weight, config, seed)
    bootstrap = Bootstrap(log.n_queries, config.bootstrap, seed) if config.bootstrap > 0 else None
    actions = PolicyRouter(module).decider(log)(weight)
    report["off_policy"] = off_policy_estimates(log, actions, predictions, weight, bootstrap, seed)
    return report


def main(argv: list[str] | None = None) -> int:
    """Evaluate and write the report; user errors exit 2 with one line."""
    args = parse_args(argv)
    try:
        policy = load_policy(args.policy)
        module, metadata = policy.module, policy.metadata
        prices = PriceTable.load_or_default(args.prices)
        loaded = load_log(args.data, prices=prices, allow_pickle=args.allow_pickle)
        log = loaded.log
        weight = metadata["default_cost_weight"] if args.cost_weight is None else args.cost_weight
        if not weight >= 0 or weight == float("inf"):
            raise DataError(f"--cost-weight must be finite and >= 0, got {weight}")
        config = EvaluationConfig(bootstrap=args.bootstrap, reference_model=args.reference_model)
        out = args.out or args.policy.parent / f"eval-{Path(args.data).stem}"
        if out.resolve() == args.policy.parent.resolve():
            raise DataError("--out must not be the training run directory (its report would be overwritten)")
        out.mkdir(parents=True, exist_ok=True)
        loaded.quarantine.write(out / "rejected.jsonl")
        if log.feedback == "full":
            sections = full_information_report(log, module, weight, config, args.seed)
        else:
            sections = bandit_feedback_report(log, module, weight, config, args.seed)
            sections["evaluated_on"] = f"{Path(args.data).name}, estimated by DR from bandit feedback"
    except (DataError, PolicyError, ValueError) as error:
        print(f"evaluation: error: {error}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {
        "evaluated_on": Path(args.data).name,
        "data": data_section(log, args.data),
        "policy": {
            "path": str(args.policy),
            "agent": metadata["agent"],
            "cost_weight": weight,
            "score_kind": metadata["score_kind"],
            "trained_on": metadata["data_fingerprint"],
        },
        **sections,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_markdown(report, out / "report.md")
    save_frontier(report["frontier"], f"{metadata['agent']} on {Path(args.data).name}", out / "frontier.png")
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
