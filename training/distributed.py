"""Distributed LinUCB fitting on Ray (``train.py --ray [ADDRESS]``): exact, for logs that outgrow one machine.

The pipeline, each stage a Ray Data operation over blocks:

1. **Read and validate** (one block per log file): every file is read by routerl's own readers
   and every row checked by :func:`data.validation.validate`, exactly as the single-process
   loader does; a bad row becomes a rejection with its reason (Ray's own JSON reader would fail
   the whole dataset at one malformed line, and nothing may be lost silently). Files are listed
   on the driver; shard a large log into many files.
2. **Per-query rules** (``groupby("query_id").map_groups``): a query's rows, in reading order
   (file, line), get the cross-row rules of :mod:`data.log_builder`: conflicting text,
   duplicate outcome, incomplete query (every model of the log is needed). Each complete query
   becomes one record (text, per-model quality and cost) with its split, by the hash of
   :func:`data.splits.hash_unit` and the seed.
3. **Featurizer** on the driver: fitted on the training split's texts in reading order, so it is
   the single-process featurizer whenever the training split has at most
   ``FIT_POOL × featurizer.fit_sample`` queries; beyond, on a hash-chosen pool of about that many
   training queries (the featurizer samples ``fit_sample`` of them anyway).
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
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data.context import ShuffleStrategy
from ray.data.expressions import col

from agents.linucb import LinUCBStatistics, linucb_from_statistics
from data.decision_log import Pending, join_decisions
from data.featurizer import TextFeaturizer
from data.prices import PriceTable
from data.quarantine import Quarantine
from data.reading import ParsedRow, list_files, read_file
from data.routing_log import ReadStats, RoutingLog
from data.schema import DataError, RejectReason
from data.splits import hash_unit
from data.validation import Invalid, validate
from evaluation.budget import BudgetTarget
from evaluation.report import data_section
from training.config import RunConfig, dump_config
from training.run import Learned, RunInputs, RunResult, _Split, evaluate_and_export
from training.tensorboard import TensorBoardLogger

#: The featurizer is fitted on at most about this many × ``featurizer.fit_sample`` training queries.
FIT_POOL = 2
ACCEPTED = ""  # the ``reason`` of an accepted row

_REJECTION_FIELDS = [
    ("file_no", pa.int64()),
    ("position", pa.int64()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("content", pa.string()),  # JSON of the parsed row, or the raw line
]
ROW_SCHEMA = pa.schema(
    [
        ("query_id", pa.string()),
        ("query", pa.string()),
        ("model", pa.string()),
        ("quality", pa.float64()),
        ("cost", pa.float64()),
        *_REJECTION_FIELDS,
    ]
)


def query_schema(n_models: int) -> pa.Schema:
    """Stage 2's records: one per complete query (``reason`` empty) or per rejected row."""
    vector = pa.list_(pa.float64(), n_models)
    return pa.schema(
        [
            ("query_id", pa.string()),
            ("query", pa.string()),
            ("quality", vector),
            ("cost", vector),
            ("split", pa.float64()),  # hash position in [0, 1)
            *_REJECTION_FIELDS,
        ]
    )


@dataclass(frozen=True)
class DistributedInfo:
    """How the distributed fit ran: blocks of training statistics and the worker processes that made them."""

    address: str
    read_blocks: int
    statistics_blocks: int
    worker_pids: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """For the report's ``data`` section."""
        return {
            "address": self.address,
            "read_blocks": self.read_blocks,
            "statistics_blocks": self.statistics_blocks,
            "worker_processes": len(self.worker_pids),
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
    statistics_blocks: int | None = None,
) -> RunResult:
    """``train.py --ray``: fit LinUCB from statistics summed over Ray blocks; write the usual run directory."""
    _check_scope(config)
    dump_config(config, out / "config.yaml")
    where = connect(address, progress=not quiet)
    fit = fit_statistics(config, strict=strict, out=out, statistics_blocks=statistics_blocks, address=where)
    return export_fit(config, out, fit, quiet=quiet, target=target)


def export_fit(
    config: RunConfig, out: Path, fit: DistributedFit, quiet: bool = False, target: BudgetTarget | None = None
) -> RunResult:
    """Solve the summed statistics, evaluate on the gathered splits, write the run directory (stage 5)."""
    agent = linucb_from_statistics(fit.statistics, config.agent.linucb, cost_weight=config.reward.cost_weight)
    featurizer = fit.inputs.featurizer
    assert featurizer is not None
    validation = _Split(fit.validation, featurizer.transform(fit.validation.queries))
    test = _Split(fit.test, featurizer.transform(fit.test.queries))
    steps = fit.inputs.split_counts["train"]
    learned = Learned(agent, {"steps": steps, "best_step": steps}, None)
    tensorboard = TensorBoardLogger(out / "tb")
    return evaluate_and_export(
        config, out, fit.inputs, learned, validation, test, tensorboard, target=target, progress=not quiet
    )


def _check_scope(config: RunConfig) -> None:
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
    if problems:
        raise DataError(
            f"--ray fits LinUCB (agent.learning=fit, text input, hash split); not {', '.join(problems)}. "
            "Train it without --ray."
        )


def fit_statistics(
    config: RunConfig,
    strict: bool = False,
    out: Path | None = None,
    statistics_blocks: int | None = None,
    address: str = "",
    featurizer: TextFeaturizer | None = None,
    partitions: int | None = None,
    workers: int | None = None,
) -> DistributedFit:
    """Stages 1-4 of the module docstring on the connected Ray cluster.

    ``featurizer``: use this fitted one instead of fitting on the driver (tests compare against a
    single-process fit with the same featurizer). ``out``: where ``rejected.jsonl`` goes.
    ``partitions``: of the per-query shuffle (default: one per file); ``statistics_blocks``: the
    training split is repartitioned into this many blocks for stage 4 (default: as shuffled).
    ``workers``: read tasks and statistics actors at once (default: one per CPU of the cluster).
    """
    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    path = Path(config.data.path)
    files = list_files(path)
    for file in files:
        if file.stat().st_size == 0:
            raise DataError(f"{file}: file is empty")
    prices = PriceTable.load_or_default(config.data.prices)
    items = [{"file_no": number, "file": str(file)} for number, file in enumerate(files)]
    rows = _run(
        lambda: (
            ray.data.from_items(items, override_num_blocks=len(items))
            .map_batches(
                partial(_read_block, prices=prices, allow_pickle=config.data.allow_pickle),
                batch_size=1,
                batch_format="numpy",
                num_cpus=1,
                compute=ray.data.TaskPoolStrategy(size=workers),
            )
            .materialize()
        )
    )
    distinct = rows.map_batches(_block_models, batch_size=None, batch_format="pyarrow")
    models = sorted({str(row["model"]) for row in _run(distinct.take_all)})  # the arms: models of valid rows
    if not models:
        _finish_quarantine(files, rows, None, [], strict, out)
        raise DataError(f"{path}: no usable query (no valid row)")
    queries = _run(
        lambda: (
            rows.filter(expr=col("reason") == ACCEPTED)
            .groupby("query_id", num_partitions=partitions or len(files))
            .map_groups(_query_rules, batch_format="pyarrow", fn_kwargs={"models": models, "seed": config.seed})
            .materialize()
        )
    )
    stats = _finish_quarantine(files, rows, queries, models, strict, out)
    complete = queries.filter(expr=col("reason") == ACCEPTED)
    fractions = config.data.fractions
    train_end, validation_end = fractions.train, fractions.train + fractions.validation
    n_queries = stats.rows_accepted // len(models)
    n_train_estimate = round(n_queries * fractions.train)
    pool = fractions.train * min(1.0, FIT_POOL * config.featurizer.fit_sample / max(n_train_estimate, 1))
    if featurizer is not None:
        pool = 0.0
    gathered = _gathered(complete.filter(expr=(col("split") < pool) | (col("split") >= train_end)))  # one pass
    positions = np.zeros(0) if gathered is None else gathered["split"].to_numpy()
    validation = _routing_log(gathered, (positions >= train_end) & (positions < validation_end), models)
    test = _routing_log(gathered, positions >= validation_end, models)
    n_train = n_queries - validation.n_queries - test.n_queries
    counts = {"train": n_train, "validation": validation.n_queries, "test": test.n_queries}
    if n_train == 0 or test.n_queries == 0:
        raise DataError(f"{path}: too few queries ({n_queries}) to split into train and test")
    if featurizer is None:  # stage 3: on the training queries of the pool, in reading order
        texts = [] if gathered is None else gathered.filter(pa.array(positions < pool))["query"].to_pylist()
        featurizer = TextFeaturizer(config.featurizer).fit(texts)
    train_ds = complete.filter(expr=col("split") < train_end)
    if statistics_blocks is not None:
        train_ds = train_ds.repartition(statistics_blocks)
    blocks = _run(
        lambda: train_ds.map_batches(
            BlockStatistics,
            batch_size=None,
            batch_format="pyarrow",
            num_cpus=1,
            # one block in flight per actor: blocks go to whichever actor is free, spread over all
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
            fn_constructor_kwargs={"featurizer": featurizer, "n_models": len(models)},
        ).take_all()
    )
    statistics = LinUCBStatistics.zeros(len(models), featurizer.dimension)
    for block in blocks:
        statistics = statistics + LinUCBStatistics.from_arrays({k: np.asarray(v)[None] for k, v in block.items()})
    info = DistributedInfo(
        address=address,
        read_blocks=len(files),
        statistics_blocks=len(blocks),
        worker_pids=tuple(sorted({int(block["pid"]) for block in blocks})),
    )
    fingerprint = _fingerprint(queries, models)
    log_summary = RoutingLog(
        models=tuple(models),
        query_ids=np.empty(n_queries, dtype=object),  # only the count is reported
        queries=[],
        quality=np.zeros((0, len(models))),
        cost=np.zeros((0, len(models))),
        stats=stats,
        fingerprint=fingerprint,
    )
    inputs = RunInputs(
        data=data_section(log_summary, config.data.path) | {"distributed": info.to_dict()},
        models=tuple(models),
        fingerprint=fingerprint,
        split_counts=counts,
        featurizer=featurizer,
        dimension=featurizer.dimension,
        train_mean_quality=statistics.mean_quality(),
        train_mean_cost=statistics.mean_cost(),
    )
    return DistributedFit(inputs, statistics, validation, test, info)


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


def _read_block(batch: dict[str, np.ndarray], prices: PriceTable, allow_pickle: bool) -> pa.Table:
    """Stage 1: read and validate the files of ``batch`` (one row per file) into :data:`ROW_SCHEMA` rows."""
    columns: dict[str, list[Any]] = {name: [] for name in ROW_SCHEMA.names}

    def add(fields: dict[str, Any] | None, number: int, position: int, reason: str, detail: str, raw: Any) -> None:
        outcome = fields or {}
        columns["query_id"].append(outcome.get("query_id"))
        columns["query"].append(outcome.get("query"))
        columns["model"].append(outcome.get("model"))
        columns["quality"].append(outcome.get("quality"))
        columns["cost"].append(outcome.get("cost"))
        columns["file_no"].append(number)
        columns["position"].append(position)
        columns["reason"].append(reason)
        columns["detail"].append(detail)
        columns["content"].append(None if raw is None else json.dumps(raw, ensure_ascii=False, default=str))

    for number, name in zip(batch["file_no"].tolist(), batch["file"].tolist()):
        file = Path(name)
        for item in join_decisions(read_file(file, allow_pickle=allow_pickle)):
            if isinstance(item, Pending):
                raise DataError(f"{file}: a decision log is bandit feedback; --ray fits full-information logs")
            if not isinstance(item, ParsedRow):
                add(None, number, item.position, item.reason.value, item.detail, item.raw)
                continue
            try:
                outcome = validate(item.fields, prices)
            except Invalid as invalid:
                add(None, number, item.position, invalid.reason.value, invalid.detail, item.fields)
                continue
            if outcome.propensity is not None:
                raise DataError(
                    f"{file}: {item.locator} {item.position}: a row with propensity (bandit feedback); "
                    "--ray fits full-information logs"
                )
            add(outcome._asdict(), number, item.position, ACCEPTED, "", item.fields)
    return pa.table(columns, schema=ROW_SCHEMA)


def _query_rules(rows: pa.Table, models: list[str], seed: int) -> pa.Table:
    """Stage 2, one query's valid rows: the cross-row rules of :mod:`data.log_builder`, in reading order.

    A row whose text differs from the query's first row is ``conflicting text``; a second row of a
    model ``duplicate outcome``; a query that then lacks a model has its rows rejected as
    ``incomplete query``. A complete query becomes one record with its models' outcomes.
    """
    order = np.lexsort((rows["position"].to_numpy(), rows["file_no"].to_numpy()))
    rows = rows.take(pa.array(order))
    index = {model: k for k, model in enumerate(models)}
    texts, names = rows["query"].to_pylist(), rows["model"].to_pylist()
    quality, cost = rows["quality"].to_numpy(), rows["cost"].to_numpy()
    query_id = rows["query_id"][0].as_py()
    accepted: dict[int, int] = {}  # model index -> row
    records: dict[str, list[Any]] = {name: [] for name in query_schema(len(models)).names}

    def reject(row: int, reason: RejectReason, detail: str) -> None:
        for name in ("query_id", "query", "quality", "cost", "split"):
            records[name].append(None)
        records["file_no"].append(rows["file_no"][row].as_py())
        records["position"].append(rows["position"][row].as_py())
        records["reason"].append(reason.value)
        records["detail"].append(detail)
        records["content"].append(rows["content"][row].as_py())

    for row, (text, model) in enumerate(zip(texts, names)):
        if text != texts[0]:  # the first row is always accepted: every row here passed validation
            reject(row, RejectReason.CONFLICTING_TEXT, f"query_id {query_id!r} was first seen with different text")
        elif index[model] in accepted:
            reject(row, RejectReason.DUPLICATE_OUTCOME, f"({query_id!r}, {model!r}) already has an outcome")
        else:
            accepted[index[model]] = row
    if len(accepted) < len(models):
        detail = f"query {query_id!r} has {len(accepted)} of {len(models)} models' outcomes"
        for row in sorted(accepted.values()):
            reject(row, RejectReason.INCOMPLETE_QUERY, detail)
    else:
        first = min(accepted.values())
        cells = [accepted[k] for k in range(len(models))]
        records["query_id"].append(query_id)
        records["query"].append(texts[first])
        records["quality"].append(quality[cells].tolist())
        records["cost"].append(cost[cells].tolist())
        records["split"].append(float(hash_unit(np.array([query_id], dtype=object), seed)[0]))
        records["file_no"].append(rows["file_no"][first].as_py())
        records["position"].append(rows["position"][first].as_py())
        records["reason"].append(ACCEPTED)
        records["detail"].append("")
        records["content"].append(None)
    return pa.table(records, schema=query_schema(len(models)))


def _block_models(block: pa.Table) -> pa.Table:
    """The distinct models of a block's valid rows."""
    valid = block.filter(pc.equal(block["reason"], ACCEPTED))
    return pa.table({"model": pc.unique(valid["model"])})


class BlockStatistics:
    """Stage 4 on an actor: one block of training queries → its LinUCB statistics and the actor's pid.

    An actor (rather than a task) keeps the fitted featurizer loaded across the blocks it handles.
    """

    def __init__(self, featurizer: TextFeaturizer, n_models: int) -> None:
        self.featurizer = featurizer
        self.n_models = n_models

    def __call__(self, block: pa.Table) -> dict[str, np.ndarray]:
        """The statistics of ``block`` as one row (:meth:`LinUCBStatistics.as_arrays`)."""
        features = self.featurizer.transform(block["query"].to_pylist())
        k = self.n_models
        statistics = LinUCBStatistics.of(features, _matrix(block, "quality", k), _matrix(block, "cost", k))
        return statistics.as_arrays() | {"pid": np.array([os.getpid()])}


def _matrix(table: pa.Table, column: str, n_models: int) -> np.ndarray:
    """A fixed-size-list column as an (N, K) float64 matrix."""
    values = table[column].combine_chunks()
    return np.asarray(values.flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(-1, n_models)


def _reading_order(table: pa.Table) -> pa.Table:
    """Rows sorted by (file, position): the order in which the single-process loader meets them."""
    return table.sort_by([("file_no", "ascending"), ("position", "ascending")])


def _finish_quarantine(
    files: list[Path],
    rows: ray.data.Dataset,
    queries: ray.data.Dataset | None,
    models: list[str],
    strict: bool,
    out: Path | None,
) -> ReadStats:
    """Gather every rejection in the single-process order, write ``rejected.jsonl``, count rows by fate.

    Row-level and per-query rejections come in reading order, then ``incomplete query`` ones (the
    single-process builder finds those last); under ``strict`` the first one is the error.
    """
    fields = [name for name, _ in _REJECTION_FIELDS]
    rejected_rows = rows.filter(expr=col("reason") != ACCEPTED).select_columns(fields)
    if queries is not None:
        rejected_rows = rejected_rows.union(queries.filter(expr=col("reason") != ACCEPTED).select_columns(fields))
    tables = [table for table in ray.get(_run(rejected_rows.to_arrow_refs)) if table.num_rows]
    rejected = _reading_order(pa.concat_tables(tables)) if tables else None
    quarantine = Quarantine(strict=strict)
    if rejected is not None:
        records = rejected.to_pylist()
        late = [r for r in records if r["reason"] == RejectReason.INCOMPLETE_QUERY.value]
        for record in [r for r in records if r["reason"] != RejectReason.INCOMPLETE_QUERY.value] + late:
            file = files[record["file_no"]]
            locator = "line" if file.suffix.lower() == ".jsonl" else "row"
            content = None if record["content"] is None else json.loads(record["content"])
            quarantine.reject(
                str(file), record["position"], locator, RejectReason(record["reason"]), record["detail"], content
            )
    if out is not None:
        quarantine.write(out / "rejected.jsonl")
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
    return _reading_order(pa.concat_tables(tables)) if tables else None


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
        quality=_matrix(part, "quality", len(models)),
        cost=_matrix(part, "cost", len(models)),
    )


def _fingerprint(queries: ray.data.Dataset, models: list[str]) -> str:
    """The data fingerprint of CONTRACTS.md §1, streamed through the driver in ``query_id`` order.

    The canonical lines are those of :func:`data.fingerprint.fingerprint` (a test checks both
    agree). The per-query shuffle is sort-based, so its materialized blocks usually come in key
    order already; that is checked while hashing, and only when it fails is the order made by a
    distributed sort (a second shuffle).
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
    encode = json.JSONEncoder(ensure_ascii=False).encode
    names = [encode(model) for model in models]
    last = ""
    for table in tables:
        complete = table.filter(pc.equal(table["reason"], ACCEPTED))
        ids = complete["query_id"].to_pylist()
        if not ids:
            continue
        if ids[0] < last or ids != sorted(ids):
            raise _OutOfOrder
        last = ids[-1]
        quality = _matrix(complete, "quality", len(models)).tolist()
        cost = _matrix(complete, "cost", len(models)).tolist()
        lines: list[str] = []
        for query_id, text, qualities, costs in zip(ids, complete["query"].to_pylist(), quality, cost):
            prefix = f"[{encode(query_id)},{encode(text)},"
            lines.extend(f"{prefix}{name},{q!r},{c!r}]\n" for name, q, c in zip(names, qualities, costs))
        digest.update("".join(lines).encode("utf-8"))
    return digest.hexdigest()
