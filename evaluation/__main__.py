"""Report of any exported policy on any log: ``python -m evaluation POLICY --data LOG [--out DIR]``.

Writes ``report.json``, ``report.md``, ``report.html`` and ``frontier.png`` into ``--out`` (default
``<policy dir>/eval-<log name>/``); it never overwrites the training report. A full-information
log gets metrics with bootstrap intervals, the frontier, AIQ and costs to reach the reference
model's quality; a bandit-feedback log gets the same on its DR table of estimated outcomes (m̂
cross-fitted on the log) and every off-policy estimate. The report is built by
:func:`evaluation.evaluate.evaluate`, as the training report is. Exit status: 0 success, 2 bad
input (one line, no traceback), 1 other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data.energy import EnergyTable, with_energy_estimates
from data.loading import load_log
from data.outputs import OutputKind, check_output, create_output, write_text_atomically
from data.prices import PriceTable
from data.rules import MAX_COST
from data.schema import DataError
from evaluation.evaluate import EvaluationConfig, EvaluationPlan, evaluate
from evaluation.figures import save_frontier
from evaluation.html_report import evaluation_commands, report_page
from evaluation.objectives import objectives_report
from evaluation.ope import cross_fitted_predictions
from evaluation.report import data_section, write_markdown
from evaluation.routers import PolicyRouter
from policies.artifact import PolicyError, load_policy

EVALUATION_FOLDER = OutputKind(
    "evaluation folder", frozenset({"report.json", "report.md", "report.html", "frontier.png", "rejected.jsonl"})
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m evaluation", description="Evaluate a policy.pt on a log.")
    parser.add_argument("policy", type=Path, help="an exported policy.pt")
    parser.add_argument("--data", required=True, help="log file or directory (full-information or bandit)")
    parser.add_argument("--out", type=Path, help="report folder (default: <policy dir>/eval-<log name>/)")
    parser.add_argument("--cost-weight", type=float, help="operating point (default: the policy's default)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--reference-model", help="reference for cost-to-reach (default: the best single model)")
    parser.add_argument("--prices", help="price table for rows with tokens instead of cost")
    parser.add_argument(
        "--energy", help="energy table estimating energy_wh where the log lacks it (configs/energy.yaml)"
    )
    parser.add_argument(
        "--grid-intensity", type=float, help="gCO2e per kWh for the carbon of the energy (default 480, world average)"
    )
    parser.add_argument(
        "--max-cost",
        type=float,
        default=MAX_COST,
        help=f"USD per call; a dearer row is rejected (default {MAX_COST:g})",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read pandas pickles (RISK: unpickling runs code from the file)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Evaluate and write the report; user errors exit 2 with one line."""
    args = parse_args(argv)
    out = args.out or args.policy.parent / f"eval-{Path(args.data).stem}"
    try:
        check_output(out, EVALUATION_FOLDER)  # never a training run directory, never a file routerl did not write
        policy = load_policy(args.policy)
        module, metadata = policy.module, policy.metadata
        prices = PriceTable.load_or_default(args.prices)
        loaded = load_log(args.data, prices=prices, allow_pickle=args.allow_pickle, max_cost=args.max_cost)
        energy = EnergyTable.load_or_default(args.energy)
        log = with_energy_estimates(loaded.log, energy)
        weight = metadata["default_cost_weight"] if args.cost_weight is None else args.cost_weight
        if not weight >= 0 or weight == float("inf"):
            raise DataError(f"--cost-weight must be finite and >= 0, got {weight}")
        carbon = {} if args.grid_intensity is None else {"grid_intensity": args.grid_intensity}
        if not all(0 <= value < float("inf") for value in carbon.values()):
            raise DataError(f"--grid-intensity must be finite and >= 0 (gCO2e per kWh), got {args.grid_intensity}")
        config = EvaluationConfig(bootstrap=args.bootstrap, reference_model=args.reference_model, **carbon)
        create_output(out, EVALUATION_FOLDER)
        loaded.quarantine.write(out / "rejected.jsonl")
        plan = EvaluationPlan(
            config,
            args.seed,
            weight,
            predictions=None if log.feedback == "full" else cross_fitted_predictions(log, args.seed),
            subject=Path(args.data).name,
            progress=True,
        )
        evaluation = evaluate(log, PolicyRouter(module).decider(log), plan)
        objectives = objectives_report(log, evaluation, plan, energy)
    except (DataError, PolicyError, ValueError) as error:
        print(f"evaluation: error: {error}", file=sys.stderr)
        return 2
    report = evaluation.report(
        {
            "evaluated_on": Path(args.data).name,
            "data": data_section(log, args.data),
            "policy": {
                "path": str(args.policy),
                "agent": metadata["agent"],
                "cost_weight": weight,
                "score_kind": metadata["score_kind"],
                "trained_on": metadata["data_fingerprint"],
            },
        }
    )
    report["objectives"] = objectives
    write_text_atomically(out / "report.json", json.dumps(report, indent=2) + "\n")
    write_markdown(report, out / "report.md")
    write_text_atomically(out / "report.html", report_page(report, evaluation_commands(str(args.policy), args.data)))
    save_frontier(report["frontier"], f"{metadata['agent']} on {Path(args.data).name}", out / "frontier.png")
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
