"""Routing quality on RouterBench: cross-validated AIQ and cost to reach GPT-4's quality.

Wraps ``python -m training.compare`` (out-of-fold decisions of each agent at every cost weight,
pooled over the folds) and prints, per agent, the zero router and the oracle: AIQ with its 95%
bootstrap interval, and the cost per query to reach 95% and 100% of the reference model's
(gpt-4-1106-preview, the most expensive) mean quality, also as a share of the reference's cost.

    python bench/bench_quality.py                 # 5 folds, linucb,knn,logistic (+ ppo if offered)
    python bench/bench_quality.py --folds 2       # quick

Targets: LinUCB's AIQ at least the best peer's; 95% of the reference's quality at <= 25% of its
cost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def available_agents() -> list[str]:
    """The agents ``python -m training.compare`` compares by default."""
    sys.path.insert(0, str(ROOT))
    from training.compare import COMPARED

    return list(COMPARED)


def verdict(report: dict) -> str:
    agents = report["agents"]
    notes = []
    if "linucb" in agents:
        peers = {k: v["aiq"] for k, v in agents.items() if k != "linucb"}
        if peers:
            best = max(peers, key=peers.get)
            ok = agents["linucb"]["aiq"] >= peers[best]
            notes.append(
                f"LinUCB AIQ {agents['linucb']['aiq']:.4f} vs best peer {best} {peers[best]:.4f}: "
                f"{'met' if ok else 'NOT met'}"
            )
        share = agents["linucb"]["cost_to_95%_share_of_reference"]
        ok = share is not None and share <= 0.25
        notes.append(
            f"LinUCB cost to 95% of the reference: "
            f"{'not reached' if share is None else f'{share:.1%}'} of its cost (target <= 25%): "
            f"{'met' if ok else 'NOT met'}"
        )
    return "\n".join(f"- {note}" for note in notes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/routerbench.yaml")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (quick: 2)")
    parser.add_argument("--agents", default=None, help="comma-separated (default: linucb,knn,logistic[,ppo])")
    parser.add_argument("--out", type=Path, default=None, help="folder for compare.json / compare.md")
    parser.add_argument("--json", action="store_true", help="also print the raw compare.json")
    args = parser.parse_args()
    agents = args.agents or ",".join(available_agents())
    out = args.out or Path(tempfile.mkdtemp(prefix="routerl-quality-"))
    command = [
        sys.executable,
        "-m",
        "training.compare",
        "--config",
        args.config,
        "--folds",
        str(args.folds),
        "--agents",
        agents,
        "--out",
        str(out),
    ]
    print("$", " ".join(["python", *command[1:]]), flush=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning"}  # scikit-learn's deprecation chatter
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=env)
    seconds = time.perf_counter() - start
    report = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    data = report["data"]
    print(
        f"\n{args.folds} folds, agents {agents}; {data['queries']} queries x {len(data['models'])} models, "
        f"{data['rows_rejected']} rows rejected; cost range {report['cost_range']}; wall {seconds:.1f} s\n"
    )
    print((out / "compare.md").read_text(encoding="utf-8"))
    print()
    print(verdict(report))
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
