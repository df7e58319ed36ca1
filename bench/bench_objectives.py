"""Every objective, swept (issue 22): a policy swept on its USD weight vs on an energy (or latency) weight.

A ``train.py`` run's report (``report.json`` ``objectives``) shows where the policy's USD trade-off
lands on the other costs: the hull of its **USD-weight sweep** seen on the energy axis. A LinUCB or
LinTS policy trained on a log with energy (logged or estimated) also takes a weight per objective
(docs/contracts.md §2.13): ``policy.route(queries, {"usd": u, "energy": w})``. This benchmark
sweeps that weight and asks what it buys on the energy axis.

For each run directory given (all on the same log, hence the same test split):

1. The test split is rebuilt with the run's own code and settings (``config.yaml``:
   :func:`data.loading.load_log`, :func:`data.energy.with_energy_estimates`,
   :func:`data.splits.split`); the log's fingerprint must be the report's.
2. The exported ``policy.pt`` is loaded as a user loads it (:func:`policies.artifact.load_policy`)
   and asked, on the test queries, at every weight of each sweep (:class:`evaluation.routers.PolicyRouter`):

   * ``usd``: the report's own cost weights (``frontier.cost_weights``), a number per call;
   * for each objective beside USD that the policy takes (``energy``; ``latency`` where the log
     has it; carbon is energy at the grid intensity, so it is not swept apart), at each fixed USD
     weight of ``--usd-weights``: ``{"usd": u, objective: w}`` over 0 and log-spaced weights around
     the single models' break-even weights on that objective's axis (on the training split,
     :func:`evaluation.frontier.cost_weight_grid`, as the report's USD grid is made);
   * ``all sweeps``: every operating point above together (mixing any two is achievable).

3. Every sweep's choices are scored with the log's outcomes on every objective's axis by the
   report's own code (:func:`evaluation.objectives.objective_frontier`: the hull, its AIQ over the
   single models' span, and the single models' hull), and the least mean cost on each axis to
   reach 95% of the best single model's quality (:func:`evaluation.frontier.cost_to_reach`). The
   oracle is the per-query oracle of each axis swept over that axis's weights
   (:func:`evaluation.metrics.oracle_actions`).

It prints three markdown tables: the runs' ``objectives`` sections side by side (rows: each run's
policy, the best single model, the oracle at the operating weight); the sweeps' AIQ and cost to
reach on every axis; and per sweep and axis its AIQ minus the same policy's USD sweep's and minus
the single models' hull's, with paired bootstrap 95% intervals
(:func:`evaluation.sweep.paired_aiq_difference`). The USD sweep's AIQs are checked against the
report's (same decisions, through the exported file instead of the in-process agent). Results:
BENCHMARKS.md, "Every objective (issue 22)".

    python bench/bench_objectives.py /tmp/bo_rp_linucb /tmp/bo_rp_ppo --usd-weights 0,30,default
    python bench/bench_objectives.py RUN --data LOG   # when the run's data path is not valid from here
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data.energy import EnergyTable, with_energy_estimates  # noqa: E402
from data.loading import load_log  # noqa: E402
from data.prices import PriceTable  # noqa: E402
from data.routing_log import RoutingLog  # noqa: E402
from data.splits import split  # noqa: E402
from evaluation.bootstrap import Bootstrap  # noqa: E402
from evaluation.frontier import cost_to_reach, cost_weight_grid  # noqa: E402
from evaluation.metrics import oracle_actions  # noqa: E402
from evaluation.objectives import UNITS, Objectives, objective_frontier, objective_view  # noqa: E402
from evaluation.routers import PolicyRouter  # noqa: E402
from evaluation.sweep import AIQRange, WeightSweep, paired_aiq_difference  # noqa: E402
from policies.artifact import LoadedPolicy, load_policy  # noqa: E402
from training.config import RunConfig, read_config_tree, validated  # noqa: E402

#: Objectives a weight is swept for, besides USD (carbon is energy × grid intensity: the same sweep); their
#: weights are per unit of :meth:`data.routing_log.RoutingLog.objective_table` (latency in seconds, energy in Wh).
SWEPT = ("latency", "energy")
#: Share of the best single model's quality whose least cost on each axis is reported.
REACH_SHARE = 0.95


@dataclass(frozen=True)
class Run:
    """A train.py run directory: its report, configuration and exported policy."""

    directory: Path
    report: dict[str, Any]
    config: RunConfig
    policy: LoadedPolicy

    @classmethod
    def read(cls, directory: Path) -> Run:
        """Read ``report.json``, ``config.yaml`` (its paths relative to where train.py ran) and ``policy.pt``."""
        report = json.loads((directory / "report.json").read_text(encoding="utf-8"))
        config_path = directory / "config.yaml"
        config = validated(RunConfig, read_config_tree(config_path), config_path)
        return cls(directory, report, config, load_policy(directory / "policy.pt"))

    @property
    def name(self) -> str:
        """The policy's agent, as the report names it."""
        return str(self.report["policy"]["agent"])


@dataclass(frozen=True)
class Sweep:
    """One sweep of a policy's weights: its name, choices on the test split and seconds spent routing."""

    name: str
    sweep: WeightSweep
    seconds: float


@dataclass(frozen=True)
class Result:
    """A run's sweep scored on every axis: AIQs and least costs (:func:`axes_of`), paired differences."""

    run: Run
    sweep: Sweep
    axes: dict[str, dict[str, Any]]
    differences: dict[str, dict[str, dict[str, Any]]]


class ObjectiveWeighted:
    """A policy seen as a one-weight router whose weight is ``objective``'s, the USD weight held at ``usd_weight``.

    :class:`evaluation.routers.PolicyRouter` asks ``route(queries, w)`` and ``models()``; this passes
    ``{"usd": usd_weight, objective: w}`` on (docs/contracts.md §2.13).
    """

    def __init__(self, module: Any, objective: str, usd_weight: float) -> None:
        self.module, self.objective, self.usd_weight = module, objective, usd_weight

    def models(self) -> list[str]:
        """The policy's models."""
        names: list[str] = self.module.models()
        return names

    def route(self, queries: list[str], weight: float) -> list[str]:
        """The policy's choices at ``{"usd": usd_weight, objective: weight}``."""
        chosen: list[str] = self.module.route(queries, {"usd": self.usd_weight, self.objective: float(weight)})
        return chosen


def split_logs(config: RunConfig, data: str | None, fingerprint: str) -> tuple[RoutingLog, RoutingLog]:
    """The run's training and test splits, rebuilt as train.py built them (energy estimated where not logged)."""
    path = data or config.data.path
    loaded = load_log(
        path,
        prices=PriceTable.load_or_default(config.data.prices),
        allow_pickle=config.data.allow_pickle,
        max_cost=config.data.max_cost,
    )
    if loaded.log.fingerprint != fingerprint:
        raise SystemExit(f"bench_objectives: {path} is not the run's log (fingerprint differs): pass --data")
    log = with_energy_estimates(loaded.log, EnergyTable.load_or_default(config.data.energy))
    splits = split(log, config.data.fractions, config.seed, config.data.split)
    return log.subset(splits.train), log.subset(splits.test)


def timed_sweep(name: str, test: RoutingLog, router: Any, weights: np.ndarray) -> Sweep:
    """``router``'s choices on the test queries at every weight, through :class:`PolicyRouter`."""
    started = time.perf_counter()
    sweep = WeightSweep.run(test, PolicyRouter(router).decider(test), weights)
    return Sweep(name, sweep, time.perf_counter() - started)


def policy_sweeps(
    run: Run, train: RoutingLog, test: RoutingLog, objectives: Objectives, usd_weights: Sequence[str], points: int
) -> list[Sweep]:
    """The USD sweep at the report's weights, then each other objective's sweep at each fixed USD weight."""
    module = run.policy.module
    sweeps = [timed_sweep("usd", test, module, np.asarray(run.report["frontier"]["cost_weights"], dtype=float))]
    for objective in (o for o in SWEPT if o in run.policy.objectives() and o in objectives.costs):
        train_costs = train.objective_table()[objective]  # in the policy's unit (latency in seconds)
        grid = cost_weight_grid(np.nanmean(train.quality, axis=0), np.nanmean(train_costs, axis=0), points)
        for text in usd_weights:
            usd = run.policy.default_cost_weight if text == "default" else float(text)
            router = ObjectiveWeighted(module, objective, usd)
            sweeps.append(timed_sweep(f"{objective} (usd {usd:g})", test, router, grid))
    if len(sweeps) > 1:
        weights = np.concatenate([s.sweep.weights for s in sweeps])
        actions = np.concatenate([s.sweep.actions for s in sweeps])
        total = sum(s.seconds for s in sweeps)
        sweeps.append(Sweep("all sweeps", WeightSweep.from_actions(test, weights, actions), total))
    return sweeps


def axes_of(sweep: WeightSweep, test: RoutingLog, objectives: Objectives, target: float) -> dict[str, dict[str, Any]]:
    """Per objective axis: the sweep's hull AIQ, the single models' hull AIQ and both least costs to ``target``."""
    axes = {}
    for name, cost in objectives.costs.items():
        frontier = objective_frontier(objective_view(test, cost), sweep)
        axes[name] = {
            "aiq": frontier.report["aiq"],
            "zero_router_aiq": frontier.report["zero_router_aiq"],
            "reach": cost_to_reach(frontier.hull, target),
            "zero_router_reach": cost_to_reach(frontier.zero_router, target),
        }
    return axes


def oracle_axes(test: RoutingLog, objectives: Objectives, target: float, points: int) -> dict[str, dict[str, Any]]:
    """Per objective axis: the per-query oracle of that axis swept over its weights (AIQ, least cost to ``target``)."""
    axes = {}
    for name, cost in objectives.costs.items():
        view = objective_view(test, cost)
        grid = cost_weight_grid(view.quality.mean(axis=0), view.cost.mean(axis=0), points)
        hull = WeightSweep.run(view, partial(oracle_actions, view), grid).frontier()
        axes[name] = {"aiq": AIQRange.of(view).aiq(hull), "reach": cost_to_reach(hull, target)}
    return axes


def single_models_sweep(log: RoutingLog) -> WeightSweep:
    """Each model alone, as a sweep (one "weight" per model): its hull is the single models' hull."""
    models = np.arange(len(log.models))
    return WeightSweep.from_actions(log, models.astype(float), np.repeat(models[:, None], log.n_queries, axis=1))


def paired_differences(
    sweep: WeightSweep, usd: WeightSweep, test: RoutingLog, objectives: Objectives, bootstrap: Bootstrap
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per axis, AIQ(``sweep``) − AIQ(the USD sweep) and − AIQ(the single models' hull), with paired 95% intervals.

    :func:`evaluation.sweep.paired_aiq_difference` on that axis's view: the same query resamples for both.
    """
    differences = {}
    for name, cost in objectives.costs.items():
        view = objective_view(test, cost)
        mine, aiq_range = WeightSweep.from_actions(view, sweep.weights, sweep.actions), AIQRange.of(view)
        against = {"usd sweep": WeightSweep.from_actions(view, usd.weights, usd.actions)}
        against["single models"] = single_models_sweep(view)
        differences[name] = {
            other: paired_aiq_difference(mine, theirs, bootstrap, aiq_range) for other, theirs in against.items()
        }
    return differences


def number(value: float | None) -> str:
    """A cost cell: four significant figures, or "-" (not reached or unavailable)."""
    return "-" if value is None else f"{value:.4g}"


def share(value: float) -> str:
    """A quality or AIQ cell: four decimals."""
    return f"{value:.4f}"


def routers_table(runs: Sequence[Run], oracle: Mapping[str, Mapping[str, Any]]) -> str:
    """The runs' ``objectives`` sections side by side: each policy, the best single model, the oracle at the weight."""
    first = runs[0].report["objectives"]
    names = [name for name in UNITS if name in first["frontiers"]]
    keys = ["quality", "usd", "latency_ms_p50", "latency_ms_p95", "energy_wh", "gco2e"]
    keys = [key for key in keys if key in first["routers"]["policy"]]
    formats = [share if key == "quality" else number for key in keys]
    best = first["routers"]["best single"]
    shares = runs[0].report["baselines"]["best single"]["share_per_model"]
    best_model = max(shares, key=shares.__getitem__)
    rows = [(f"{run.name} (policy.pt, w = {run.report['policy']['cost_weight']:g})", run) for run in runs]
    header = ["router", *keys, *(f"AIQ {name}" for name in names)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, run in rows:
        section = run.report["objectives"]
        cells = [cell(section["routers"]["policy"][key]) for key, cell in zip(keys, formats)]
        lines.append(
            f"| {label} | " + " | ".join(cells + [share(section["frontiers"][n]["aiq"]) for n in names]) + " |"
        )
    hull = [share(first["frontiers"][n]["zero_router_aiq"]) for n in names]
    lines.append(
        f"| best single model ({best_model}; AIQ: single models' hull) | "
        + " | ".join([cell(best[key]) for key, cell in zip(keys, formats)] + hull)
        + " |"
    )
    weight = runs[0].report["policy"]["cost_weight"]
    cells = [cell(first["routers"]["oracle"][key]) for key, cell in zip(keys, formats)]
    cells += [share(oracle[n]["aiq"]) for n in names]
    lines.append(f"| oracle (per query at w = {weight:g}; AIQ: swept per axis) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweeps_table(
    results: Sequence[Result],
    oracle: Mapping[str, Mapping[str, Any]],
    names: Sequence[str],
) -> str:
    """Per sweep: points, seconds, and per axis the AIQ and least mean cost to the target; then the hull and oracle."""
    header = ["policy", "sweep", "points", "s"]
    for name in names:
        header += [f"AIQ {name}", f"{UNITS[name]} to {round(REACH_SHARE * 100)}%"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        sweep, axes = result.sweep, result.axes
        cells = [result.run.name, sweep.name, str(len(sweep.sweep.weights)), f"{sweep.seconds:.2f}"]
        for name in names:
            cells += [share(axes[name]["aiq"]), number(axes[name]["reach"])]
        lines.append("| " + " | ".join(cells) + " |")
    axes = results[0].axes
    cells = ["single models' hull", "-", "-", "-"]
    for name in names:
        cells += [share(axes[name]["zero_router_aiq"]), number(axes[name]["zero_router_reach"])]
    lines.append("| " + " | ".join(cells) + " |")
    cells = ["oracle (per query, swept per axis)", "-", "-", "-"]
    for name in names:
        cells += [share(oracle[name]["aiq"]), number(oracle[name]["reach"])]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def differences_table(results: Sequence[Result], names: Sequence[str]) -> str:
    """Per sweep and axis: AIQ minus the same policy's USD sweep's and minus the single models' hull's [95% CI]."""
    header = ["policy", "sweep"]
    for name in names:
        header += [f"{name}: Δ vs USD sweep", f"{name}: Δ vs single models"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        cells = [result.run.name, result.sweep.name]
        for name in names:
            for other in ("usd sweep", "single models"):
                difference = result.differences[name][other]
                low, high = difference["ci95"]
                cells.append(f"{difference['value']:+.4f} [{low:+.4f}, {high:+.4f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_check(result: Result) -> list[str]:
    """Where the USD sweep of policy.pt gives another AIQ than the report's (from the in-process agent)."""
    frontiers, axes = result.run.report["objectives"]["frontiers"], result.axes
    return [
        f"{result.run.name} {name}: policy.pt {axes[name]['aiq']:.6f} vs report {frontiers[name]['aiq']:.6f}"
        for name in frontiers
        if result.sweep.name == "usd" and abs(axes[name]["aiq"] - frontiers[name]["aiq"]) > 1e-9
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="train.py run directories on one log")
    parser.add_argument("--data", help="the runs' log, when their config.yaml's path is not valid from here")
    parser.add_argument(
        "--usd-weights", default="0", help="fixed USD weights of the energy sweeps ('default': the policy's)"
    )
    parser.add_argument("--points", type=int, default=41, help="weights per energy sweep and per oracle sweep")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples of the paired intervals")
    parser.add_argument("--json", type=Path, help="also write every number here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Sweep every run's policy, print the tables (and write the JSON)."""
    args = parse_args(argv)
    runs = [Run.read(directory) for directory in args.runs]
    fingerprints = {run.report["data"]["fingerprint"] for run in runs}
    splits = {json.dumps(run.report["split"], sort_keys=True) for run in runs}
    if len(fingerprints) != 1 or len(splits) != 1:
        raise SystemExit("bench_objectives: the runs must share one log and one split")
    train, test = split_logs(runs[0].config, args.data, fingerprints.pop())
    objectives = Objectives.of(test, runs[0].config.evaluation.grid_intensity)
    reference = runs[0].report["objectives"]["reach"]["reference_quality"]
    target = REACH_SHARE * reference
    oracle = oracle_axes(test, objectives, target, args.points)
    bootstrap = Bootstrap(test.n_queries, args.bootstrap, runs[0].config.seed)
    results = []
    for run in runs:
        sweeps = policy_sweeps(run, train, test, objectives, args.usd_weights.split(","), args.points)
        for sweep in sweeps:
            axes = axes_of(sweep.sweep, test, objectives, target)
            differences = paired_differences(sweep.sweep, sweeps[0].sweep, test, objectives, bootstrap)
            results.append(Result(run, sweep, axes, differences))
    mismatches = [line for result in results for line in report_check(result)]
    print(
        f"test split: {test.n_queries} queries x {len(test.models)} models; objectives "
        f"{', '.join(objectives.costs)}; unavailable: {objectives.unavailable or 'none'}"
    )
    print(
        f"reach target: {REACH_SHARE:.0%} of {runs[0].report['objectives']['reach']['reference_model']}'s "
        f"quality {reference:.4f} = {target:.4f}\n"
    )
    print(routers_table(runs, oracle) + "\n")
    print(sweeps_table(results, oracle, list(objectives.costs)) + "\n")
    print(differences_table(results, [name for name in objectives.costs if name != "carbon"]) + "\n")
    print("USD sweeps of policy.pt match the reports' AIQs" if not mismatches else "\n".join(mismatches))
    if args.json is not None:
        records = [
            {
                "run": str(result.run.directory),
                "agent": result.run.name,
                "sweep": result.sweep.name,
                "weights": result.sweep.sweep.weights.tolist(),
                "seconds": result.sweep.seconds,
                "axes": result.axes,
                "aiq_differences": result.differences,
            }
            for result in results
        ]
        args.json.write_text(json.dumps({"oracle": oracle, "sweeps": records}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
