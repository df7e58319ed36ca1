"""Compare agents by cross-validation, by query or leave-one-task-out, with paired bootstrap intervals.

    python -m training.compare --config configs/routerbench.yaml --folds 5 --out runs/rb-compare
    python -m training.compare --config configs/routerbench.yaml --folds-by task --out runs/rb-tasks

Every query is held out exactly once. The folds (:class:`Folds`) are K groups of queries by hash
(``--folds-by query``), or one fold per task (``--folds-by task``: train on the other tasks,
test on the one left out, a shift of the query mix that resampling never shows). For each fold
and each compared router, :func:`fit_fold` builds the router from the fold's training part
alone, and the held-out queries are routed at every swept cost weight. The pooled out-of-fold
decisions give each router's frontier and AIQ on the whole log, evaluated by
:func:`evaluation.evaluate.evaluate` as any router is; differences of AIQ against the first
router and of routerl's learners against the best peer get paired bootstrap intervals (the same
resampled queries for both). The zero router (single models' hull) and the oracle are reported
beside them, and each fold's AIQs (which task a router loses on).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, cast, get_args

import numpy as np
from threadpoolctl import threadpool_limits

from agents.base import Agent, FeaturizedSplit, TrainingTask
from agents.callbacks import KeepBest
from agents.registry import default_learning
from data.loading import load_log
from data.outputs import OutputKind, check_output, create_output, write_text_atomically
from data.prices import PriceTable
from data.routing_log import RoutingLog
from data.schema import DataError
from data.splits import hash_unit
from evaluation.evaluate import EvaluationPlan, evaluate, sweep_weights, zero_router
from evaluation.html_report import comparison_commands, comparison_page
from evaluation.sweep import AIQRange, WeightSweep, paired_aiq_difference
from training.config import RunConfig, load_config
from training.factory import AGENTS, make_agent
from training.features import featurize, fit_featurizer
from training.tuning import tune

COMPARED = ("linucb", "ppo", "knn", "logistic")
#: routerl's own learners; every other compared kind is a peer, the best of which is ``best_peer``.
OWN_LEARNERS = ("linucb", "lints", "ppo")
FoldScheme = Literal["query", "task"]
Input = Literal["text", "embedding"]
COMPARISON_FOLDER = OutputKind("comparison folder", frozenset({"compare.json", "compare.md", "compare.html"}))


class Featurizer(Protocol):
    """What cross-validation needs of a featurizer: fitted on the training folds' texts, then applied."""

    @property
    def dimension(self) -> int: ...

    def fit(self, texts: list[str]) -> Featurizer: ...

    def transform(self, texts: list[str]) -> np.ndarray: ...


#: Builds an unfitted featurizer from the run configuration (``bench/bench_featurizer_variants.py``).
MakeFeaturizer = Callable[[RunConfig], Featurizer]


@dataclass(frozen=True)
class Folds:
    """Which fold holds out each query: ``of_query[i]`` indexes ``names``."""

    by: FoldScheme
    names: tuple[str, ...]
    of_query: np.ndarray  # (N,) int64

    @classmethod
    def by_query(cls, log: RoutingLog, count: int, seed: int) -> Folds:
        """K folds by hash of the query id: fold = floor(hash position × K) (docs/contracts.md §1.9)."""
        if count < 2:
            raise DataError(f"--folds must be at least 2, got {count}")
        of_query = np.floor(hash_unit(log.query_ids, seed) * count).astype(np.int64)
        return cls("query", tuple(str(fold + 1) for fold in range(count)), of_query)

    @classmethod
    def by_task(cls, log: RoutingLog) -> Folds:
        """One fold per task (sorted by name): leave-one-task-out. Every query needs a task, and two tasks at least."""
        if log.tasks is None:
            raise DataError("--folds-by task needs a 'task' column (RouterBench: eval_name); this log has none")
        untasked = [i for i, task in enumerate(log.tasks.tolist()) if task is None]
        if untasked:
            raise DataError(
                f"--folds-by task needs a task on every query; {len(untasked)} have none "
                f"(the first: query_id {log.query_ids[untasked[0]]!r})"
            )
        names, of_query = np.unique(log.tasks.astype(str), return_inverse=True)
        if len(names) < 2:
            raise DataError(f"--folds-by task needs at least 2 tasks; every query has the task {names[0]!r}")
        return cls("task", tuple(names.tolist()), of_query.astype(np.int64))

    def held_out(self, fold: int) -> np.ndarray:
        """The indices of the queries that fold ``fold`` holds out (the others train it)."""
        return np.flatnonzero(self.of_query == fold)


@dataclass(frozen=True)
class Router:
    """A compared router: an agent kind reading the text or the log's own embeddings."""

    kind: str
    input: Input = "text"

    @property
    def name(self) -> str:
        """``linucb`` on the text, ``linucb[embedding]`` on the embeddings."""
        return self.kind if self.input == "text" else f"{self.kind}[{self.input}]"


@dataclass(frozen=True)
class FoldRouter:
    """A router fitted on one fold's training part: its featurizer (None: the log's embeddings) and agent."""

    featurizer: Featurizer | None
    agent: Agent

    def decide(self, part: RoutingLog, weights: np.ndarray) -> np.ndarray:
        """(W, n) the model chosen for each query of ``part`` at each weight."""
        features = _features(part, self.featurizer)
        return np.stack([self.agent.predict(features, float(weight)) for weight in weights])


def _features(part: RoutingLog, featurizer: Featurizer | None) -> np.ndarray:
    """The text features of ``part``, or its embeddings and a bias (:func:`training.features.featurize`)."""
    return featurize(part, None).features if featurizer is None else featurizer.transform(part.queries)


def fit_fold(
    config: RunConfig, kind: str, train: RoutingLog, make_featurizer: MakeFeaturizer | None = None
) -> FoldRouter:
    """The router of ``kind`` built from one fold's training part ``train`` alone (the one place).

    ``config.input`` says what it reads: the text, through a featurizer fitted on ``train``'s
    texts (``make_featurizer``; by default routerl's own, :func:`training.features.fit_featurizer`),
    or the log's embeddings. Unless a featurizer is given, :func:`training.tuning.tune` first
    chooses the featurizer's values (and the kind's ridge) by cross-validation on ``train`` alone,
    as ``train.py`` does (``tuning.enabled: false`` keeps the configured ones). The kind learns its
    default way (lints online, linucb by its fit); an agent that stops early is validated on a
    tenth of ``train`` (by query-id hash).
    """
    if make_featurizer is None:  # routerl's own featurizer: its values and the kind's ridge tuned on ``train``
        config = tune(config, train, kind=kind).config
    featurizer: Featurizer | None = None
    if config.input == "text" and make_featurizer is None:
        featurizer = fit_featurizer(config, train)
    elif config.input == "text" and make_featurizer is not None:
        featurizer = make_featurizer(config).fit(train.queries)
    features = _features(train, featurizer)
    agent = make_agent(kind, config, train.n_models, features.shape[1])
    learned, validation = FeaturizedSplit(train, features), None
    if agent.stops_early:
        held = hash_unit(train.query_ids, config.seed + 1) < 0.1
        learned = FeaturizedSplit(train.subset(np.flatnonzero(~held)), features[~held])
        validation = FeaturizedSplit(train.subset(np.flatnonzero(held)), features[held])
    task = TrainingTask(
        learned,
        validation,
        reward=config.reward,
        learning=default_learning(kind),
        online_steps=config.agent.online_steps,
        seed=config.seed,
    )
    agent.train(task, [KeepBest(validation, config.agent.checkpoint_every)])
    return FoldRouter(featurizer, agent)


@dataclass(frozen=True)
class OutOfFold:
    """Each router's pooled out-of-fold choices at every weight, and its seconds (fit and routing, all folds)."""

    sweeps: dict[str, WeightSweep]
    seconds: dict[str, float]


def cross_validate(
    log: RoutingLog,
    config: RunConfig,
    routers: Sequence[Router],
    folds: Folds,
    weights: np.ndarray,
    make_featurizer: MakeFeaturizer | None = None,
) -> OutOfFold:
    """Out-of-fold actions of each router at every weight, pooled over the folds (:func:`fit_fold` per fold)."""
    actions = {router.name: np.zeros((len(weights), log.n_queries), dtype=np.int64) for router in routers}
    seconds = dict.fromkeys(actions, 0.0)
    for fold in range(len(folds.names)):
        held = folds.held_out(fold)
        train, test = log.subset(np.flatnonzero(folds.of_query != fold)), log.subset(held)
        for router in routers:
            start = time.perf_counter()
            fitted = fit_fold(replace(config, input=router.input), router.kind, train, make_featurizer)
            actions[router.name][:, held] = fitted.decide(test, weights)
            seconds[router.name] += time.perf_counter() - start
    sweeps = {name: WeightSweep.from_actions(log, weights, chosen) for name, chosen in actions.items()}
    return OutOfFold(sweeps, seconds)


def cross_validated_sweeps(
    log: RoutingLog,
    config: RunConfig,
    kinds: list[str],
    folds: int,
    weights: np.ndarray,
    make_featurizer: MakeFeaturizer | None = None,
) -> dict[str, WeightSweep]:
    """:func:`cross_validate` of ``kinds`` on the text with ``folds`` folds by query: the sweeps only.

    ``make_featurizer`` builds each fold's featurizer (``bench/bench_featurizer_variants.py``
    compares others with routerl's own this way).
    """
    routers, by_query = [Router(kind) for kind in kinds], Folds.by_query(log, folds, config.seed)
    return cross_validate(log, config, routers, by_query, weights, make_featurizer).sweeps


def compare(
    log: RoutingLog, config: RunConfig, kinds: list[str], folds: Folds, inputs: Sequence[Input] = ("text",)
) -> dict[str, Any]:
    """The comparison report: per router AIQ (with interval), costs to reach the reference, differences.

    Routers are every kind on every input (``inputs``), text first. Each router's pooled
    out-of-fold choices are evaluated on the whole log with no operating point (they exist only
    at the swept weights); the zero router, oracle and reference come from the same evaluation.
    Bootstrap intervals are always given (at least one resample).
    """
    if log.feedback != "full":
        raise DataError("the comparison needs a full-information log; this one has bandit feedback")
    if "embedding" in inputs and log.embeddings is None:
        raise DataError("--inputs embedding needs an 'embedding' column on every row of the log")
    routers = [Router(kind, source) for source in inputs for kind in kinds]
    weights = sweep_weights(log, config.evaluation)
    with threadpool_limits(limits=config.blas_threads, user_api="blas"):  # as train.py (RunConfig.blas_threads)
        out_of_fold = cross_validate(log, config, routers, folds, weights)
    resampled = replace(config.evaluation, bootstrap=max(config.evaluation.bootstrap, 1))
    plan = EvaluationPlan(resampled, config.seed, cost_weight=None, weights=weights)
    evaluations = {name: evaluate(log, sweep.decide, plan) for name, sweep in out_of_fold.sweeps.items()}
    first = routers[0].name
    frontier = evaluations[first].sections["frontier"]
    reference = frontier["reference_model"]
    bootstrap = evaluations[first].bootstrap
    assert bootstrap is not None  # at least one resample
    aiq_range = AIQRange.of(log)

    def difference(a: str, b: str) -> dict[str, Any]:
        return paired_aiq_difference(evaluations[a].sweep, evaluations[b].sweep, bootstrap, aiq_range)

    agents = {
        router.name: {"kind": router.kind, "input": router.input, **_agent_entry(evaluations[router.name])}
        | {"seconds": out_of_fold.seconds[router.name]}
        for router in routers
    }
    peers = [router.name for router in routers if router.kind not in OWN_LEARNERS]
    best_peer = max(peers, key=lambda name: agents[name]["aiq"]) if peers else None
    own = [router.name for router in routers if router.kind in OWN_LEARNERS]
    zero = {"aiq": frontier["zero_router_aiq"]}
    zero |= {f"cost_to_{key}": reach["zero_router_cost"] for key, reach in frontier["cost_to_reach"].items()}
    return {
        "data": _data_section(log, config),
        "folds": len(folds.names),
        "folds_by": folds.by,
        "fold_queries": {name: int((folds.of_query == fold).sum()) for fold, name in enumerate(folds.names)},
        "inputs": list(inputs),
        "cost_range": frontier["cost_range"],
        "reference_model": reference,
        "reference": frontier["single_models"][reference],
        "single_models": frontier["single_models"],
        "cost_weights": frontier["cost_weights"],
        "zero_router": zero,
        "oracle": {"quality": frontier["oracle"]["quality"], "cost": frontier["oracle"]["cost"]},
        "agents": agents,
        "aiq_difference_vs_first": {f"{first} - {r.name}": difference(first, r.name) for r in routers[1:]},
        "best_peer": best_peer,
        "aiq_difference_vs_best_peer": {} if best_peer is None else {
            f"{name} - {best_peer}": difference(name, best_peer) for name in own
        },
        "per_fold": _per_fold(log, folds, out_of_fold.sweeps),
    }  # fmt: skip


def _data_section(log: RoutingLog, config: RunConfig) -> dict[str, Any]:
    """What was compared on: the log's path, fingerprint, size and rejections."""
    return {
        "path": config.data.path,
        "fingerprint": log.fingerprint,
        "queries": log.n_queries,
        "models": list(log.models),
        "rows_read": log.stats.rows_read,
        "rows_rejected": log.stats.rows_rejected,
        "rejected_by_reason": log.stats.rejected_by_reason,
    }


def _agent_entry(evaluation: Any) -> dict[str, Any]:
    """A router's row of compare.json, from its frontier section: AIQ, the costs to reach the reference, the
    swept points (with the shares per model) and their hull."""
    frontier = evaluation.sections["frontier"]
    entry = {"aiq": frontier["aiq"], "aiq_ci95": frontier["aiq_ci95"]}
    for key, reach in frontier["cost_to_reach"].items():
        entry[f"cost_to_{key}"] = reach["policy_cost"]
        entry[f"cost_to_{key}_share_of_reference"] = reach["policy_cost_share_of_reference"]
    return entry | {"points": frontier["points"], "hull": frontier["hull"]}


def _per_fold(log: RoutingLog, folds: Folds, sweeps: dict[str, WeightSweep]) -> dict[str, Any]:
    """Per fold, on its held-out queries alone: their count, the zero router's AIQ and each router's.

    Each fold's AIQ is measured over its own queries' single-model cost range, so a fold's
    numbers compare routers on that fold (that task), not folds with each other.
    """
    report = {}
    for fold, name in enumerate(folds.names):
        held = folds.held_out(fold)
        part = log.subset(held)
        aiq_range = AIQRange.of(part)
        report[name] = {
            "queries": len(held),
            "zero_router_aiq": aiq_range.aiq(zero_router(part)),
            "aiq": {
                router: aiq_range.aiq(WeightSweep.from_actions(part, sweep.weights, sweep.actions[:, held]).frontier())
                for router, sweep in sweeps.items()
            },
        }
    return report


def _usd(value: float | None, share: float | None = None) -> str:
    """A cost per query in a table cell, with its share of the reference's cost."""
    if value is None:
        return "not reached"
    return f"{value:.6f}" + (f" ({share:.1%})" if share is not None else "")


def _scheme(report: dict[str, Any]) -> str:
    """The fold scheme in words."""
    if report["folds_by"] == "task":
        return f"leave-one-task-out, {report['folds']} tasks"
    return f"{report['folds']} folds by query"


def markdown(report: dict[str, Any]) -> str:
    """The comparison as tables."""
    reference, ref_cost = report["reference_model"], report["reference"]["cost"]
    lines = [
        f"# Cross-validated comparison ({_scheme(report)})",
        "",
        f"Data: `{report['data']['path']}`, {report['data']['queries']} queries, "
        f"{len(report['data']['models'])} models; rejected rows by reason: {report['data']['rejected_by_reason']}.",
        f"AIQ over the single models' cost range [{report['cost_range'][0]:.6f}, {report['cost_range'][1]:.6f}] "
        "USD per query; hulls allow mixing two operating points at random. 95% bootstrap intervals. "
        f"Reference: {reference}, the best single model by mean quality unless set.",
        "",
        f"| router | AIQ | cost to 95% of {reference} | cost to 100% | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, entry in report["agents"].items():
        low, high = entry["aiq_ci95"]
        lines.append(
            f"| {name} | {entry['aiq']:.4f} [{low:.4f}, {high:.4f}] | "
            f"{_usd(entry['cost_to_95%'], entry['cost_to_95%_share_of_reference'])} | "
            f"{_usd(entry['cost_to_100%'], entry['cost_to_100%_share_of_reference'])} | {entry['seconds']:.1f} |"
        )
    zero = report["zero_router"]
    zero_share = {k: None if zero[f"cost_to_{k}%"] is None else zero[f"cost_to_{k}%"] / ref_cost for k in (95, 100)}
    lines.append(
        f"| zero router | {zero['aiq']:.4f} | {_usd(zero['cost_to_95%'], zero_share[95])} | "
        f"{_usd(zero['cost_to_100%'], zero_share[100])} | |"
    )
    oracle = report["oracle"]
    lines += [
        f"| oracle (best quality per query, cheapest on ties) | - | quality {oracle['quality']:.4f} "
        f"({oracle['quality'] / report['reference']['quality']:.0%} of the reference) at "
        f"{_usd(oracle['cost'], oracle['cost'] / ref_cost)} | | |",
        "",
        f"Reference {reference}: quality {report['reference']['quality']:.4f} at {ref_cost:.6f} USD per query.",
        "",
        *_differences(report),
        "",
        *_fold_table(report),
    ]
    return "\n".join(lines) + "\n"


def _differences(report: dict[str, Any]) -> list[str]:
    """The paired AIQ differences: against the first router, then routerl's learners against the best peer."""
    lines = ["| AIQ difference | value | 95% interval (paired bootstrap) |", "|---|---|---|"]
    differences = report["aiq_difference_vs_first"] | report["aiq_difference_vs_best_peer"]
    for name, diff in differences.items():
        lines.append(f"| {name} | {diff['value']:+.4f} | [{diff['ci95'][0]:+.4f}, {diff['ci95'][1]:+.4f}] |")
    if report["best_peer"] is not None:
        lines += ["", f"Best peer (highest AIQ of the routers other than {', '.join(OWN_LEARNERS)}): "
                      f"{report['best_peer']}."]  # fmt: skip
    return lines


def _fold_table(report: dict[str, Any]) -> list[str]:
    """Each fold's AIQ per router, on its held-out queries (the left-out task with ``--folds-by task``)."""
    names = list(report["agents"])
    fold = "task left out" if report["folds_by"] == "task" else "fold"
    lines = [
        f"| {fold} | queries | zero router | {' | '.join(names)} |",
        f"|---|---|---|{'---|' * len(names)}",
    ]
    for name, entry in report["per_fold"].items():
        aiq = " | ".join(f"{entry['aiq'][router]:.4f}" for router in names)
        lines.append(f"| {name} | {entry['queries']} | {entry['zero_router_aiq']:.4f} | {aiq} |")
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="run configuration (featurizer, agents, seed)")
    parser.add_argument("--data", help="log file or directory; overrides data.path")
    parser.add_argument(
        "--folds-by",
        choices=get_args(FoldScheme),
        default="query",
        help="query: K folds by query hash (default); task: leave one task out (the log's task column)",
    )
    parser.add_argument("--folds", type=int, help="folds by query (default 5); not with --folds-by task")
    parser.add_argument(
        "--agents",
        default=",".join(COMPARED),
        help=f"comma-separated from {', '.join(AGENTS)}; the first is the reference of the differences "
        f"(default {','.join(COMPARED)})",
    )
    parser.add_argument("--inputs", help="comma-separated from text, embedding: each agent on each (default: the "
                        "config's input); embedding reads the log's embedding column")  # fmt: skip
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True, help="folder for compare.json, .md and .html")
    return parser


def _names(text: str, allowed: Sequence[str], option: str) -> list[str]:
    """A comma-separated option's values, each checked against ``allowed`` (duplicates dropped)."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise DataError(f"{option} names nothing")
    for name in names:
        if name not in allowed:
            raise DataError(f"unknown {option} value {name!r}; choose from {', '.join(allowed)}")
    return names


def main(argv: list[str] | None = None) -> int:
    """CLI: cross-validate agents on a log and write compare.json, compare.md and compare.html."""
    args = _parser().parse_args(argv)
    try:
        check_output(args.out, COMPARISON_FOLDER)  # before the work, which can take hours
        config = load_config(args.config, args.overrides, cli_data=args.data)
        if args.folds_by == "task" and args.folds is not None:
            raise DataError("--folds is for --folds-by query; leaving one task out makes one fold per task")
        kinds = _names(args.agents, AGENTS, "--agents")
        inputs = cast(list[Input], _names(args.inputs or config.input, get_args(Input), "--inputs"))
        prices = PriceTable.load_or_default(config.data.prices)
        log = load_log(config.data.path, prices=prices, max_cost=config.data.max_cost).log
        folds = Folds.by_task(log) if args.folds_by == "task" else Folds.by_query(log, args.folds or 5, config.seed)
        report = compare(log, config, kinds, folds, inputs)
        create_output(args.out, COMPARISON_FOLDER)
    except DataError as error:
        print(f"compare: error: {error}", file=sys.stderr)
        return 2
    write_text_atomically(args.out / "compare.json", json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    write_text_atomically(args.out / "compare.md", text)
    page = comparison_page(report, comparison_commands(report, str(args.config), args.overrides))
    write_text_atomically(args.out / "compare.html", page)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
