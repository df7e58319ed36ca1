"""Read a log (file or directory), validate every row, quarantine the rest: :func:`load_log`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from data.decision_log import Pending, join_decisions
from data.log_builder import LogBuilder
from data.prices import PriceTable
from data.quarantine import Quarantine
from data.reading import ParsedRow, list_files, read_file
from data.routing_log import RoutingLog
from data.schema import DataError
from data.validation import Invalid, validate


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
) -> LoadedLog:
    """Read every outcome row at ``path``; rows read = rows accepted + rows rejected.

    Raises :class:`DataError` for file-level problems (missing, empty, unknown format, a mixed
    full-information / bandit-feedback log, no accepted row) and, under ``strict``, at the first
    rejected row.
    """
    files = list_files(Path(path))
    quarantine = Quarantine(strict=strict)
    builder = LogBuilder(quarantine)
    with tqdm(desc=f"reading {Path(path).name}", unit=" rows", disable=not progress) as bar:
        for file in files:
            for item in join_decisions(read_file(file, allow_pickle=allow_pickle)):
                bar.update()
                if isinstance(item, Pending):
                    builder.pending += 1
                    continue
                if not isinstance(item, ParsedRow):
                    builder.reject(item.file, item.position, item.locator, item.reason, item.detail, item.raw)
                    continue
                try:
                    outcome = validate(item.fields, prices)
                except Invalid as invalid:
                    builder.reject(item.file, item.position, item.locator, invalid.reason, invalid.detail, item.fields)
                    continue
                builder.add(outcome, item.file, item.position, item.locator, item.fields)
    log = builder.build([str(f) for f in files])
    if log.n_queries == 0:
        reasons = ", ".join(f"{n} {r}" for r, n in log.stats.rejected_by_reason.items()) or "no rows"
        unpriced = quarantine.unpriced_models()
        hint = f"; no price for model(s) {', '.join(unpriced)} (see --prices)" if unpriced else ""
        raise DataError(f"{path}: no usable query ({log.stats.rows_read} rows read; rejected: {reasons}){hint}")
    return LoadedLog(log, quarantine)
