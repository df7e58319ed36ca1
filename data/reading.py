"""File readers: turn JSONL, CSV, Parquet and RouterBench wide files into outcome rows.

Each reader streams its file and yields, per outcome (one query × model), either a
:class:`ParsedRow` (a dict of fields, not yet validated) or a :class:`RowError` for a line that
could not be parsed at all (invalid UTF-8, malformed JSON, a truncated last line, an unterminated
CSV quote), by a rule of :mod:`data.rules`. Validation of values happens in
:mod:`data.validation`; cross-row rules in :mod:`data.log_builder`.
"""

from __future__ import annotations

import ast
import csv
import json
import pickle
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from data import rules
from data.rules import Rule
from data.schema import (
    REQUIRED_COLUMNS,
    ROUTERBENCH_COST_SUFFIX,
    ROUTERBENCH_RESPONSE_SUFFIX,
    ROUTERBENCH_TASK_COLUMN,
    DataError,
    RejectReason,
)

SUPPORTED_SUFFIXES = (".jsonl", ".csv", ".parquet", ".pkl")


class ParsedRow(NamedTuple):
    """One outcome as read, before validation (a NamedTuple: one is built per row)."""

    file: str
    position: int
    locator: str  # "line" or "row"
    fields: dict[str, Any]


@dataclass(frozen=True)
class RowError:
    """A line that could not be parsed into fields; rejected by ``rule`` with ``detail``."""

    file: str
    position: int
    locator: str
    rule: Rule
    detail: str
    raw: str

    @property
    def reason(self) -> RejectReason:
        """The rejection reason (of :attr:`rule`)."""
        return self.rule.reason

    @classmethod
    def by(cls, rule: Rule, file: str, position: int, locator: str, raw: str, **values: object) -> RowError:
        """The line rejected by ``rule`` (one of :mod:`data.rules`), its message filled with ``values``."""
        return cls(file, position, locator, rule, rule.detail(**values), raw)


Item = ParsedRow | RowError


def list_files(path: Path) -> list[Path]:
    """The log files at ``path``: the file itself, or every supported file in a directory (sorted)."""
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
        if not files:
            raise DataError(f"{path}: directory holds no log files ({', '.join(SUPPORTED_SUFFIXES)})")
        return files
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise DataError(f"{path}: unknown log format {path.suffix!r}; expected one of {', '.join(SUPPORTED_SUFFIXES)}")
    return [path]


def read_file(path: Path, allow_pickle: bool = False) -> Iterator[Item]:
    """Stream the outcome rows of one file, dispatching on its suffix and (for CSV) header."""
    suffix = path.suffix.lower()
    check_file(path)
    if suffix == ".jsonl":
        yield from _read_jsonl(path)
    elif suffix == ".csv":
        yield from _read_csv(path)
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    elif suffix == ".pkl":
        if not allow_pickle:
            raise DataError(
                f"{path}: pandas pickles can run arbitrary code when loaded; "
                "pass --allow-pickle only for files you trust"
            )
        yield from _read_pickle(path)


def check_file(path: Path) -> None:
    """Raise :class:`DataError` for a file that cannot be read or is empty."""
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: file is empty")
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror}") from None


def _read_jsonl(path: Path) -> Iterator[Item]:
    """Canonical long format, one JSON object per line. Blank lines are skipped.

    Each line is decoded once; the lossy copy kept as a rejected row's content is made only for
    a line that is rejected.
    """
    name = str(path)
    decode = json.JSONDecoder().decode
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.isspace():
                continue
            try:
                fields = decode(line.decode("utf-8"))
            except UnicodeDecodeError as error:
                yield RowError.by(rules.LINE_NOT_UTF8, name, number, "line", _lossy(line), error=error)
                continue
            except json.JSONDecodeError as error:
                truncated = not line.endswith(b"\n") and _is_last(handle)
                rule = rules.TRUNCATED_JSON if truncated else rules.MALFORMED_JSON
                yield RowError.by(rule, name, number, "line", _lossy(line), error=error.msg)
                continue
            if type(fields) is not dict:
                yield RowError.by(rules.NOT_AN_OBJECT, name, number, "line", _lossy(line))
                continue
            yield ParsedRow(name, number, "line", fields)


def _lossy(line: bytes) -> str:
    """A rejected line as text for ``rejected.jsonl``: undecodable bytes become U+FFFD."""
    return line.decode("utf-8", errors="replace").rstrip("\r\n")


def _is_last(handle: Any) -> bool:
    """Whether the binary handle is at end of file (used only after a line without newline)."""
    return handle.peek(1) == b"" if hasattr(handle, "peek") else True


def _read_csv(path: Path) -> Iterator[Item]:
    """CSV: the RouterBench wide format when a ``X|total_cost`` column exists, else long format."""
    name = str(path)
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines)
        header, wide_models = _csv_layout(path, reader, lines)
        if wide_models:
            rows = _wide_rows(name, header, wide_models, _csv_records(name, reader, lines))
        else:
            rows = _long_rows(name, header, _csv_records(name, reader, lines))
        yield from rows


def csv_layout(path: Path) -> tuple[list[str], list[str]]:
    """The header of a CSV log and its RouterBench models (empty for the long format).

    Raises :class:`DataError` for an empty file, a header that is not CSV, or missing columns.
    """
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        lines = _Lines(handle)
        return _csv_layout(path, csv.reader(lines), lines)


def first_unterminated_quote(path: Path) -> int | None:
    """The data row of a CSV log's first record with an unterminated quote (None: it has none).

    The columnar reader asks, for a block whose values hold line breaks: pyarrow reads such a
    record as leniently as :mod:`csv` does, so only the per-row reader's rule can tell.
    """
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines)
        _csv_layout(path, reader, lines)
        for row, record in _csv_records(str(path), reader, lines):
            if isinstance(record, RowError) and record.rule is rules.UNTERMINATED_QUOTE:
                return row
    return None


def _csv_layout(path: Path, reader: Any, lines: _Lines) -> tuple[list[str], list[str]]:
    csv.field_size_limit(sys.maxsize)
    try:
        header: list[str] = next(reader)
    except StopIteration:
        raise DataError(f"{path}: file is empty") from None
    except csv.Error as error:
        raise DataError(f"{path}: not a CSV file: {error}") from None
    quote_error = _quote_error(lines.record)
    if quote_error:
        raise DataError(f'{path}: line 1: the header has an unterminated quote ("): {quote_error}')
    return header, _layout(path, header)


class _Lines:
    """The lines of a CSV file as :func:`csv.reader` reads them, with the lines of the record read last.

    Why: a quote that is never closed makes the lenient :mod:`csv` reader take every line up to
    the next quote (or the end) as one field; to reject only the line that opened it, the reader
    must know the lines a record took and read the later ones again (:func:`_quote_error`).
    """

    __slots__ = ("_again", "_handle", "before", "record")

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self._again: list[str] = []  # lines to read again, the next one last
        self.before = 0  # how many lines of the file come before the record being read
        self.record: list[str] = []  # the lines of the record being read

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._again.pop() if self._again else next(self._handle)
        self.record.append(line)
        return line

    def next_record(self) -> None:
        """Start a record after the last one."""
        self.before += len(self.record)
        self.record = []

    def reject_first_line(self) -> tuple[int, str]:
        """Give back every line of the record but its first, to be read again; that line's number and text."""
        first, *later = self.record
        self._again.extend(reversed(later))
        self.record = [first]
        return self.before + 1, first


def _quote_error(lines: list[str]) -> str | None:
    """Why a record read over several lines is not valid CSV (None when it is, or takes one line).

    A record takes several lines only inside a quoted field. Valid, such a field is closed by a
    quote followed by a comma or the line's end (RFC 4180), which :mod:`csv`'s strict mode
    checks; an unterminated quote instead runs on to a quote that opens a later field, or to the
    end of the file. A record of one line is left to the lenient reader, as it always was.
    """
    if len(lines) < 2:
        return None
    try:
        for _ in csv.reader(lines, strict=True):
            pass
    except csv.Error as error:
        return str(error)
    return None


def _layout(path: Path, header: list[str]) -> list[str]:
    """The RouterBench models of a header (empty for the long format); its required columns checked."""
    wide_models = [c for c in header if c + ROUTERBENCH_COST_SUFFIX in header]
    if wide_models:
        for required in ("sample_id", "prompt"):
            if required not in header:
                raise DataError(f"{path}: RouterBench wide file lacks the {required!r} column")
    else:
        require_columns(path, header)
    return wide_models


def _csv_records(name: str, reader: Any, lines: _Lines) -> Iterator[tuple[int, list[str] | RowError]]:
    """Data records of a CSV with their 1-based row number; undecodable rows become errors.

    A record over several lines that is not valid CSV (:func:`_quote_error`) is the line that
    opened its quote: that line is one rejected row, and the lines after it are read again.
    """
    row = 0
    while True:
        row += 1
        lines.next_record()
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield row, RowError.by(rules.MALFORMED_CSV, name, row, "row", "", error=error)
            continue
        if not record:
            row -= 1
            continue
        quote_error = _quote_error(lines.record)
        if quote_error:
            number, text = lines.reject_first_line()
            raw = _lossy_text(text.rstrip("\r\n"))
            yield row, RowError.by(rules.UNTERMINATED_QUOTE, name, row, "row", raw, line=number, error=quote_error)
            continue
        if any(_has_surrogates(value) for value in record):
            raw = ",".join(_lossy_text(value) for value in record)
            yield row, RowError.by(rules.FIELD_NOT_UTF8, name, row, "row", raw)
            continue
        yield row, record


def _lossy_text(value: str) -> str:
    """CSV text as read with ``surrogateescape``, its bytes that are not UTF-8 as U+FFFD (a rejected row's content)."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _has_surrogates(value: str) -> bool:
    """True when ``surrogateescape`` decoding met bytes that are not UTF-8."""
    return any("\udc80" <= ch <= "\udcff" for ch in value) if not value.isascii() else False


def require_columns(path: Path, header: list[str]) -> None:
    """Raise :class:`DataError` when the header of a long-format file lacks a required column."""
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: missing required column(s) {', '.join(missing)} in the header")


def _long_rows(name: str, header: list[str], records: Iterator[tuple[int, list[str] | RowError]]) -> Iterator[Item]:
    """Canonical long-format CSV rows; empty cells are absent values."""
    width = len(header)
    for row, record in records:
        if isinstance(record, RowError):
            yield record
            continue
        if len(record) != width:
            yield RowError.by(rules.FIELD_COUNT, name, row, "row", ",".join(record), fields=len(record), width=width)
            continue
        yield ParsedRow(name, row, "row", {k: (v if v != "" else None) for k, v in zip(header, record)})


def _wide_rows(
    name: str,
    header: list[str],
    models: list[str],
    records: Iterator[tuple[int, list[str] | RowError]],
) -> Iterator[Item]:
    """RouterBench wide rows → one outcome per model (docs/contracts.md §1, RouterBench wide format).

    ``sample_id`` is the query id, ``prompt`` the text (a Python-list string is parsed with
    :func:`ast.literal_eval`, which evaluates literals only, and its elements joined by newlines).
    ``eval_name`` (the benchmark a record comes from) is its ``task``. Every other column that is
    not a model, its cost or its response is metadata and is dropped here.
    """
    column = {c: i for i, c in enumerate(header)}
    task = column.get(ROUTERBENCH_TASK_COLUMN)
    for row, record in records:
        if isinstance(record, RowError):
            for _ in models:
                yield record
            continue
        if len(record) != len(header):
            error = RowError.by(
                rules.FIELD_COUNT, name, row, "row", ",".join(record), fields=len(record), width=len(header)
            )
            for _ in models:
                yield error
            continue
        query = parse_prompt(record[column["prompt"]])
        query_id = record[column["sample_id"]]
        for model in models:
            score = record[column[model]]
            cost = record[column[model + ROUTERBENCH_COST_SUFFIX]]
            fields: dict[str, Any] = {
                "query_id": query_id or None,
                "query": query,
                "model": model,
                "quality": score if score != "" else None,
                "cost": cost if cost != "" else None,
            }
            if task is not None:
                fields["task"] = record[task] or None
            if model + ROUTERBENCH_RESPONSE_SUFFIX in column:
                fields["response"] = record[column[model + ROUTERBENCH_RESPONSE_SUFFIX]]
            yield ParsedRow(name, row, "row", fields)


def parse_prompt(prompt: str) -> str:
    """RouterBench prompts may be a Python-list string ``"['...']"``: join its strings by newlines."""
    stripped = prompt.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return prompt
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return "\n".join(value)
    return prompt


def _read_parquet(path: Path) -> Iterator[Item]:
    """Canonical long format in Parquet, streamed by record batch (pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    name = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a Parquet file: {error}") from None
    require_columns(path, parquet.schema_arrow.names)
    row = 0
    for batch in parquet.iter_batches(batch_size=65536):
        for fields in batch.to_pylist():
            row += 1
            yield ParsedRow(name, row, "row", fields)


def _read_pickle(path: Path) -> Iterator[Item]:
    """A RouterBench pandas pickle (a DataFrame in wide format). Only behind ``--allow-pickle``."""
    try:
        with open(path, "rb") as handle:
            frame = pickle.load(handle)
    except Exception as error:
        raise DataError(f"{path}: cannot unpickle: {error}") from None
    if not hasattr(frame, "columns") or not hasattr(frame, "itertuples"):
        raise DataError(f"{path}: the pickle does not hold a pandas DataFrame")
    header = [str(c) for c in frame.columns]
    records = (
        (i, ["" if _is_blank(v) else str(v) for v in values])
        for i, values in enumerate(frame.itertuples(index=False, name=None), start=1)
    )
    models = _layout(path, header)
    if models:
        yield from _wide_rows(str(path), header, models, records)
    else:
        yield from _long_rows(str(path), header, records)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
