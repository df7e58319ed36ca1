"""What ``train.py --refit-all`` gains on RouterBench: hidden-test AIQ of the exported policy, refit or not.

For each of ``--repeats`` partitions, a fifth of the queries (those whose
:func:`data.splits.hash_unit` with seed 1000 + r is at least 0.8, independent of the run's own
split) is hidden, and the other four fifths are written as a canonical JSON-lines log. The run of
``configs/routerbench.yaml`` trains on them twice: as it is (``policy.pt`` is the evaluated policy,
trained on the run's training split, half of the visible queries) and with ``--refit-all`` (the
same configuration refit on every visible query). Each exported ``policy.pt`` is then evaluated
on the hidden queries as ``python -m evaluation`` does (no bootstrap): AIQ over the hidden
queries' single-model cost range, and quality and cost at the policy's default weight. With
``--target-cost USD`` the evaluated policy's weight is chosen on the run's validation split, the
refit policy's by the same rule on every visible query (in-sample); the refit policy is also
evaluated at the evaluated policy's weight (``refit@evaluated weight``), to show what keeping
that weight would spend.

    python bench/bench_refit.py --data ../shared/data/routerbench --repeats 5
    python bench/bench_refit.py --data ../shared/data/routerbench --repeats 5 --target-cost 0.0005
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data.loading import load_log  # noqa: E402
from data.routing_log import RoutingLog  # noqa: E402
from data.splits import hash_unit  # noqa: E402
from evaluation.budget import BudgetTarget  # noqa: E402
from evaluation.evaluate import EvaluationConfig, EvaluationPlan, evaluate  # noqa: E402
from evaluation.routers import PolicyRouter  # noqa: E402
from policies.artifact import load_policy  # noqa: E402
from training.config import load_config  # noqa: E402
from training.run import prepare_directory, train  # noqa: E402


def write_jsonl(log: RoutingLog, path: Path) -> None:
    """``log``'s known outcomes as canonical rows (docs/contracts.md §1.2)."""
    with path.open("w", encoding="utf-8") as out:
        for row, (query_id, query) in enumerate(zip(log.query_ids.tolist(), log.queries)):
            for arm, model in enumerate(log.models):
                quality, cost = log.quality[row, arm], log.cost[row, arm]
                if np.isfinite(quality) and np.isfinite(cost):
                    record = {"query_id": query_id, "query": query, "model": model, "quality": float(quality),
                              "cost": float(cost)}
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")


def hidden_metrics(policy_path: Path, hidden: RoutingLog, weight: float | None = None) -> dict[str, float]:
    """AIQ, quality and cost of the exported policy on the hidden queries, at its default weight or ``weight``."""
    policy = load_policy(policy_path)
    plan = EvaluationPlan(EvaluationConfig(bootstrap=0), 0, policy.default_cost_weight if weight is None else weight)
    report = evaluate(hidden, PolicyRouter(policy.module).decider(hidden), plan).report({})
    return {"aiq": report["frontier"]["aiq"], "quality": report["test"]["mean_quality"],
            "cost": report["test"]["mean_cost"]}


def one_partition(
    log: RoutingLog, repeat: int, folder: Path, target: BudgetTarget | None
) -> dict[str, dict[str, float]]:
    """Hide a fifth of ``log``, train on the rest with and without ``--refit-all``, evaluate both on the hidden."""
    position = hash_unit(log.query_ids, 1000 + repeat)
    hidden, visible = log.subset(np.flatnonzero(position >= 0.8)), log.subset(np.flatnonzero(position < 0.8))
    data = folder / f"visible-{repeat}.jsonl"
    write_jsonl(visible, data)
    config = load_config(ROOT / "configs" / "routerbench.yaml", [], cli_data=str(data))
    results = {}
    for name, refit in (("evaluated", False), ("refit", True)):
        out = folder / f"run-{repeat}-{name}"
        prepare_directory(out, overwrite=False)
        started = time.perf_counter()
        report = train(config, out, quiet=True, target=target, refit=refit).report
        results[name] = hidden_metrics(out / "policy.pt", hidden) | {
            "trained_on_queries": report["exported_policy"]["queries"],
            "run_seconds": time.perf_counter() - started,
            "report_aiq": report["frontier"]["aiq"],
            "weight": report["exported_policy"]["cost_weight"],
        }
    if target is not None:
        weight = results["evaluated"]["weight"]
        refit_policy = folder / f"run-{repeat}-refit" / "policy.pt"
        results["refit@evaluated weight"] = results["refit"] | hidden_metrics(refit_policy, hidden, weight)
        results["refit@evaluated weight"]["weight"] = weight
    print(f"partition {repeat}: {visible.n_queries} visible, {hidden.n_queries} hidden: "
          + "; ".join(f"{name} (on {r['trained_on_queries']}, weight {r['weight']:.4g}) hidden AIQ {r['aiq']:.4f}, "
                      f"quality {r['quality']:.4f}, cost {r['cost']:.6f}" for name, r in results.items()))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "external" / "routerbench"),
                        help="RouterBench folder (default: where python -m data fetch routerbench puts it)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--target-cost", type=float, help="train.py --target-cost USD for both runs")
    args = parser.parse_args()
    target = None if args.target_cost is None else BudgetTarget("cost", args.target_cost)
    log = load_log(args.data).log
    with tempfile.TemporaryDirectory() as folder:
        runs = [one_partition(log, repeat, Path(folder), target) for repeat in range(args.repeats)]
    gains = np.array([run["refit"]["aiq"] - run["evaluated"]["aiq"] for run in runs])
    evaluated = np.mean([run["evaluated"]["aiq"] for run in runs])
    refit = np.mean([run["refit"]["aiq"] for run in runs])
    spread = gains.std(ddof=1) / np.sqrt(len(gains)) if len(gains) > 1 else float("nan")
    print(f"mean hidden AIQ over {len(runs)} partitions: evaluated policy {evaluated:.4f}, refit {refit:.4f}; "
          f"gain {gains.mean():+.4f} (standard error {spread:.4f}), higher in {(gains > 0).sum()} of {len(gains)}")
    for name in runs[0]:
        print(f"{name}: mean hidden quality {np.mean([run[name]['quality'] for run in runs]):.4f}, "
              f"cost {np.mean([run[name]['cost'] for run in runs]):.6f} USD/query at the weight; "
              f"training + evaluation {np.mean([run[name]['run_seconds'] for run in runs]):.1f} s")


if __name__ == "__main__":
    main()
