"""Cascade baselines on RouterBench held out: AIQ, cost to reach 95% / 100% of GPT-4, calls.

The test split is the RouterBench configuration's (``configs/routerbench.yaml``: hash split, seed 0,
test share 0.3); everything else (train and validation, 70%) trains the featurizer, the response
scorer and the pre-generation router (LinUCB, fitted, as in that configuration). Every call a
cascade makes is paid for (:mod:`evaluation.cascade`).

    python bench/bench_cascade.py [--data ../shared/data/routerbench] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.linucb import LinUCB  # noqa: E402
from data.featurizer import FeaturizerConfig, TextFeaturizer  # noqa: E402
from data.loading import load_log  # noqa: E402
from data.responses import read_responses  # noqa: E402
from data.splits import SplitFractions, split  # noqa: E402
from evaluation.cascade import CascadeSplit, evaluate_cascade_baselines  # noqa: E402
from evaluation.frontier import cost_weight_grid  # noqa: E402
from evaluation.sweep import WeightSweep  # noqa: E402
from policies.response_features import response_table  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "routerbench")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    args = parser.parse_args()
    started = time.perf_counter()
    log = load_log(args.data).log
    table = response_table(read_responses(args.data, log))
    parts = split(log, SplitFractions(train=0.7, validation=0.0, test=0.3), seed=0)
    train_log, test_log = log.subset(parts.train), log.subset(parts.test)
    featurizer = TextFeaturizer(FeaturizerConfig(min_df=2, max_features=20000, components=16))
    train_x = featurizer.fit_transform(train_log.queries)
    test_x = featurizer.transform(test_log.queries)
    router = LinUCB(log.n_models, train_x.shape[1]).fit(train_x, train_log.quality, train_log.cost)
    weights = cost_weight_grid(train_log.quality.mean(axis=0), train_log.cost.mean(axis=0))
    sweep = WeightSweep.run(test_log, lambda w: router.predict(test_x, w), weights)
    report = evaluate_cascade_baselines(
        CascadeSplit(train_log, train_x, table.subset(parts.train)),
        CascadeSplit(test_log, test_x, table.subset(parts.test)),
        sweep,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    print(f"RouterBench held out: {report['queries']}; reference {report['reference_model']}")
    print("| baseline | AIQ | cost to 95% (share of reference) | calls at 95% | cost to 100% (share) |")
    print("|---|---|---|---|---|")
    for name, summary in report["baselines"].items():
        reach95, reach100 = summary["cost_to_reach"]["95%"], summary["cost_to_reach"]["100%"]
        print(f"| {name} | {summary['aiq']:.4f} | {_reach(reach95)} | {_calls(reach95)} | {_reach(reach100)} |")
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0


def _reach(reach: dict) -> str:
    return "not reached" if reach["cost"] is None else f"${reach['cost']:.6f} ({reach['share_of_reference_cost']:.1%})"


def _calls(reach: dict) -> str:
    return "-" if reach["calls"] is None else f"{reach['calls']:.2f}"


if __name__ == "__main__":
    sys.exit(main())
