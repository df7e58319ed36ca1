"""Columnar fast path of loading: pyarrow reads a file by blocks, numpy checks whole columns.

Why: the per-row path (:mod:`data.reading` → :mod:`data.validation` → :mod:`data.log_builder`)
costs ~25 µs of Python per outcome row, minutes for 1M queries × 11 models. Here a block of a
file (a few MB of JSONL, a CSV block, a Parquet batch) becomes one :class:`Block` of typed
columns, and :meth:`data.log_builder.LogBuilder.add_block` applies the cross-row rules to all of
its rows at once.

There is still one definition of validity: this module only recognises blocks in which **every
row is valid** by :func:`data.validation.validate`, checking the rules of :mod:`data.rules` on
whole columns (the same :class:`data.rules.ValueRule` predicates, blank-text rule and
:class:`data.rules.Limits`), and deliberately conservatively. Anything else — a bad value, an
unusual type (an integer ``query_id`` or JSON ``task``, a boolean quality, a cost to compute from
tokens, an embedding, numeric text under ``--strict``, a blank task), a line pyarrow cannot parse, a CSV record with an
unterminated quote, a block that breaks a cross-row rule — is handed back as a
:class:`Fallback` span of positions, which :func:`data.loading.load_log` reads with the per-row
path. Rejections, their reasons, details, positions and contents therefore all come from the
per-row path, and the accepted log is the same whichever path read a row
(``tests/test_data_columnar.py`` proves it on every rejection reason and on RouterBench).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.decision_log import is_decision_log
from data.log_builder import NO_TIME, OPTIONAL_COLUMNS
from data.reading import check_file, csv_layout, first_unterminated_quote, parse_prompt, require_columns
from data.rules import DEFAULT_LIMITS, VALUE_RULES, Invalid, Limits, all_non_blank, within_max_cost
from data.schema import ROUTERBENCH_COST_SUFFIX, ROUTERBENCH_TASK_COLUMN
from data.validation import milliseconds, parse_timestamp

#: Bytes of a JSONL or CSV file read per block: bounds the memory of one block.
CHUNK_BYTES = 32 << 20
#: Numeric columns that validation reads.
_NUMBERS = tuple(rule.field for rule in VALUE_RULES)
#: The fields of a JSONL line that validation reads, as pyarrow must type them; others are ignored.
_JSON_SCHEMA = pa.schema(
    [("query_id", pa.string()), ("query", pa.string()), ("model", pa.string()), ("timestamp", pa.string())]
    + [("task", pa.string())]  # a number or other type fails the block: the per-row path checks it
    + [(name, pa.float64()) for name in _NUMBERS]
    + [("embedding", pa.null())]  # a non-null embedding fails the block: the per-row path checks it
)
#: Parsed numeric fields: field → (values as float64, which rows have a value).
Numbers = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Block:
    """Rows of one file that are all valid, as columns (R rows, M records: a wide record has K rows).

    Cross-row rules (duplicates, conflicting text, log kind) are not checked yet: the builder does.
    """

    file: str
    locator: str  # "line" or "row"
    positions: np.ndarray  # (R,) int64: line or row number of every outcome row
    record_ids: Any  # pyarrow string array (M,): query_id of every record
    record_texts: Any  # pyarrow string array (M,): query text of every record
    record_of_row: np.ndarray | None  # (R,) int64: the record of every row; None when R == M
    models: list[str]  # the block's models, in order of first appearance
    model_of_row: np.ndarray  # (R,) int64: index into ``models``
    quality: np.ndarray  # (R,) float64
    cost: np.ndarray  # (R,) float64
    optional: dict[str, np.ndarray]  # OPTIONAL_COLUMNS with a value in the block: (R,) float64, NaN = absent
    timestamps: np.ndarray | None  # (R,) int64 ms since the epoch, NO_TIME = absent; None: none at all
    bandit: bool  # every row has a propensity
    record_tasks: Any = None  # pyarrow string array (M,): every record's task, null where absent; None: no task

    @property
    def rows(self) -> int:
        """Number of outcome rows R."""
        return len(self.positions)

    def fallback(self) -> Fallback:
        """The block's rows as a span for the per-row path (a block the caller cannot take)."""
        return Fallback(int(self.positions[0]), int(self.positions[-1]))


@dataclass(frozen=True)
class Fallback:
    """Positions ``first`` .. ``last`` (inclusive; ``None``: to the end of the file) need the per-row path."""

    first: int
    last: int | None


Part = Block | Fallback


def read_blocks(path: Path, chunk_bytes: int = CHUNK_BYTES, limits: Limits = DEFAULT_LIMITS) -> Iterator[Part]:
    """The blocks of one log file, in file order; a pickle is left to the per-row path whole.

    ``limits``: those of the file (:meth:`data.rules.Limits.of`); a block with a cost above
    ``limits.max_cost`` goes to the per-row path. Raises the per-row path's
    :class:`data.schema.DataError` for file-level problems.
    """
    check_file(path)
    for part in _parts(path, chunk_bytes, limits.text_numbers):
        if isinstance(part, Block) and not within_max_cost(part.cost, limits.max_cost).all():
            part = part.fallback()
        yield part


def _parts(path: Path, chunk_bytes: int, text_numbers: bool) -> Iterator[Part]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":  # pyarrow types a JSON number written as text as text: its block falls back
        yield from _jsonl_blocks(path, chunk_bytes)
    elif suffix == ".csv":
        yield from _csv_blocks(path, chunk_bytes)
    elif suffix == ".parquet":
        yield from _parquet_blocks(path, max(chunk_bytes // 512, 1), text_numbers)
    else:
        yield Fallback(1, None)


# --------------------------------------------------------------------------- readers


def _jsonl_blocks(path: Path, chunk_bytes: int) -> Iterator[Part]:
    """Whole lines, ``chunk_bytes`` at a time; a decision log goes to the per-row path whole."""
    if is_decision_log(path):
        yield Fallback(1, None)  # a decision log (data.decision_log) is joined row by row
        return
    name = str(path)
    with open(path, "rb") as handle:
        line, tail = 1, b""
        while True:
            data = handle.read(chunk_bytes)
            if not data and not tail:
                return
            buffer = tail + data
            cut = buffer.rfind(b"\n") + 1 if data else len(buffer)
            if cut == 0:  # a line longer than the chunk: read on
                tail = buffer
                continue
            piece, tail = buffer[:cut], buffer[cut:]
            lines = piece.count(b"\n") + (not piece.endswith(b"\n"))
            yield _jsonl_block(name, piece, line, lines) or Fallback(line, line + lines - 1)
            line += lines


def _jsonl_block(name: str, piece: bytes, line: int, lines: int) -> Block | None:
    """A block of whole JSONL lines, or None when a line is not a plain valid JSON object."""
    if not _is_utf8(piece) or not _one_object_per_line(piece):
        return None
    import pyarrow.json as pj

    options = pj.ParseOptions(explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="ignore")
    try:
        table = pj.read_json(pa.BufferReader(piece), parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != lines:
        return None
    columns = {field: table.column(field).combine_chunks() for field in table.column_names}
    return _long_block(name, "line", np.arange(line, line + lines, dtype=np.int64), columns)


def _is_utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8 (pyarrow's vectorised check; pyarrow.json does not check)."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    try:
        pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)]).cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


def _one_object_per_line(piece: bytes) -> bool:
    """Every line starts with ``{`` and ends with ``}`` (no blank line, no leading space): then
    pyarrow's rows are the file's lines one to one, which the row count confirms."""
    data = np.frombuffer(piece, dtype=np.uint8)
    newlines = np.flatnonzero(data == ord("\n"))
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [len(data)]]) - 1
    if starts[-1] == len(data):  # the piece ends with a newline: no last partial line
        starts, ends = starts[:-1], ends[:-1]
    if not len(starts) or (ends < starts).any():
        return False
    ends = ends - (data[ends] == ord("\r"))  # a CRLF line ends before the \r
    return bool((data[starts] == ord("{")).all() and (ends >= starts).all() and (data[ends] == ord("}")).all())


def _csv_blocks(path: Path, chunk_bytes: int) -> Iterator[Part]:
    """CSV in pyarrow blocks, every column as text (as the csv module gives it).

    A block whose values hold a line break (a record over several lines) is taken only before
    the file's first record with an unterminated quote, which the per-row reader finds: pyarrow
    reads that record as leniently as :mod:`csv` does, swallowing the lines after it.
    """
    import pyarrow.csv as pv

    header, wide_models = csv_layout(path)
    if "policy_version" in header or len(set(header)) != len(header):
        yield Fallback(1, None)  # a decision log, or repeated column names: the per-row path decides
        return
    name, row = str(path), 0
    try:
        reader = pv.open_csv(
            path,
            read_options=pv.ReadOptions(block_size=chunk_bytes),
            parse_options=pv.ParseOptions(newlines_in_values=True),
            convert_options=pv.ConvertOptions(
                column_types={column: pa.string() for column in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        if reader.schema.names != header:
            yield Fallback(1, None)
            return
        looked, torn = False, None  # the data row of the first unterminated quote, once looked for
        for batch in reader:
            if not looked and _has_line_breaks(batch):
                looked, torn = True, first_unterminated_quote(path)
            if torn is not None and torn <= row + batch.num_rows:
                yield Fallback(row + 1, None)
                return
            positions = np.arange(row + 1, row + 1 + batch.num_rows, dtype=np.int64)
            columns = {column: _blank_is_null(batch.column(column)) for column in header}
            block = (
                _wide_block(name, positions, columns, wide_models)
                if wide_models
                else _long_block(name, "row", positions, columns)
            )
            yield block or Fallback(row + 1, row + batch.num_rows)
            row += batch.num_rows
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a record pyarrow cannot parse (or not UTF-8)
        yield Fallback(row + 1, None)


def _has_line_breaks(batch: Any) -> bool:
    """Whether a value of a batch of text columns may hold a line break (CR or LF).

    Searches each column's character buffer at once (``bytes`` search is memchr, some 30× faster
    than a pyarrow kernel over the values); a buffer may hold bytes of values outside the batch,
    which can only make the answer a cautious True.
    """
    for column in batch.columns:
        characters = column.buffers()[2]
        if characters is not None:
            text = characters.to_pybytes()
            if b"\n" in text or b"\r" in text:
                return True
    return False


def _blank_is_null(column: Any) -> Any:
    """A CSV column with empty cells as nulls (the per-row reader reads an empty cell as absent)."""
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)


def _parquet_blocks(path: Path, rows: int, text_numbers: bool) -> Iterator[Part]:
    """Parquet record batches of ``rows`` rows; a file with a numeric field of text goes per row
    unless ``text_numbers`` (under ``--strict`` its every value is rejected)."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception:  # a corrupt file: the per-row path raises its DataError
        yield Fallback(1, None)
        return
    schema = parquet.schema_arrow
    require_columns(path, schema.names)
    if not text_numbers and any(_is_text_type(schema.field(name).type) for name in _NUMBERS if name in schema.names):
        yield Fallback(1, None)
        return
    name, row = str(path), 0
    try:
        for batch in parquet.iter_batches(batch_size=rows):
            positions = np.arange(row + 1, row + 1 + batch.num_rows, dtype=np.int64)
            columns = {column: batch.column(column) for column in batch.schema.names}
            yield _long_block(name, "row", positions, columns) or Fallback(row + 1, row + batch.num_rows)
            row += batch.num_rows
    except (pa.ArrowInvalid, OSError):
        yield Fallback(row + 1, None)


# --------------------------------------------------------------------------- blocks


def _long_block(name: str, locator: str, positions: np.ndarray, columns: dict[str, Any]) -> Block | None:
    """A block of canonical long-format rows, or None unless every row is valid."""
    ids, texts, model = (_text(columns.get(column)) for column in ("query_id", "query", "model"))
    if ids is None or texts is None or model is None or not all_non_blank(texts):
        return None
    encoded = pc.dictionary_encode(model)
    models = encoded.dictionary.to_pylist()
    if not all_non_blank(encoded.dictionary) or not all_non_blank(pc.unique(ids)):
        return None
    numbers = _numbers(columns)
    tasks = _tasks(columns.get("task"))
    if numbers is None or tasks is False:
        return None
    model_of_row = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    return _block(name, locator, positions, ids, texts, None, models, model_of_row, numbers, columns, tasks)


def _wide_block(name: str, positions: np.ndarray, columns: dict[str, Any], wide_models: list[str]) -> Block | None:
    """A block of RouterBench wide records: K outcome rows per record, record by record."""
    ids, prompts = _text(columns["sample_id"]), _text(columns["prompt"])
    if ids is None or prompts is None or not all_non_blank(pc.unique(ids)):
        return None
    texts = _parse_prompts(prompts)
    if not all_non_blank(texts) or not all_non_blank(pa.array(wide_models)):
        return None
    k, m = len(wide_models), len(positions)
    numbers: Numbers = {}
    for field, suffix in (("quality", ""), ("cost", ROUTERBENCH_COST_SUFFIX)):
        parsed = [_floats(columns[model + suffix]) for model in wide_models]
        if any(value is None for value in parsed):
            return None
        numbers[field] = (
            np.stack([value[0] for value in parsed if value is not None], axis=1).ravel(),
            np.stack([value[1] for value in parsed if value is not None], axis=1).ravel(),
        )
    checked = _check_numbers(numbers)
    tasks = _tasks(columns.get(ROUTERBENCH_TASK_COLUMN))
    if checked is None or tasks is False:
        return None
    model_of_row = np.tile(np.arange(k, dtype=np.int64), m)
    return _block(
        name, "row", np.repeat(positions, k), ids, texts, np.repeat(np.arange(m), k), wide_models, model_of_row,
        checked, {}, tasks,
    )  # fmt: skip


def _block(
    name: str,
    locator: str,
    positions: np.ndarray,
    ids: Any,
    texts: Any,
    record_of_row: np.ndarray | None,
    models: list[str],
    model_of_row: np.ndarray,
    numbers: Numbers,
    columns: dict[str, Any],
    tasks: Any = None,
) -> Block | None:
    """Assemble a :class:`Block` once the values are known valid; timestamps and kind checked here."""
    timestamps = _timestamps(columns.get("timestamp"), len(positions))
    if timestamps is False:
        return None
    propensity_known = numbers["propensity"][1] if "propensity" in numbers else None
    bandit = propensity_known is not None and bool(propensity_known.all())
    if propensity_known is not None and not bandit and propensity_known.any():
        return None  # a block mixing kinds: the per-row path raises the error at the right row
    optional = {
        field: np.where(numbers[field][1], numbers[field][0], np.nan)
        for field in OPTIONAL_COLUMNS
        if field in numbers and numbers[field][1].any()
    }
    return Block(
        file=name,
        locator=locator,
        positions=positions,
        record_ids=ids,
        record_texts=texts,
        record_of_row=record_of_row,
        models=models,
        model_of_row=model_of_row,
        quality=numbers["quality"][0],
        cost=numbers["cost"][0],
        optional=optional,
        timestamps=timestamps if isinstance(timestamps, np.ndarray) else None,
        bandit=bandit,
        record_tasks=tasks,
    )


def _text(column: Any) -> Any:
    """A string column without nulls (as large_string), or None: a missing or non-string field fails."""
    if column is None or column.null_count or not _is_text(column):
        return None
    return column.cast(pa.large_string())


def _tasks(column: Any) -> Any:
    """The records' tasks as a large_string column (nulls where absent), None without any, False if one is invalid.

    Valid as :func:`data.validation.validate` reads a task: a non-blank string, or an integer
    (Parquet) as its decimal string; any other type, or blank text, leaves the block to the
    per-row path, which rejects the row (:data:`data.rules.TASK_BLANK`, :data:`data.rules.TASK_TYPE`).
    """
    if column is None or column.null_count == len(column):
        return None
    if pa.types.is_integer(column.type):
        return column.cast(pa.large_string())
    if not _is_text(column) or not all_non_blank(column.drop_null()):
        return False
    return column.cast(pa.large_string())


def _is_text(column: Any) -> bool:
    return _is_text_type(column.type)


def _is_text_type(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _parse_prompts(prompts: Any) -> Any:
    """RouterBench prompts with their Python-list strings joined (:func:`data.reading.parse_prompt`).

    Only a prompt containing ``[`` can be such a list; those few are parsed in Python.
    """
    candidate = pc.match_substring(prompts, "[")
    if not pc.any(candidate).as_py():
        return prompts
    parsed = [parse_prompt(text) for text in prompts.filter(candidate).to_pylist()]
    return pc.replace_with_mask(prompts, candidate, pa.array(parsed, type=pa.large_string()))


def _floats(column: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(values as float64, which rows have a value) of a numeric or numeric-text column, or None.

    Text is parsed by pyarrow, which accepts only plain decimal numbers (every one of which
    Python's ``float`` reads to the same double) and fails on anything else: such a block falls
    back. Booleans fall back too (validation reads them as 0/1).
    """
    kind = column.type
    if pa.types.is_null(kind):
        return np.zeros(len(column)), np.zeros(len(column), dtype=bool)
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_string(kind)):
        return None
    try:
        values = column.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    known = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    floats = np.asarray(values.fill_null(0.0).to_numpy(zero_copy_only=False), dtype=np.float64)
    if np.signbit(floats[floats == 0.0]).any():
        return None  # -0.0: JSON's integer -0 is +0.0 for Python's json, -0.0 for pyarrow
    return floats, known


def _numbers(columns: dict[str, Any]) -> Numbers | None:
    """Parse and check the numeric fields of long-format rows (None: some row is not valid)."""
    numbers: Numbers = {}
    for field in _NUMBERS:
        if field in columns:
            parsed = _floats(columns[field])
            if parsed is None:
                return None
            numbers[field] = parsed
    embedding = columns.get("embedding")
    if embedding is not None and embedding.null_count < len(embedding):
        return None  # embeddings are checked row by row (and against each other)
    if "quality" not in numbers or "cost" not in numbers:
        return None
    return _check_numbers(numbers)


def _check_numbers(numbers: Numbers) -> Numbers | None:
    """:data:`data.rules.VALUE_RULES` on whole columns: ``numbers`` when every row is valid, else None.

    Every row needs a quality and a cost (a missing cost is priced from the tokens per row).
    """
    if not (numbers["quality"][1].all() and numbers["cost"][1].all()):
        return None
    for rule in VALUE_RULES:
        if rule.field in numbers:
            values, known = numbers[rule.field]
            if not rule.accepts_all(values[known]):
                return None
    return numbers


def _timestamps(column: Any, rows: int) -> np.ndarray | bool | None:
    """(R,) int64 milliseconds (NO_TIME where absent), None without any, False if one is not ISO 8601.

    Each distinct text is parsed once, by validation's own parser.
    """
    if column is None or column.null_count == len(column):
        return None
    if not _is_text(column):
        return False
    encoded = pc.dictionary_encode(column)
    try:
        stamps = [milliseconds(parse_timestamp(text)) for text in encoded.dictionary.to_pylist()]
    except Invalid:
        return False
    index = encoded.indices
    table = np.asarray([*stamps, NO_TIME], dtype=np.int64)
    codes = np.asarray(index.fill_null(len(stamps)).to_numpy(zero_copy_only=False), dtype=np.int64)
    return table[codes] if len(codes) == rows else False
