"""``python -m data summary LOG``: what is in a log, and what loading it would reject.

Why: before training on a log one wants to see its shape (queries, models, full-information or
bandit feedback), how good and how dear each model is, how much the per-query oracle would
gain, and whether rows are being dropped and why (including models the price table lacks).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import numpy as np

from data.loading import LoadedLog, load_log
from data.prices import PriceTable
from data.rules import MAX_COST
from data.schema import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``python -m data summary`` arguments to ``parser``."""
    parser.add_argument("path", help="log file or directory (.jsonl, .csv, .parquet, .pkl)")
    parser.add_argument(
        "--prices",
        help="price table (YAML, USD per 1M tokens) for rows with tokens instead of cost (default configs/prices.yaml)",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read pandas pickles (they can run code: only for files you trust)",
    )
    parser.add_argument(
        "--max-cost",
        type=float,
        default=MAX_COST,
        help=f"USD per call; a dearer row is rejected (default {MAX_COST:g})",
    )


def main(args: argparse.Namespace) -> int:
    """Print the summary of ``args.path``; a user error is one line on stderr and status 2."""
    try:
        prices = PriceTable.load_or_default(args.prices)
        loaded = load_log(args.path, prices=prices, allow_pickle=args.allow_pickle, max_cost=args.max_cost)
    except DataError as error:
        print(f"python -m data summary: error: {error}", file=sys.stderr)
        return 2
    print(summarize(loaded, args.path))
    return 0


def summarize(loaded: LoadedLog, name: str) -> str:
    """The summary of a loaded log as text: counts, per-model table, oracle, rejections."""
    log, stats = loaded.log, loaded.log.stats
    full = log.feedback == "full"
    kind = (
        "full information (every query has every model's outcome)"
        if full
        else "bandit feedback (one logged model per query, with propensity)"
    )
    rejected = ", ".join(f"{count} {reason}" for reason, count in stats.rejected_by_reason.items())
    lines = [
        f"log        {name} ({len(stats.files)} file{'s' if len(stats.files) != 1 else ''})",
        f"queries    {log.n_queries}",
        f"models     {log.n_models}",
        f"feedback   {kind}",
        f"rows       {stats.rows_read} read, {stats.rows_accepted} accepted, {stats.rows_rejected} rejected",
        f"rejected   {rejected or 'none'}",
    ]
    if log.tasks is not None:
        lines.append(f"tasks      {_task_counts(log.tasks)}")
    unpriced = loaded.quarantine.unpriced_models()
    if unpriced:
        lines.append(f"no price   {', '.join(unpriced)} (rows with tokens but no cost; see --prices)")
    lines.append("")
    lines.extend(_model_table(loaded))
    return "\n".join(lines)


def _task_counts(tasks: np.ndarray) -> str:
    """The tasks with their queries, most first, and how many queries have none."""
    counts = Counter(task for task in tasks.tolist() if task is not None)
    text = f"{len(counts)}: " + ", ".join(f"{task} ({n})" for task, n in counts.most_common())
    missing = len(tasks) - sum(counts.values())
    return text + (f"; {missing} queries without a task" if missing else "")


def _model_table(loaded: LoadedLog) -> list[str]:
    """Per-model mean quality and cost over known outcomes, then the per-query oracle."""
    log = loaded.log
    known = ~np.isnan(log.quality)
    count = known.sum(axis=0)
    with np.errstate(invalid="ignore"):  # a bandit model that was never logged has no mean
        quality = np.nansum(log.quality, axis=0) / count
        cost = np.nansum(log.cost, axis=0) / count
    width = max([len("oracle (per query)")] + [len(m) for m in log.models])
    header = f"{'model':<{width}}  {'mean quality':>12}  {'mean cost USD':>14}  {'outcomes':>9}"
    rows = [header, "-" * len(header)]
    for k, model in enumerate(log.models):
        rows.append(f"{model:<{width}}  {quality[k]:>12.4f}  {cost[k]:>14.6g}  {count[k]:>9d}")
    if log.feedback == "full":
        pick = oracle_choice(log.quality, log.cost)
        chosen = np.arange(log.n_queries), pick
        rows.append(
            f"{'oracle (per query)':<{width}}  {log.quality[chosen].mean():>12.4f}  "
            f"{log.cost[chosen].mean():>14.6g}  {log.n_queries:>9d}"
        )
    else:
        rows.append(
            "bandit feedback: means over the rows where the model was logged (not "
            "importance-weighted); the per-query oracle is unknown"
        )
    return rows


def oracle_choice(quality: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Per query, the model of highest quality; ties go to the lower cost, then the lower index."""
    best = quality == quality.max(axis=1, keepdims=True)
    return np.where(best, cost, np.inf).argmin(axis=1)
