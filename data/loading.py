"""Read a log (file or directory), validate every row, quarantine the rest: :func:`load_log`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from tqdm import tqdm

from data.decision_log import Pending, is_decision_log, join_decision_records, join_decisions
from data.log_builder import LogBuilder
from data.prices import PriceTable
from data.quarantine import Quarantine
from data.reading import Item, ParsedRow, list_files, read_file
from data.routing_log import RoutingLog
from data.rules import MAX_COST, Invalid, Limits
from data.schema import DataError
from data.validation import validate


@dataclass(frozen=True)
class LoadedLog:
    """The accepted log and the quarantine of rejected rows (write it with ``.write``)."""

    log: RoutingLog
    quarantine: Quarantine


def load_log(
    path: str | Path,
    prices: PriceTable | None = None,
    strict: bool = False,
    allow_pickle: bool = False,
    progress: bool = False,
    columnar: bool = True,
    chunk_bytes: int | None = None,
    max_cost: float = MAX_COST,
) -> LoadedLog:
    """Read every outcome row at ``path``; rows read = rows accepted + rows rejected.

    With ``columnar`` (the default) each file is read by blocks through :mod:`data.columnar`,
    and only the blocks it cannot take whole go through the per-row path; the result is the
    same as with ``columnar=False`` (per-row only), which the parity tests check. ``chunk_bytes``
    sets the block size (default :data:`data.columnar.CHUNK_BYTES`). ``max_cost``
    (``data.max_cost``) and ``strict`` set each file's :class:`data.rules.Limits`.

    Raises :class:`DataError` for file-level problems (missing, empty, unknown format, a mixed
    full-information / bandit-feedback log, no accepted row), for a ``max_cost`` that is not
    > 0 and, under ``strict``, at the first rejected row.
    """
    Limits(max_cost)  # checked before any file is read
    files = list_files(Path(path))
    quarantine = Quarantine(strict=strict)
    builder = LogBuilder(quarantine)
    decision_logs = [file for file in files if is_decision_log(file)]
    with tqdm(desc=f"reading {Path(path).name}", unit=" rows", disable=not progress) as bar:
        for file in files:
            if file in decision_logs:
                continue
            limits = Limits.of(file, max_cost, strict)
            if columnar and file.suffix.lower() != ".pkl":
                _read_columnar(builder, file, prices, limits, bar, chunk_bytes)
            else:
                items = join_decisions(read_file(file, allow_pickle=allow_pickle))
                _read_rows(builder, items, prices, limits, bar)
        if decision_logs:  # joined together: a decision's feedback may be in another worker's log
            records = join_decision_records(chain.from_iterable(read_file(file) for file in decision_logs))
            _read_rows(builder, records, prices, Limits.of(decision_logs[0], max_cost, strict), bar)
    log = builder.build([str(f) for f in files])
    if log.n_queries == 0:
        reasons = ", ".join(f"{n} {r}" for r, n in log.stats.rejected_by_reason.items()) or "no rows"
        unpriced = quarantine.unpriced_models()
        hint = f"; no price for model(s) {', '.join(unpriced)} (see --prices)" if unpriced else ""
        raise DataError(f"{path}: no usable query ({log.stats.rows_read} rows read; rejected: {reasons}){hint}")
    return LoadedLog(log, quarantine)


def _read_columnar(
    builder: LogBuilder, file: Path, prices: PriceTable | None, limits: Limits, bar: tqdm, chunk_bytes: int | None
) -> None:
    """One file by columnar blocks; the spans they cannot take go through the per-row path."""
    from data.columnar import CHUNK_BYTES, Block, read_blocks

    rows = RowFeed(read_file(file))
    for part in read_blocks(file, chunk_bytes or CHUNK_BYTES, limits):
        if isinstance(part, Block) and builder.add_block(part):
            bar.update(part.rows)
            continue
        span = part.fallback() if isinstance(part, Block) else part
        first, last = span.first, span.last
        if first == 1 and last is None:  # the whole file, as the per-row path reads it
            _read_rows(builder, join_decisions(read_file(file)), prices, limits, bar)
        else:
            _read_rows(builder, rows.take(first, last), prices, limits, bar)


def _read_rows(
    builder: LogBuilder, items: Iterator[Item | Pending], prices: PriceTable | None, limits: Limits, bar: tqdm
) -> None:
    """The per-row path: parse errors and invalid rows are rejected, valid rows go to the builder."""
    for item in items:
        bar.update()
        if isinstance(item, Pending):
            builder.pending += 1
            continue
        if not isinstance(item, ParsedRow):
            builder.reject(item.file, item.position, item.locator, item.reason, item.detail, item.raw)
            continue
        try:
            outcome = validate(item.fields, prices, limits)
        except Invalid as invalid:
            builder.reject(item.file, item.position, item.locator, invalid.reason, invalid.detail, item.fields)
            continue
        builder.add(outcome, item.file, item.position, item.locator, item.fields)


class RowFeed:
    """The per-row reader of one file, consumed span by span in file order (read at most once)."""

    def __init__(self, items: Iterator[Item]) -> None:
        self._items = items
        self._held: Item | None = None

    def take(self, first: int, last: int | None) -> Iterator[Item]:
        """The items at positions ``first`` .. ``last`` (``None``: to the end); earlier ones are skipped."""
        while True:
            item = self._held if self._held is not None else next(self._items, None)
            self._held = None
            if item is None:
                return
            if item.position < first:
                continue
            if last is not None and item.position > last:
                self._held = item
                return
            yield item
