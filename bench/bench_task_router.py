"""How far knowing the task alone gets a router: the best fixed model per task, in sample.

A router that knew each query's task (RouterBench's ``eval_name``, RouteProfile's ``task``) and,
at each cost weight w, sent every query of a task to the model with the best mean utility on that
task, q̄_k,task − w · c̄_k,task, measured on the very queries it routes (no held-out data: an upper
bound for a task router); the oracle does the same per query. Its frontier over the swept weights,
beside the single models' and the oracle's, tells how much of a cost target the task alone can
reach, and how much must come from telling apart the queries within a task. Costs are shares of
the best single model's mean cost.

    python bench/bench_task_router.py --data ../shared/data/routerbench
    python bench/bench_task_router.py --data ../shared/data/routeprofile/train.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data.loading import load_log  # noqa: E402
from data.routing_log import RoutingLog  # noqa: E402
from evaluation.frontier import Frontier, cost_to_reach, cost_weight_grid  # noqa: E402

SHARES = (0.95, 1.0)  # of the best single model's mean quality


def swept(log: RoutingLog, weights: np.ndarray, groups: np.ndarray) -> Frontier:
    """The frontier of routing each group of queries to its best-utility model at each weight, in sample.

    Within a group every query goes to the model of the best mean q̄_k − w · c̄_k over the group:
    one group per task is the task router, one group per query the oracle.
    """
    rows = np.arange(log.n_queries)
    _, group_of = np.unique(groups, return_inverse=True)
    count = np.bincount(group_of).astype(float)[:, None]
    totals = [np.zeros((len(count), log.n_models)) for _ in range(2)]
    for total, table in zip(totals, (log.quality, log.cost), strict=True):
        np.add.at(total, group_of, table)
    costs, qualities = [], []
    for weight in weights:
        choice = np.argmax((totals[0] - weight * totals[1]) / count, axis=1)[group_of]
        costs.append(log.cost[rows, choice].mean())
        qualities.append(log.quality[rows, choice].mean())
    return Frontier.from_points(np.array(costs), np.array(qualities))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a log with a task per query")
    args = parser.parse_args()
    log = load_log(args.data).log
    if log.tasks is None:
        raise SystemExit(f"{args.data}: the log has no task column")
    mean_quality, mean_cost = log.quality.mean(0), log.cost.mean(0)
    reference = int(np.argmax(mean_quality))
    weights = np.concatenate([cost_weight_grid(mean_quality, mean_cost, 401), np.geomspace(1e-3, 1e7, 400)])
    frontiers = {
        "single models (zero router)": Frontier.from_points(mean_cost, mean_quality),
        "best model per task (knows the task, in sample)": swept(log, weights, np.asarray(log.tasks)),
        "oracle (best model per query)": swept(log, weights, np.arange(log.n_queries)),
    }
    print(f"{args.data}: {log.n_queries} queries, {len(np.unique(np.asarray(log.tasks)))} tasks; reference "
          f"{log.models[reference]} (quality {mean_quality[reference]:.4f} at {mean_cost[reference]:.6f} USD)\n")
    print("| router | " + " | ".join(f"cost to {share:.0%}" for share in SHARES) + " |")
    print("|---|" + "---|" * len(SHARES))
    for name, frontier in frontiers.items():
        cells = []
        for share in SHARES:
            cost = cost_to_reach(frontier, share * mean_quality[reference])
            cells.append("not reached" if cost is None else f"{cost / mean_cost[reference]:.1%}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
