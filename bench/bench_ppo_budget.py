"""PPO under a budget, checked on the exported file: held-out spend of ``policy.pt`` vs the budget B.

Why: the README says that PPO trained with ``reward.budget`` spends the budget on queries it has
not seen. The claim is about the artifact a user ships, so this script checks it the way a user
would use it, for several training seeds:

1. ``python -m data synth --queries N --models K --seed S`` writes one full-information log; its
   first N/2 queries (in file order) are the training file, the other N/2 the held-out file, which
   no run ever reads;
2. B = cheapest + ``--budget-share`` × (dearest − cheapest) of the models' mean costs on the
   training file (the setting of ``tests/test_ppo.py``'s budget test);
3. per seed, ``python train.py --config configs/ppo.yaml --data TRAIN --seed N
   --set reward.budget.budget=B`` (the README's command) in a child process, timed;
4. a fresh ``python`` process loads ``policy.pt`` with ``torch.jit.load`` (no routerl import) and
   routes every held-out query, and every query of the training file, at the policy's default
   cost weight (λ̄, the averaged multiplier); the held-out spend B' is the mean logged cost of the
   chosen models, reported as B'/B and |B' − B| / B, beside the same on the training file (what
   the multiplier was fitted to: the difference is how far the policy's spend generalises).

    python bench/bench_ppo_budget.py                     # seeds 0,1,2: 1-3 min a seed on 2 cores, with the load
    python bench/bench_ppo_budget.py --seeds 0 --queries 10000 --set agent.ppo.total_steps=40960   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_serve import _cpu_model

ROOT = Path(__file__).resolve().parent.parent

#: Run in a fresh process: load the artifact with torch alone and route each file's queries.
ROUTE_QUERIES = """
import json, sys
import torch
policy = torch.jit.load(sys.argv[1])
weight = policy.default_cost_weight()
parts = json.load(open(sys.argv[2], encoding="utf-8"))
print(json.dumps({"cost_weight": weight, "models": {name: policy.route(q, weight) for name, q in parts.items()}}))
"""


@dataclass(frozen=True)
class Queries:
    """Queries in file order and each one's logged cost per model."""

    texts: list[str]
    costs: list[dict[str, float]]

    def mean_cost_by_model(self) -> dict[str, float]:
        """Each model's mean cost over these queries."""
        return {model: statistics.fmean(costs[model] for costs in self.costs) for model in self.costs[0]}


def split_log(log: Path, train_file: Path) -> dict[str, Queries]:
    """Write the first half of the log's queries to ``train_file``; return both halves ("train", "held-out")."""
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    order = list(dict.fromkeys(row["query_id"] for row in rows))
    training_ids = set(order[: len(order) // 2])
    train_file.write_text("".join(json.dumps(row) + "\n" for row in rows if row["query_id"] in training_ids),
                          encoding="utf-8")
    texts: dict[str, str] = {}
    costs: dict[str, dict[str, float]] = {}
    for row in rows:
        texts[row["query_id"]] = row["query"]
        costs.setdefault(row["query_id"], {})[row["model"]] = float(row["cost"])
    halves = {"train": order[: len(order) // 2], "held-out": order[len(order) // 2:]}
    return {name: Queries([texts[query_id] for query_id in ids], [costs[query_id] for query_id in ids])
            for name, ids in halves.items()}


def train(train_file: Path, out: Path, seed: int, budget: float, overrides: list[str]) -> float:
    """Run the README's budget command for one seed; return its wall time in seconds."""
    command = [sys.executable, "train.py", "--config", "configs/ppo.yaml", "--data", str(train_file),
               "--out", str(out), "--overwrite", "--quiet", "--seed", str(seed),
               "--set", f"reward.budget.budget={budget!r}", "--set", "evaluation.bootstrap=0"]
    for override in overrides:
        command += ["--set", override]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def spend(policy: Path, parts: dict[str, Queries], workdir: Path) -> tuple[float, dict[str, float]]:
    """Route every part's queries with ``policy`` in a fresh process.

    Returns λ̄ (the policy's default cost weight) and, per part, the mean logged cost of the chosen models.
    """
    queries_file = workdir / "queries.json"
    queries_file.write_text(json.dumps({name: part.texts for name, part in parts.items()}), encoding="utf-8")
    result = subprocess.run([sys.executable, "-c", ROUTE_QUERIES, str(policy), str(queries_file)],
                            cwd=workdir, check=True, capture_output=True, text=True)
    answer = json.loads(result.stdout)
    spent: dict[str, float] = {}
    for name, part in parts.items():
        chosen = answer["models"][name]
        spent[name] = statistics.fmean(costs[model] for costs, model in zip(part.costs, chosen, strict=True))
    return float(answer["cost_weight"]), spent


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch  # only for its version; the routing itself runs in a fresh process

    return {"nproc": os.cpu_count(), "cpu": _cpu_model(), "python": platform.python_version(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    """Generate, train per seed, route the held-out queries from the exported file, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (train.py --seed), comma-separated")
    parser.add_argument("--queries", type=int, default=40_000, help="queries in the log: half train, half held out")
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--data-seed", type=int, default=1, help="python -m data synth --seed")
    parser.add_argument("--budget-share", type=float, default=0.2,
                        help="B = cheapest + share × (dearest − cheapest) mean training cost")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra train.py --set KEY=VALUE (repeatable)")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one, deleted)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="routerl-bench-ppo-budget-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    try:
        log, train_file = workdir / "synth.jsonl", workdir / "train.jsonl"
        subprocess.run([sys.executable, "-m", "data", "synth", "--queries", str(args.queries), "--models",
                        str(args.models), "--seed", str(args.data_seed), "--out", str(log)],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        parts = split_log(log, train_file)
        mean_cost = parts["train"].mean_cost_by_model()
        budget = min(mean_cost.values()) + args.budget_share * (max(mean_cost.values()) - min(mean_cost.values()))
        runs = []
        for seed in (int(text) for text in args.seeds.split(",")):
            seconds = train(train_file, workdir / f"seed-{seed}", seed, budget, args.overrides)
            weight, spent = spend(workdir / f"seed-{seed}" / "policy.pt", parts, workdir)
            runs.append({"seed": seed, "train_seconds": round(seconds, 1), "cost_weight": weight,
                         "train_spend_over_budget": spent["train"] / budget,
                         "held_out_spend_over_budget": spent["held-out"] / budget,
                         "held_out_relative_error": abs(spent["held-out"] - budget) / budget})
            print(f"seed {seed}: {seconds:.0f} s, λ̄ {weight:.1f}, spend {spent['train'] / budget:.3f} B (training "
                  f"file), {spent['held-out'] / budget:.3f} B (held out)", file=sys.stderr)
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    result = {"machine": machine(), "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},
              "command": " ".join(["python", "bench/bench_ppo_budget.py", *sys.argv[1:]]),
              "log": {"queries": args.queries, "models": args.models, "data_seed": args.data_seed,
                      "held_out_queries": len(parts["held-out"].texts)},
              "mean_training_cost": mean_cost, "budget": budget, "runs": runs}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    print("\n| seed | train.py wall | λ̄ (policy's default weight) | spend / B, training file | "
          "held-out spend B'/B | \\|B' − B\\| / B |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        print(f"| {run['seed']} | {run['train_seconds']:.0f} s | {run['cost_weight']:.1f} | "
              f"{run['train_spend_over_budget']:.3f} | {run['held_out_spend_over_budget']:.3f} | "
              f"{100 * run['held_out_relative_error']:.1f}% |")


if __name__ == "__main__":
    main()
