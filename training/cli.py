"""``train.py``'s command line (docs/contracts.md §3): flags, config overrides, exit statuses.

Heavy imports (torch, the agents) happen inside :func:`main`, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the project: configs/ and runs/ live there
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of docs/contracts.md §3."""
    parser = argparse.ArgumentParser(
        prog="train.py", description="Train an LLM routing policy from logs and export it as TorchScript."
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="YAML run configuration (default: configs/default.yaml)",
    )
    parser.add_argument("--data", help="log file or directory; overrides data.path")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<config name>)")
    add_set_argument(parser, "override a config value, e.g. --set agent.linucb.ridge=3 (repeatable)")
    parser.add_argument(
        "--prices",
        help="price table (YAML, USD per 1M tokens) for rows with tokens "
        "instead of cost; overrides data.prices (default configs/prices.yaml)",
    )
    parser.add_argument(
        "--split",
        choices=["hash", "time"],
        help="split by hash of query_id (default) or by timestamp; overrides data.split",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read RouterBench pandas pickles (.pkl). RISK: unpickling runs arbitrary code "
        "from the file; use it only for files you trust",
    )
    parser.add_argument("--seed", type=int, help="overrides the config's seed")
    parser.add_argument(
        "--rules",
        metavar="RULES_FILE",
        help="rule overrides (YAML: conditions on the query text -> allowed models) compiled into policy.pt; "
        "overrides the config's rules",
    )
    parser.add_argument(
        "--capacity",
        action="append",
        default=[],
        metavar="MODEL=SHARE",
        help="cap MODEL's share of the queries at SHARE in (0, 1] (repeatable; adds to the config's capacity): "
        "multipliers fitted on the training queries go into policy.pt's metadata, and serve.py holds them",
    )
    _add_run_arguments(parser)
    return parser.parse_args(argv)


def capacity_overrides(pairs: list[str]) -> dict[str, Any]:
    """``--capacity MODEL=SHARE`` flags as {model: share parsed as YAML} (the configuration validates the share).

    Not ``--set capacity.MODEL=SHARE``: a model's name may hold dots (``gpt-3.5-turbo``).
    """
    import yaml

    from data.schema import DataError

    caps = {}
    for pair in pairs:
        model, separator, share = pair.rpartition("=")
        if not separator or not model.strip() or not share.strip():
            raise DataError(f"--capacity {pair!r}: expected MODEL=SHARE, e.g. large-70b=0.2")
        caps[model.strip()] = yaml.safe_load(share)
    return caps


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``, applied by :func:`training.config.apply_overrides`."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of how the run trains and exports: budget, refit, tuning, output, cluster, resume."""
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--target-cost",
        type=float,
        metavar="USD",
        help="pick the cost weight whose validation mean cost per query is at most USD "
        "(best quality among those) and export it as the default",
    )
    budget.add_argument(
        "--target-quality",
        type=float,
        metavar="Q",
        help="pick the cheapest cost weight whose validation mean quality is at least Q",
    )
    parser.add_argument(
        "--refit-all",
        action="store_true",
        help="after the held-out evaluation, export the same configuration refit on every query (train + validation "
        "+ test); the report's metrics stay the training split's policy's, and its exported_policy says so",
    )
    parser.add_argument(
        "--no-tune",
        action="store_true",
        help="keep the configured featurizer and ridge values instead of choosing them by cross-validation on the "
        "training split (same as --set tuning.enabled=false)",
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first rejected row")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (for logs and CI)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run directory (only one routerl wrote, holding nothing else)",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="fit LinUCB on a Ray cluster from statistics summed over blocks (exact; needs pip install "
        "'.[ray]'); ADDRESS joins a running cluster (e.g. auto, ray://head:10001), none starts a local one",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue an interrupted run from its newest checkpoint (its config.yaml is used)",
    )


def main(argv: list[str] | None = None) -> int:
    """Run training; user errors are one line on stderr and exit status 2."""
    args = parse_args(argv)
    from data.schema import DataError
    from evaluation.budget import BudgetTarget
    from training.config import RunConfig, load_config, validated
    from training.run import prepare_directory, run_inputs, train

    try:
        if args.refit_all and args.ray is not None:  # before anything is written
            raise DataError(
                "--refit-all refits in this process on every query; --ray fits the training split "
                "on a cluster and has no refit: use one of them"
            )
        overrides = list(args.overrides)
        if args.prices:
            overrides.append(f"data.prices={Path(args.prices).resolve()}")
        if args.split:
            overrides.append(f"data.split={args.split}")
        if args.allow_pickle:
            overrides.append("data.allow_pickle=true")
        if args.no_tune:
            overrides.append("tuning.enabled=false")
        if args.rules:
            overrides.append(f"rules={Path(args.rules).resolve()}")
        if args.resume is not None:
            if not (args.resume / "config.yaml").is_file():
                raise DataError(f"{args.resume}: not a run directory (no config.yaml) to resume")
            config = load_config(args.resume / "config.yaml", overrides, cli_data=args.data, seed=args.seed)
            out = args.resume
        else:
            config = load_config(args.config, overrides, cli_data=args.data, seed=args.seed)
            out = args.out or ROOT / "runs" / config.name
            prepare_directory(out, args.overwrite, run_inputs(config, args.config))
        if args.capacity:
            tree = config.to_dict()
            tree["capacity"] = {**tree["capacity"], **capacity_overrides(args.capacity)}
            config = validated(RunConfig, tree, None)
        if config.capacity and args.ray is not None:
            raise DataError("capacity fits its multipliers on the training queries in this process; --ray has none")
        target = None
        if args.target_cost is not None:
            target = BudgetTarget("cost", args.target_cost)
        elif args.target_quality is not None:
            target = BudgetTarget("quality", args.target_quality)
        if target is not None and config.reward.budget is not None:
            raise DataError(
                "--target-cost/--target-quality choose the exported cost weight on validation, and "
                "reward.budget learns it online (its average λ̄): use one of them"
            )
        if args.ray is None:
            result = train(config, out, strict=args.strict, quiet=args.quiet, target=target, refit=args.refit_all)
        else:
            if args.resume is not None:
                raise DataError("--ray fits in one pass; there is nothing to --resume")
            try:
                from training.distributed import train_distributed
            except ImportError:
                raise DataError("--ray needs Ray: pip install '.[ray]'") from None
            result = train_distributed(
                config, out, address=args.ray or None, strict=args.strict, quiet=args.quiet, target=target
            )
    except DataError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    test, frontier = result.report["test"], result.report["frontier"]
    print((out / "report.md").read_text(encoding="utf-8"))
    print(
        f"held-out: quality {test['mean_quality']:.4f}, cost {test['mean_cost']:.6f} USD/query, "
        f"reward {test['mean_reward']:.4f}, AIQ {frontier['aiq']:.4f}"
    )
    exported = result.report["exported_policy"]
    if not exported["held_out_metrics"]:
        print(f"policy.pt: refit on all {exported['queries']} queries after the evaluation (no held-out estimate)")
    print(f"run directory: {out}")
    if result.report["featurizer"]["kind"] != "embedding":  # the service takes text policies only
        print(f"serve it:  python serve.py --policy {out / 'policy.pt'}")
    print(f"watch it:  tensorboard --logdir {out / 'tb'}   (frontier figure: {out / 'frontier.png'})")
    return 0
