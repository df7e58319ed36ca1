"""Distributed LinUCB fitting on Ray (``train.py --ray [ADDRESS]``): exact, for logs that outgrow one machine.

The pipeline, each stage a Ray Data operation over blocks:

1. **Read and validate** (one block per log file): every file is read by routerl's own readers,
   exactly as the single-process loader does (:func:`training.blocks.read_block`: columnar
   blocks of valid rows, the per-row path with :func:`data.validation.validate` for the rest; the
   rules of :mod:`data.rules`);
   a bad row becomes a rejection with its reason (Ray's own JSON reader would fail the whole
   dataset at one malformed line, and nothing may be lost silently). Files are listed on the
   driver; shard a large log into many files.
2. **Per-query rules** (``sort("query_id")``, then ``map_batches`` over whole blocks): the sort
   range-partitions by key, so every query's rows share a block, where
   :func:`training.blocks.query_rules` applies the cross-row rules of :mod:`data.log_builder`
   to them in reading order (file, line), on whole columns: conflicting text, duplicate
   outcome, incomplete query (every model of the log is needed). Each complete query becomes
   one record (text, per-model quality and cost) with its split, by the hash of
   :func:`data.splits.hash_unit` and the seed.
3. **Featurizer** on the driver: the single-process featurizer, fitted on the same texts in the
   same order. Beyond ``featurizer.fit_sample`` training queries, both fit it on the
   ``fit_sample`` first by split hash; the driver gathers only a pool of about
   ``FIT_POOL × fit_sample`` training queries (split hash below a cut) that holds them.
4. **Statistics** (``map_batches``): each block of training queries is featurized and reduced to
   :class:`agents.linucb.LinUCBStatistics` (XᵀX, Xᵀquality, Xᵀcost, counts, sums; float64); the
   driver adds them and solves, which is :meth:`LinUCB.fit` on the whole split up to
   floating-point reassociation.
5. **Evaluation and export** on the driver, from the gathered validation and test splits, by
   :func:`training.run.evaluate_and_export`: the same report and ``policy.pt``. Test and
   validation splits must fit in driver memory: at 100M queries use small fractions for them.

Scope: full-information logs, text input, ``agent.kind=linucb`` with ``learning=fit`` and the
hash split; anything else is a clear error (use the single-process ``train.py``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data.context import ShuffleStrategy
from ray.data.expressions import col
from threadpoolctl import threadpool_limits

from agents.base import FeaturizedSplit
from agents.linucb import LinUCBStatistics, linucb_from_statistics
from data.featurizer import TextFeaturizer
from data.fingerprint import update_digest
from data.prices import PriceTable
from data.reading import list_files
from data.routing_log import ReadStats, RoutingLog
from data.schema import DataError
from evaluation.budget import BudgetTarget
from evaluation.report import data_section
from training.blocks import (
    ACCEPTED,
    REJECTION_FIELDS,
    block_models,
    block_statistics,
    matrix,
    quarantine_in_order,
    query_rules,
    read_block,
    reading_order,
)
from training.config import RunConfig, dump_config
from training.inputs import Learned, RunInputs
from training.run import HeldOutSplits, RunResult, evaluate_and_export, write_rejected
from training.tensorboard import TensorBoardLogger

#: The featurizer is fitted on at most about this many × ``featurizer.fit_sample`` training queries.
FIT_POOL = 2


@dataclass(frozen=True)
class DistributedInfo:
    """How the distributed fit ran: blocks of training statistics and the worker processes that made them."""

    address: str
    read_blocks: int
    statistics_blocks: int
    worker_pids: tuple[int, ...]
    block_seconds: tuple[float, ...]  # each statistics block's featurize + reduce time, in its task
    stage_seconds: dict[str, float]  # wall time of each stage, in order

    def to_dict(self) -> dict[str, Any]:
        """For the report's ``data`` section."""
        return {
            "address": self.address,
            "read_blocks": self.read_blocks,
            "statistics_blocks": self.statistics_blocks,
            "worker_processes": len(self.worker_pids),
            "stage_seconds": self.stage_seconds,
        }


@dataclass(frozen=True)
class DistributedFit:
    """What the distributed stages produce: everything :func:`evaluate_and_export` needs, and the statistics."""

    inputs: RunInputs
    statistics: LinUCBStatistics
    validation: RoutingLog
    test: RoutingLog
    info: DistributedInfo


def connect(address: str | None, progress: bool = True) -> str:
    """Join the Ray cluster at ``address`` ("auto", "ray://host:10001", host:port); None: the one
    already initialised in this process, else a new local one. Returns where it runs."""
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.print_on_execution_start = False
    # Sort-based shuffles range-partition by key: the per-query stage's output comes in query_id
    # order (the fingerprint streams it without a second shuffle), and no aggregator actors hold CPUs.
    context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    if not progress:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    return address or str(ray.get_runtime_context().gcs_address)


def train_distributed(
    config: RunConfig,
    out: Path,
    address: str | None = None,
    strict: bool = False,
    quiet: bool = False,
    target: BudgetTarget | None = None,
) -> RunResult:
    """``train.py --ray``: fit LinUCB from statistics summed over Ray blocks; write the usual run directory."""
    _check_scope(config)
    dump_config(config, out / "config.yaml")
    where = connect(address, progress=not quiet)
    with threadpool_limits(limits=config.blas_threads, user_api="blas"):  # the driver's numpy
        fit = fit_statistics(config, strict=strict, out=out, address=where)
        return export_fit(config, out, fit, quiet=quiet, target=target)


def export_fit(
    config: RunConfig, out: Path, fit: DistributedFit, quiet: bool = False, target: BudgetTarget | None = None
) -> RunResult:
    """Solve the summed statistics, evaluate on the gathered splits, write the run directory (stage 5)."""
    agent = linucb_from_statistics(fit.statistics, config.agent.linucb, cost_weight=config.reward.cost_weight)
    featurizer = fit.inputs.featurizer
    assert featurizer is not None
    validation = FeaturizedSplit(fit.validation, featurizer.transform(fit.validation.queries))
    test = FeaturizedSplit(fit.test, featurizer.transform(fit.test.queries))
    steps = agent.steps_done  # the training rows the statistics sum over
    learned = Learned(agent, {"steps": steps, "best_step": steps}, None)
    tensorboard = TensorBoardLogger(out / "tb")
    held_out = HeldOutSplits(validation, test)
    return evaluate_and_export(config, out, fit.inputs, learned, held_out, tensorboard, target, progress=not quiet)


def _check_scope(config: RunConfig) -> None:
    """What the distributed fit supports; anything else is one clear error before Ray starts."""
    problems = [
        f"{key}={value!r}"
        for key, value, supported in (
            ("agent.kind", config.agent.kind, "linucb"),
            ("agent.learning", config.agent.learning, "fit"),
            ("input", config.input, "text"),
            ("data.split", config.data.split, "hash"),
        )
        if value != supported
    ]
    if config.reward.budget is not None:
        problems.append("reward.budget (learned online)")
    if config.rules is not None:
        problems.append("rules (compiled by the single-process export)")
    if config.data.cost_mode == "tokens":
        problems.append("data.cost_mode='tokens' (the summed statistics regress USD cost only)")
    if problems:
        raise DataError(
            f"--ray fits LinUCB (agent.learning=fit, text input, hash split); not {', '.join(problems)}. "
            "Train it without --ray."
        )


def fit_statistics(
    config: RunConfig,
    strict: bool = False,
    out: Path | None = None,
    address: str = "",
    workers: int | None = None,
) -> DistributedFit:
    """Stages 1-4 of the module docstring on the connected Ray cluster.

    ``out``: where ``rejected.jsonl`` goes. ``workers``: read and statistics tasks at once
    (default: one per CPU of the cluster). The per-query shuffle has one partition per file, so
    the training split reaches stage 4 in as many blocks as there are files.
    """
    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    clock = _Clock()
    path = Path(config.data.path)
    files, queries, models, stats = _validated(config, clock, workers, strict, out)
    fingerprint = clock.time("fingerprint", lambda: _fingerprint(queries, models))
    complete = queries.filter(expr=col("reason") == ACCEPTED)
    fractions = config.data.fractions
    train_end, validation_end = fractions.train, fractions.train + fractions.validation
    n_queries = stats.rows_accepted // len(models)
    gathered, pool = _gather_splits(complete, n_queries, config, clock)
    positions = np.zeros(0) if gathered is None else gathered["split"].to_numpy()
    n_train = n_queries - int(np.count_nonzero(positions >= train_end))
    validation = _routing_log(gathered, (positions >= train_end) & (positions < validation_end), models)
    test = _routing_log(gathered, positions >= validation_end, models)
    counts = {"train": n_train, "validation": validation.n_queries, "test": test.n_queries}
    if n_train == 0 or test.n_queries == 0:
        raise DataError(f"{path}: too few queries ({n_queries}) to split into train and test")
    # stage 3: the featurizer, on the pool's training queries in reading order, sampled by their
    # split hash as training.run samples them; the pool holds the fit_sample first by that hash
    assert gathered is not None  # it holds the test split
    in_pool = gathered.filter(pa.array(positions < pool))
    featurizer = clock.time(
        "fit featurizer",
        lambda: TextFeaturizer(config.featurizer).fit(
            in_pool["query"].to_pylist(), sample_keys=in_pool["split"].to_numpy()
        ),
    )
    train_ds = complete.filter(expr=col("split") < train_end)
    blocks = clock.time(
        "statistics",
        lambda: train_ds.map_batches(
            partial(block_statistics, featurizer=featurizer, n_models=len(models)),
            batch_size=None,
            batch_format="pyarrow",
            num_cpus=1,
            compute=ray.data.TaskPoolStrategy(size=workers),
        ).take_all(),
    )
    statistics = _summed(blocks, len(models), featurizer.dimension)
    info = DistributedInfo(
        address=address,
        read_blocks=len(files),
        statistics_blocks=len(blocks),
        worker_pids=tuple(sorted({int(block["pid"]) for block in blocks})),
        block_seconds=tuple(float(block["seconds"]) for block in blocks),
        stage_seconds=clock.seconds,
    )
    summary = replace(test, stats=stats, fingerprint=fingerprint)  # the data section's counts are the whole log's
    inputs = RunInputs(
        data=data_section(summary, config.data.path) | {"queries": n_queries, "distributed": info.to_dict()},
        models=tuple(models),
        fingerprint=fingerprint,
        split_counts=counts,
        featurizer=featurizer,
        dimension=featurizer.dimension,
        train_mean_quality=statistics.mean_quality(),
        train_mean_cost=statistics.mean_cost(),
        tuning={"enabled": False}
        if not config.tuning.enabled
        else {
            "enabled": True,
            "skipped": "train.py --ray fits the configured values (tune them on a sample with train.py, then pin them)",
        },
    )
    return DistributedFit(inputs, statistics, validation, test, info)


def _validated(
    config: RunConfig, clock: _Clock, workers: int, strict: bool, out: Path | None
) -> tuple[list[Path], ray.data.Dataset, list[str], ReadStats]:
    """Stages 1 and 2: the log's files, its per-query records and rejections, its models, the quarantine's counts.

    ``rejected.jsonl`` is written to ``out`` (when given), also when no row is valid (a :class:`DataError`).
    """
    path = Path(config.data.path)
    files = list_files(path)
    for file in files:
        if file.stat().st_size == 0:
            raise DataError(f"{file}: file is empty")
    prices = PriceTable.load_or_default(config.data.prices)
    items = [{"file_no": number, "file": str(file)} for number, file in enumerate(files)]
    rows = clock.time(
        "read and validate",
        lambda: (
            ray.data.from_items(items, override_num_blocks=len(items))
            .map_batches(
                partial(
                    read_block,
                    prices=prices,
                    allow_pickle=config.data.allow_pickle,
                    max_cost=config.data.max_cost,
                    strict=strict,
                ),
                batch_size=1,
                batch_format="numpy",
                num_cpus=1,
                compute=ray.data.TaskPoolStrategy(size=workers),
            )
            .materialize()
        ),
    )
    distinct = rows.map_batches(block_models, batch_size=None, batch_format="pyarrow")
    models = sorted({str(row["model"]) for row in _run(distinct.take_all)})  # the arms: models of valid rows
    if not models:
        _finish_quarantine(files, rows, None, strict, out, prices, config)
        raise DataError(f"{path}: no usable query (no valid row)")
    queries = clock.time(
        "per-query rules",
        lambda: (
            rows.filter(expr=col("reason") == ACCEPTED)
            .sort("query_id")  # range-partitioned: every query's rows land in one block (as for map_groups)
            .map_batches(partial(query_rules, models=models, seed=config.seed), batch_size=None, batch_format="pyarrow")
            .materialize()
        ),
    )
    stats = clock.time("quarantine", lambda: _finish_quarantine(files, rows, queries, strict, out, prices, config))
    return files, queries, models, stats


def _gather_splits(
    complete: ray.data.Dataset, n_queries: int, config: RunConfig, clock: _Clock
) -> tuple[pa.Table | None, float]:
    """The validation and test splits and the featurizer's pool (split hash below the returned cut), in one pass.

    The pool is widened (very unlikely) until it holds ``featurizer.fit_sample`` training queries.
    """
    train_end, sample = config.data.fractions.train, config.featurizer.fit_sample
    pool = train_end * min(1.0, FIT_POOL * sample / max(round(n_queries * train_end), 1))

    def gather(pool_end: float) -> pa.Table | None:
        return _gathered(complete.filter(expr=(col("split") < pool_end) | (col("split") >= train_end)))

    while True:
        gathered = clock.time("gather splits", partial(gather, pool))
        positions = np.zeros(0) if gathered is None else gathered["split"].to_numpy()
        n_train = n_queries - int(np.count_nonzero(positions >= train_end))
        if np.count_nonzero(positions < pool) >= min(sample, n_train) or pool >= train_end:
            return gathered, pool
        pool = min(train_end, 2 * pool)


def _summed(blocks: list[dict[str, Any]], n_models: int, dimension: int) -> LinUCBStatistics:
    """Stage 4's per-block statistics added up."""
    statistics = LinUCBStatistics.zeros(n_models, dimension)
    for block in blocks:
        fields = {name: np.asarray(block[name])[None] for name in LinUCBStatistics.__slots__}
        statistics = statistics + LinUCBStatistics.from_arrays(fields)
    return statistics


class _Clock:
    """Wall time of each named stage (reported in the run's data section and by bench/bench_ray.py)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def time(self, name: str, stage: Any) -> Any:
        """Run ``stage`` (through :func:`_run`) and record how long it took."""
        start = time.perf_counter()
        try:
            return _run(stage)
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 3)


def _run(stage: Any) -> Any:
    """Run a Ray Data stage; a :class:`DataError` raised in a worker comes back as itself (exit status 2)."""
    try:
        return stage()
    except DataError:
        raise
    except Exception as error:
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, DataError):
                raise DataError(str(cause)) from None
            nested = getattr(cause, "cause", None)
            cause = nested if isinstance(nested, BaseException) else cause.__cause__
        raise


def _finish_quarantine(
    files: list[Path],
    rows: ray.data.Dataset,
    queries: ray.data.Dataset | None,
    strict: bool,
    out: Path | None,
    prices: PriceTable,
    config: RunConfig,
) -> ReadStats:
    """Gather every rejection, write ``rejected.jsonl`` in the single-process order, count rows by fate."""
    fields = ["model"] + [name for name, _ in REJECTION_FIELDS]
    rejected_rows = rows.filter(expr=col("reason") != ACCEPTED).select_columns(fields)
    if queries is not None:
        rejected_rows = rejected_rows.union(queries.filter(expr=col("reason") != ACCEPTED).select_columns(fields))
    tables = [table for table in ray.get(_run(rejected_rows.to_arrow_refs)) if table.num_rows]
    rejected = pa.concat_tables(tables) if tables else None
    quarantine = quarantine_in_order(
        rejected, files, strict, prices, config.data.allow_pickle, max_cost=config.data.max_cost
    )
    if out is not None:
        write_rejected(quarantine, out)
    rows_read = _run(rows.count)
    return ReadStats(
        files=tuple(str(f) for f in files),
        rows_read=rows_read,
        rows_accepted=rows_read - quarantine.count,
        rows_rejected=quarantine.count,
        rejected_by_reason=quarantine.by_reason(),
    )


def _gathered(dataset: ray.data.Dataset) -> pa.Table | None:
    """The dataset on the driver, in reading order (None when it is empty)."""
    tables = [table for table in ray.get(_run(dataset.to_arrow_refs)) if table.num_rows]
    return reading_order(pa.concat_tables(tables)) if tables else None


def _routing_log(table: pa.Table | None, rows: np.ndarray, models: list[str]) -> RoutingLog:
    """The complete queries at ``rows`` of a gathered table as a :class:`RoutingLog` (reading order kept)."""
    if table is None or not rows.any():
        empty = np.zeros((0, len(models)))
        return RoutingLog(tuple(models), np.array([], dtype=object), [], empty, empty.copy())
    part = table.filter(pa.array(rows))
    return RoutingLog(
        models=tuple(models),
        query_ids=np.array(part["query_id"].to_pylist(), dtype=object),
        queries=part["query"].to_pylist(),
        quality=matrix(part, "quality", len(models)),
        cost=matrix(part, "cost", len(models)),
    )


def _fingerprint(queries: ray.data.Dataset, models: list[str]) -> str:
    """The data fingerprint of docs/contracts.md §1, streamed through the driver in ``query_id`` order.

    The canonical lines are those of :func:`data.fingerprint.fingerprint`, hashed by
    :func:`data.fingerprint.update_digest` (a test checks both agree). The per-query stage sorts
    by ``query_id``, so its materialized blocks usually come in key order already; that is
    checked while hashing, and only when it fails is the order made by a distributed sort (a
    second shuffle).
    """
    fields = ["query_id", "query", "quality", "cost", "reason"]
    blocks = (ray.get(ref) for ref in queries.select_columns(fields).to_arrow_refs())
    try:
        return _digest(blocks, models)
    except _OutOfOrder:
        complete = queries.filter(expr=col("reason") == ACCEPTED).select_columns(fields)
        return _digest(complete.sort("query_id").iter_batches(batch_format="pyarrow", batch_size=65536), models)


class _OutOfOrder(Exception):
    """The blocks handed to :func:`_digest` are not in ``query_id`` order."""


def _digest(tables: Iterable[pa.Table], models: list[str]) -> str:
    """sha256 of the canonical lines of the complete queries in ``tables`` (models are sorted already)."""
    digest = hashlib.sha256()
    last = ""
    for table in tables:
        complete = table.filter(pc.equal(table["reason"], ACCEPTED))
        ids = complete["query_id"].to_pylist()
        if not ids:
            continue
        if ids[0] < last or ids != sorted(ids):
            raise _OutOfOrder
        last = ids[-1]
        quality, cost = matrix(complete, "quality", len(models)), matrix(complete, "cost", len(models))
        update_digest(digest, complete["query_id"], complete["query"], models, quality, cost)
    return digest.hexdigest()
