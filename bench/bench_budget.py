"""The live budget (``serve.py --budget``): what it costs the service, and how closely it holds.

Two measurements, printed as one JSON object:

- ``overhead``: ``bench/bench_serve.py`` against the same policy without and with ``--budget``,
  alternated ``--rounds`` times for ``--seconds`` each on the same machine, without a decision log
  and with one (a budget corrected by ``/feedback`` needs ``--decision-log``); the medians of
  throughput and of the server's CPU time per request, and their ratios (the target: the budget
  costs at most 5% of throughput).
- ``steps``: the controller (:class:`serving.budget.BudgetController`) replayed in process on the
  demo log for several steps η: the queries in a seeded random order, each routed greedily by the
  policy at the controller's weight, charged its predicted cost and corrected by its logged cost;
  half-way every actual cost doubles (a price rise the policy does not know). Reported per η: the
  smallest and largest mean cost of any window of 1,000 consecutive queries after a warm-up of
  2,000, over the budget, and the mean logged quality; the bigger η, the tighter the windows and
  the more the weight moves (costing some quality).

    python bench/bench_budget.py --policy runs/default/policy.pt --rounds 3 --seconds 15
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies.artifact import load_policy  # noqa: E402
from serving.budget import Account, BudgetController, Charge  # noqa: E402
from serving.shared_memory import SharedMemory  # noqa: E402

WARM_UP = 2000
WINDOW = 1000


def _serve_run(policy: Path, seconds: float, budget: float | None, decision_log: bool) -> dict[str, Any]:
    """One ``bench_serve.py`` run; its JSON result."""
    command = [sys.executable, "bench/bench_serve.py", "--policy", str(policy), "--seconds", str(seconds)]
    done = subprocess.run(
        [
            *command,
            *(["--budget", str(budget)] if budget is not None else []),
            *(["--decision-log"] if decision_log else []),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout))


def overhead(policy: Path, budget: float, rounds: int, seconds: float, decision_log: bool) -> dict[str, Any]:
    """Throughput and server CPU per request without and with the budget, alternated."""
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    for _ in range(rounds):
        runs["without"].append(_serve_run(policy, seconds, None, decision_log))
        runs["with"].append(_serve_run(policy, seconds, budget, decision_log))
    medians = {
        kind: {
            key: statistics.median(run[key] for run in results)
            for key in ("throughput_rps", "server_cpu_us_per_request")
        }
        for kind, results in runs.items()
    }
    return {
        **medians,
        "throughput_ratio": round(medians["with"]["throughput_rps"] / medians["without"]["throughput_rps"], 3),
        "server_cpu_ratio": round(
            medians["with"]["server_cpu_us_per_request"] / medians["without"]["server_cpu_us_per_request"], 3
        ),
        "runs": {
            kind: [(r["throughput_rps"], r["server_cpu_us_per_request"]) for r in results]
            for kind, results in runs.items()
        },
    }


def _demo_log() -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """The demo log's texts, and its (queries, models) quality and cost matrices."""
    quality: dict[str, dict[str, float]] = defaultdict(dict)
    cost: dict[str, dict[str, float]] = defaultdict(dict)
    for line in (ROOT / "data" / "demo" / "demo.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        quality[row["query"]][row["model"]] = row["quality"]
        cost[row["query"]][row["model"]] = row["cost"]
    texts = sorted(quality)
    models = sorted(quality[texts[0]])
    as_matrix = lambda table: np.array([[table[t][m] for m in models] for t in texts])  # noqa: E731
    return texts, as_matrix(quality), as_matrix(cost), models


def steps(policy_path: Path, budget: float, etas: list[float], queries: int) -> dict[str, Any]:
    """The controller's replay for each η (module docstring)."""
    policy = load_policy(policy_path)
    texts, quality, cost, models = _demo_log()
    assert list(policy.models) == models, "the policy must be trained on the demo log"
    order = np.random.default_rng(0).integers(len(texts), size=queries)
    results = {}
    for eta in etas:
        controller = BudgetController([Account("", budget, policy.default_cost_weight)], SharedMemory(1 << 23), eta)
        actual = np.empty(queries)
        chosen_quality = np.empty(queries)
        start = time.perf_counter()
        for step, row in enumerate(order):
            paired = policy.score_costs([texts[row]], controller.weight(0))[0].numpy()
            model = int(np.argmax(paired[: len(models)]))
            controller.charge([str(step)], [Charge(0, float(paired[len(models) + model]))])
            actual[step] = cost[row, model] * (2.0 if step >= queries // 2 else 1.0)
            controller.correct(str(step), float(actual[step]))
            chosen_quality[step] = quality[row, model]
        seconds = time.perf_counter() - start
        total = np.concatenate([[0.0], np.cumsum(actual[WARM_UP:])])
        windows = (total[WINDOW:] - total[:-WINDOW]) / WINDOW / budget
        results[str(eta)] = {
            "window_mean_over_budget_min": round(float(windows.min()), 4),
            "window_mean_over_budget_max": round(float(windows.max()), 4),
            "mean_quality": round(float(chosen_quality[WARM_UP:].mean()), 4),
            "replay_us_per_query": round(seconds / queries * 1e6, 1),
        }
    return results


def main() -> None:
    """Run both measurements and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, default=ROOT / "runs" / "default" / "policy.pt")
    parser.add_argument("--budget", type=float, default=0.0003, help="USD per query (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated bench_serve runs of each kind")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of each bench_serve run")
    parser.add_argument("--queries", type=int, default=20000, help="queries of each replay")
    parser.add_argument("--etas", default="0.02,0.05,0.1,0.2", help="steps to replay (comma-separated)")
    args = parser.parse_args()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "budget": args.budget,
        "steps": steps(args.policy, args.budget, [float(x) for x in args.etas.split(",")], args.queries),
        "overhead": {
            "no decision log": overhead(args.policy, args.budget, args.rounds, args.seconds, False),
            "with --decision-log": overhead(args.policy, args.budget, args.rounds, args.seconds, True),
        }
        if args.rounds
        else None,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
