"""The cross-validated comparison on RouterBench, RouteProfile and a synthetic log, by query and by task.

For each dataset and fold scheme, :func:`training.compare.compare` (what ``python -m
training.compare`` runs) cross-validates every router: 5 folds by query, and leave-one-task-out
(RouterBench's ``eval_name``, RouteProfile's ``task``, the synthetic log's topics). It prints, per
dataset, one markdown table: each router's AIQ with its 95% bootstrap interval, its paired AIQ
difference against the best peer (the other kinds' highest AIQ) and its cost to reach 95% of the
reference's quality (the best single model's), for both schemes side by side; then the zero router
and the oracle, and the seconds each run took. The header gives the machine, the date and the
command, for BENCHMARKS.md.

The cost weight the learners train at (``reward.cost_weight``) is taken from each log, never set by
hand: the median of its single models' break-even weights (:func:`envs.rewards.break_even_weights`),
the middle of the trade-offs its models offer: 514 on RouteProfile (whose calls cost fractions of
a thousandth of a dollar), 155 on RouterBench, 326 on the demo log. Every router is still
evaluated at every swept weight.

    python bench/bench_compare.py                                  # every router, both schemes, 3 datasets
    python bench/bench_compare.py --quick --datasets routeprofile  # no PPO, one small dataset (minutes)
    python bench/bench_compare.py --agents linucb,logistic --schemes task --out runs/bench-compare
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data.loading import load_log  # noqa: E402
from data.prices import PriceTable  # noqa: E402
from data.routing_log import RoutingLog  # noqa: E402
from data.schema import DataError  # noqa: E402
from data.synth import SynthConfig, generate, write  # noqa: E402
from envs.rewards import break_even_weights  # noqa: E402
from training.compare import OWN_LEARNERS, Folds, compare, markdown  # noqa: E402
from training.config import RunConfig, load_config  # noqa: E402
from training.factory import AGENTS  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
#: dataset → (configuration, log); the synthetic log is the demo's unless --synth-queries asks for another.
DATASETS = {
    "routerbench": (ROOT / "configs" / "routerbench.yaml", SHARED / "routerbench"),
    "routeprofile": (ROOT / "configs" / "default.yaml", SHARED / "routeprofile" / "train.jsonl"),
    "synth": (ROOT / "configs" / "default.yaml", ROOT / "data" / "demo" / "demo.jsonl"),
}
#: Kinds that are not routers of their own: lints fitted from a log is LinUCB's fit, so it learns online only.
NOT_COMPARED = ("lints",)


def data_cost_weight(log: RoutingLog) -> float:
    """The median break-even weight of ``log``'s single models (quality per USD); 1 / largest mean cost without one."""
    weights = break_even_weights(log.quality.mean(axis=0), log.cost.mean(axis=0))
    return float(np.median(weights)) if len(weights) else 1.0 / float(log.cost.mean(axis=0).max())


def load(dataset: str, synth_queries: int | None, workdir: Path, bootstrap: int | None) -> tuple[RoutingLog, RunConfig]:
    """The dataset's log and its configuration, at the cost weight of :func:`data_cost_weight`."""
    config_path, data = DATASETS[dataset]
    if dataset == "synth" and synth_queries is not None:
        data = workdir / f"synth-{synth_queries}.jsonl"
        write(generate(SynthConfig(queries=synth_queries)), data)
    config = load_config(config_path, [], cli_data=str(data))
    log = load_log(config.data.path, prices=PriceTable.load_or_default(config.data.prices)).log
    overrides = [f"reward.cost_weight={data_cost_weight(log)!r}"]
    if bootstrap is not None:
        overrides.append(f"evaluation.bootstrap={bootstrap}")
    return log, load_config(config_path, overrides, cli_data=str(data))


def interval(value: float, ci95: list[float], signed: bool = False) -> str:
    """``value [low, high]`` to four decimals."""
    form = "+.4f" if signed else ".4f"
    return f"{value:{form}} [{ci95[0]:{form}}, {ci95[1]:{form}}]"


def share(cost: float | None, fraction: float | None) -> str:
    """A cost to reach a quality, as a share of the reference's cost."""
    return "not reached" if cost is None or fraction is None else f"{fraction:.1%}"


def router_cells(report: dict[str, Any], name: str) -> str:
    """One scheme's cells of a router's row: AIQ, difference vs the best peer, cost to 95%."""
    entry = report["agents"][name]
    difference = report["aiq_difference_vs_best_peer"].get(f"{name} - {report['best_peer']}")
    versus = "best peer" if name == report["best_peer"] else ""
    if difference is not None:
        versus = interval(difference["value"], difference["ci95"], signed=True)
    return (
        f"{interval(entry['aiq'], entry['aiq_ci95'])} | {versus} | "
        f"{share(entry['cost_to_95%'], entry['cost_to_95%_share_of_reference'])}"
    )


def table(dataset: str, log: RoutingLog, config: RunConfig, reports: dict[str, dict[str, Any]]) -> str:
    """The dataset's markdown: both schemes side by side, one row per router, then the baselines."""
    first = next(iter(reports.values()))
    reference, schemes = first["reference"], list(reports)
    tasks = "no tasks" if log.tasks is None else f"{len(set(log.tasks.tolist()))} tasks"
    lines = [
        f"### {dataset}: {log.n_queries} queries × {log.n_models} models, {tasks}",
        "",
        f"Reference {first['reference_model']} (the best single model): quality {reference['quality']:.4f} at "
        f"{reference['cost']:.6f} USD per query. Learners train at cost weight {config.reward.cost_weight:.4g} "
        "(the median break-even weight of the log's models). AIQ over the single models' cost range, "
        "95% bootstrap intervals; Δ: paired AIQ difference against the best peer.",
        "",
        "| router | " + " | ".join(f"{_scheme(s)}: AIQ | Δ vs best peer | cost to 95%" for s in schemes) + " |",
        "|---|" + "---|---|---|" * len(schemes),
    ]
    for name in first["agents"]:
        lines.append(f"| {name} | " + " | ".join(router_cells(reports[s], name) for s in schemes) + " |")
    zero = " | ".join(_zero_cells(reports[s]) for s in schemes)
    lines.append(f"| zero router (single models) | {zero} |")
    oracle = first["oracle"]
    lines += [
        f"| oracle | quality {oracle['quality']:.4f} at {oracle['cost'] / reference['cost']:.1%} of the reference's "
        "cost |" + " |" * (3 * len(schemes) - 1),
        "",
        "Best peer: " + "; ".join(f"{_scheme(s)} {reports[s]['best_peer']}" for s in schemes) + ". Seconds: "
        + "; ".join(f"{_scheme(s)} {reports[s]['seconds']:.0f} ({_seconds(reports[s])})" for s in schemes) + ".",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _scheme(scheme: str) -> str:
    return "by query" if scheme == "query" else "by task"


def _zero_cells(report: dict[str, Any]) -> str:
    zero, cost = report["zero_router"], report["reference"]["cost"]
    reached = zero["cost_to_95%"]
    return f"{zero['aiq']:.4f} | | {'not reached' if reached is None else f'{reached / cost:.1%}'}"


def _seconds(report: dict[str, Any]) -> str:
    return ", ".join(f"{name} {entry['seconds']:.0f}" for name, entry in report["agents"].items())


def run(dataset: str, args: argparse.Namespace, kinds: list[str], workdir: Path) -> str:
    """Every scheme on one dataset; each report is written under ``--out`` when given."""
    log, config = load(dataset, args.synth_queries, workdir, args.bootstrap)
    reports = {}
    for scheme in args.schemes.split(","):
        folds = Folds.by_task(log) if scheme == "task" else Folds.by_query(log, args.folds, config.seed)
        start = time.perf_counter()
        report = compare(log, config, kinds, folds)
        reports[scheme] = report | {"seconds": time.perf_counter() - start}
        print(f"{dataset}, by {scheme}: {reports[scheme]['seconds']:.0f} s", file=sys.stderr, flush=True)
        if args.out is not None:
            folder = args.out / f"{dataset}-{scheme}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "compare.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            (folder / "compare.md").write_text(markdown(report), encoding="utf-8")
    return table(dataset, log, config, reports)


def machine() -> str:
    """The CPU model and count, and the platform."""
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        model = names[0] if names else model
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{model}, {os.cpu_count()} CPUs, {system}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated from {', '.join(DATASETS)}")
    parser.add_argument("--schemes", default="query,task", help="comma-separated fold schemes: query, task")
    parser.add_argument("--agents", help="comma-separated kinds (default: every registered router; --quick: no ppo)")
    parser.add_argument("--quick", action="store_true", help="leave PPO out (minutes instead of hours)")
    parser.add_argument("--folds", type=int, default=5, help="folds by query (default 5)")
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples (default: the configuration's, 1000)")
    parser.add_argument("--synth-queries", type=int, help="a fresh synthetic log of N queries (default: the demo log)")
    parser.add_argument("--out", type=Path, help="also write each run's compare.json and compare.md here")
    args = parser.parse_args()
    kinds = args.agents.split(",") if args.agents else [kind for kind in AGENTS if kind not in NOT_COMPARED]
    if args.quick:
        kinds = [kind for kind in kinds if kind != "ppo"]
    unknown = [kind for kind in kinds if kind not in AGENTS]
    if unknown:
        parser.error(f"unknown agent(s) {', '.join(unknown)}; choose from {', '.join(AGENTS)}")
    kinds = [kind for kind in kinds if kind in OWN_LEARNERS] + [kind for kind in kinds if kind not in OWN_LEARNERS]
    print(f"Machine: {machine()}. Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.")
    print(f"Command: `python bench/bench_compare.py {' '.join(sys.argv[1:])}` (agents {', '.join(kinds)}).\n")
    datasets = args.datasets.split(",")
    if not set(datasets) <= set(DATASETS) or not set(args.schemes.split(",")) <= {"query", "task"}:
        parser.error(f"datasets are {', '.join(DATASETS)}; schemes are query, task")
    with tempfile.TemporaryDirectory(prefix="routerl-compare-") as workdir:
        for dataset in datasets:
            try:
                print(run(dataset, args, kinds, Path(workdir)), flush=True)
            except DataError as error:
                print(f"bench_compare: {dataset}: error: {error}", file=sys.stderr)
                return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
