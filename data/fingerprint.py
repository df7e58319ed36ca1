"""The data fingerprint of docs/contracts.md §1.10: sha256 of the accepted outcomes in canonical form.

Canonical form: one JSON line per accepted outcome, sorted by (query_id, model), each the array
``[query_id, query, model, quality, cost]``; floats are written as Python's ``repr`` (what
:func:`json.dumps` does), text as UTF-8 without ASCII escaping, no spaces.

Covered, exactly: each accepted outcome's ``query_id``, ``query`` (the query's text, the same on
all its accepted rows), ``model``, ``quality`` and ``cost`` — the cost as accepted, so for a row
priced from ``prompt_tokens``/``completion_tokens`` the price table's result, not the token
counts. A bandit-feedback log has one line per query, its logged outcome.

Not covered, although accepted: ``propensity``, ``latency_ms``, ``energy_wh``, ``embedding``, ``timestamp``,
``expected_quality``, the token counts themselves, and every other column; nor row order, file
format or the split. Two logs that differ only there share a fingerprint (for example, other
timestamps give another ``--split time``, other latencies another ``reward.latency_weight``
reward). Covering them would change the fingerprint of every existing log and of the policies
and reports that record it, so the definition stays as it is.

The definition is the per-line Python of :func:`canonical_lines`'s docstring; this module builds
the same bytes with whole-column pyarrow/numpy operations (:func:`float_reprs` is ``repr`` for a
float64 array), so that 1M queries × 11 models take seconds rather than half a minute.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.routing_log import RoutingLog

#: Queries handled per step: bounds the memory of the columns built at once.
_CHUNK = 32768
#: Characters (or UTF-8 bytes) of query text per step at most: far below pyarrow's 2 GiB strings.
_TEXT_SIZE = 1 << 27
#: Bytes of canonical lines joined and hashed at once (the lines of a step are cut to this size).
_LINE_BYTES = 1 << 22
#: Values whose repeats decide whether a column is formatted once per distinct value.
_DEDUPLICATION_PROBE = 16384
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode  # one encoder; json.dumps builds one per call

# The float64 nearest to 10**k for k = -323 .. 308. The shortest repr of a finite v > 0 has the
# decimal exponent k (v = d1.d2...dn × 10**k) exactly when float(10**k) <= v < float(10**(k+1)),
# as parsing decimals is monotonic and the repr parses back to v; below 1e-323 the exponent is -324.
_EXP_MIN = -324
_POW10 = np.array([float(f"1e{k}") for k in range(_EXP_MIN + 1, 309)])
_INT_POW10 = 10 ** np.arange(19, dtype=np.int64)
# repr's fixed notation is used for exponents -4 <= k < 16, scientific notation otherwise.
_FIXED_LOW, _FIXED_HIGH = 1e-4, 1e16
_DOTS = pa.array(["", ".", ".0", ".00", ".000"])  # after the integer part: "." + (-k - 1) zeros when k < 0
_SIGNS = pa.array(["", "-"])
_TAILS: dict[str, pa.Array] = {}


#: Query ids or texts: Python strings or a pyarrow string array.
Strings: TypeAlias = Sequence[str] | pa.Array | pa.ChunkedArray
#: A (queries × models) table of floats.
Cells: TypeAlias = np.ndarray | Sequence[Sequence[float]]


class _Digest(Protocol):
    def update(self, data: Any, /) -> None: ...


def fingerprint(log: RoutingLog) -> str:
    """Hex sha256 of the canonical form of ``log``'s accepted outcomes.

    Streams the canonical lines :data:`_CHUNK` queries at a time, so that memory stays small for
    millions of rows.
    """
    digest = hashlib.sha256()
    model_order = sorted(range(log.n_models), key=lambda k: log.models[k])
    names = [log.models[k] for k in model_order]
    ids = _strings([str(query_id) for query_id in log.query_ids])
    rows = pc.sort_indices(ids).to_numpy()  # stable, by UTF-8 bytes = by code points = Python's str order
    characters = np.fromiter(map(len, log.queries), dtype=np.int64, count=log.n_queries)[rows]
    for start, stop in _steps(characters):
        block = rows[start:stop]
        _hash_lines(
            digest.update,
            ids.take(block),
            _strings([log.queries[row] for row in block.tolist()]),
            names,
            log.quality[block][:, model_order],
            log.cost[block][:, model_order],
        )
    return digest.hexdigest()


def update_digest(
    digest: _Digest, query_ids: Strings, queries: Strings, models: Sequence[str], quality: Cells, cost: Cells
) -> None:
    """``digest.update`` with the canonical lines of these queries, the bytes of
    ``canonical_lines(...).encode("utf-8")`` without building them all at once.

    Same arguments as :func:`canonical_lines`; ``query_ids`` and ``queries`` may also be pyarrow
    string arrays, ``quality`` and ``cost`` (queries × models) float64 arrays.
    """
    if len(query_ids) != len(queries):
        raise ValueError(f"{len(query_ids)} query ids but {len(queries)} queries")
    quality_matrix = _matrix(quality, len(query_ids), len(models))
    cost_matrix = _matrix(cost, len(query_ids), len(models))
    if isinstance(queries, (pa.Array, pa.ChunkedArray)):
        sizes = np.asarray(pc.binary_length(queries).to_numpy(zero_copy_only=False), dtype=np.int64)
    else:
        sizes = np.fromiter(map(len, queries), dtype=np.int64, count=len(queries))
    for start, stop in _steps(sizes):
        _hash_lines(
            digest.update,
            _strings(query_ids[start:stop]),
            _strings(queries[start:stop]),
            list(models),
            quality_matrix[start:stop],
            cost_matrix[start:stop],
        )


def _steps(text_sizes: np.ndarray) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive steps: at most :data:`_CHUNK` queries and :data:`_TEXT_SIZE`
    characters (or bytes) of text, unless a single query has more. A step's strings stay well
    below the 2 GiB of pyarrow's 32-bit string offsets (a character is at most 4 UTF-8 bytes)."""
    ends = np.concatenate([[0], np.cumsum(text_sizes)])
    start = 0
    while start < len(text_sizes):
        stop = min(start + _CHUNK, len(text_sizes))
        if ends[stop] - ends[start] > _TEXT_SIZE:
            stop = max(start + 1, int(np.searchsorted(ends, ends[start] + _TEXT_SIZE, side="right")) - 1)
        yield start, stop
        start = stop


def canonical_lines(query_ids: Strings, queries: Strings, models: Sequence[str], quality: Cells, cost: Cells) -> str:
    """The canonical lines of consecutive queries (already in ``query_id`` order; ``models`` sorted).

    ``quality`` and ``cost`` are (queries × models) in the order of ``models``, as float64; NaN
    quality cells (the unknown outcomes of a bandit-feedback log) have no line. Hash them in
    order, chunk after chunk, to get :func:`fingerprint` (:func:`update_digest` does that without
    the string). The definition, which this function reproduces byte for byte::

        enc = json.JSONEncoder(ensure_ascii=False).encode
        for query_id, text, qualities, costs in zip(query_ids, queries, quality, cost):
            for name, q, c in zip(models, qualities, costs):
                if q == q:
                    line = f"[{enc(query_id)},{enc(text)},{enc(name)},{q!r},{c!r}]\\n"
    """
    parts: list[bytes] = []
    update_digest(_Collect(parts), query_ids, queries, models, quality, cost)
    return b"".join(parts).decode("utf-8")


class _Collect:
    """A digest stand-in that keeps the bytes."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    def update(self, data: Any, /) -> None:
        self.parts.append(bytes(data))


def float_reprs(values: np.ndarray | Sequence[float], suffix: str = "") -> pa.Array:
    """``repr(float(v)) + suffix`` for each ``v`` of a float array, as a pyarrow string array.

    pyarrow's cast to string gives the shortest round-trip digits, as ``repr`` does, in another
    notation (``1`` for ``1.0``, ``0.00001`` for ``1e-05``, ``1e-7`` for ``1e-07``,
    ``1.5e+14`` for ``150000000000000.0``), rewritten here with whole-array kernels:

    * ``repr``'s fixed notation (decimal exponent -4 .. 15) where pyarrow wrote no ``e``: the
      text as it is, with ``.0`` after integers (most qualities and costs);
    * ``repr``'s scientific notation where pyarrow wrote one too: pyarrow's mantissa and
      ``repr``'s exponent (``e-07``: a sign and at least two digits);
    * scientific where pyarrow wrote ``0.0000ddd``: the digits with a dot after the first;
    * fixed notation where pyarrow wrote an exponent (``1e+15`` for ``1000000000000000.0``):
      rebuilt from the significant digits as an integer (:func:`_notation`);
    * anything else (not seen with pyarrow 26): ``repr``.

    The decimal exponent comes from the value (:data:`_POW10`), not from the text; ``nan`` and
    ``inf`` are written as ``repr`` writes them. Should pyarrow's text differ from what this
    expects (another pyarrow version: :func:`_vectorised_reprs_agree`), every value is written
    with ``repr`` instead, slowly but right.
    """
    value = np.ascontiguousarray(values, dtype=np.float64).ravel()
    if not _vectorised_reprs_agree():
        return pa.array([repr(v) + suffix for v in value.tolist()], pa.string())
    return _float_reprs(value, suffix)


def _float_reprs(value: np.ndarray, suffix: str) -> pa.Array:
    """:func:`float_reprs` of a 1-D float64 array, vectorised."""
    magnitude = np.abs(value)
    text = pc.cast(pa.array(magnitude), pa.string())
    finite = np.isfinite(magnitude)
    fixed = ((magnitude >= _FIXED_LOW) & (magnitude < _FIXED_HIGH)) | (magnitude == 0.0)
    has_e = pc.match_substring(text, "e").to_numpy(zero_copy_only=False)
    kept = fixed & ~has_e  # repr's text already, less the ".0" of integers
    tail = np.where(kept & pc.ascii_is_decimal(text).to_numpy(zero_copy_only=False), 1, 0)
    body = text
    rewrite = np.flatnonzero(finite & ~kept)
    if len(rewrite):
        exponent = np.searchsorted(_POW10, magnitude[rewrite], side="right") + _EXP_MIN
        scientific = (exponent < -4) | (exponent >= 16)
        tail[rewrite[scientific]] = 2 + exponent[scientific] - _EXP_MIN
        exponential = has_e[rewrite]  # "d.ddde-7": the mantissa "d.ddd" is repr's, or its digits are
        digits = scientific & ~exponential & (exponent < 0)  # "0.0000ddd": the digits
        other = ~exponential & ~digits
        if exponential.any():
            mask = _mask(len(value), rewrite[exponential])
            mantissas = pc.utf8_rtrim(pc.utf8_rtrim(text.filter(mask), "+-0123456789"), "e")
            if not scientific[exponential].all():  # 1.5e+14 in repr's fixed notation: from the digits
                fixed_rows = np.flatnonzero(~scientific[exponential])
                fixed_mantissas = mantissas.take(pa.array(fixed_rows))
                significand = pc.binary_join_element_wise(
                    pc.utf8_slice_codeunits(fixed_mantissas, 0, 1), pc.utf8_slice_codeunits(fixed_mantissas, 2), ""
                )
                mantissas = pc.replace_with_mask(
                    mantissas,
                    _mask(len(mantissas), fixed_rows),
                    _notation(pc.cast(significand, pa.int64()).to_numpy(), exponent[exponential][fixed_rows]),
                )
            body = pc.replace_with_mask(body, mask, mantissas)
        if digits.any():
            mask = _mask(len(value), rewrite[digits])
            body = pc.replace_with_mask(body, mask, _scientific_mantissa(pc.utf8_ltrim(text.filter(mask), "0.")))
        if other.any():  # not seen with pyarrow 26 (it would write 1e+16 as 10000000000000000)
            mask = _mask(len(value), rewrite[other])
            tail[rewrite[other]] = 0
            body = pc.replace_with_mask(body, mask, pa.array([repr(v) for v in magnitude[rewrite[other]].tolist()]))
    pieces = [body, _tails(suffix).take(pa.array(tail))]
    negative = np.signbit(value) & ~np.isnan(value)  # repr(-nan) is "nan"
    if negative.any():
        pieces.insert(0, _SIGNS.take(pa.array(negative.astype(np.int8))))
    return pc.binary_join_element_wise(*pieces, "")


@functools.cache
def _vectorised_reprs_agree() -> bool:
    """Whether :func:`_float_reprs` equals ``repr`` on every decimal exponent's edge cases here."""
    powers = np.array([float(f"1e{k}") for k in range(_EXP_MIN, 309)])
    rng = np.random.default_rng(0)
    random = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, 4096, dtype=np.int64).view(np.float64)
    probe = np.concatenate(
        [
            powers,
            np.nextafter(powers, 0.0),
            np.nextafter(powers, np.inf),
            *(powers[:-1] * factor for factor in (1.5, 1.2345678901234567, 9.999999999999999, 3.0000000000000004)),
            -powers[::7],
            random[np.isfinite(random)],
            rng.random(1024),
            np.arange(-1000, 1000, dtype=np.float64),
            [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1.7976931348623157e308, 2.2250738585072014e-308],
        ]
    )
    try:
        agree = _float_reprs(probe, "").to_pylist() == [repr(v) for v in probe.tolist()]
    except (pa.ArrowException, ValueError, IndexError):
        agree = False
    if not agree:
        warnings.warn(
            f"pyarrow {pa.__version__} writes floats unlike data/fingerprint.py expects: fingerprints use repr (slow)",
            RuntimeWarning,
            stacklevel=3,
        )
    return agree


def _mask(size: int, rows: np.ndarray) -> pa.Array:
    mask = np.zeros(size, dtype=bool)
    mask[rows] = True
    return pa.array(mask)


def _scientific_mantissa(digits: pa.Array) -> pa.Array:
    """``d1.d2...dn`` (``d1`` alone when n = 1) from the significant digits ``d1d2...dn``."""
    several = (np.diff(_offsets(digits)) > 1).astype(np.int8)
    return pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(digits, 0, 1), _DOTS.take(pa.array(several)), pc.utf8_slice_codeunits(digits, 1), ""
    )


def _notation(significand: np.ndarray, exponent: np.ndarray) -> pa.Array:
    """``repr`` of d1.d2...dn × 10**exponent, without sign and exponent suffix (``e-05``).

    Written as three pieces: an integer, a dot with zeros (:data:`_DOTS`), and an integer less
    its leading ``1`` (an integer 10**w + f writes f with w digits, leading zeros included).
    """
    n = np.maximum(np.searchsorted(_INT_POW10, significand, side="right"), 1)  # digits (zero: 1)
    scientific = (exponent < -4) | (exponent >= 16)
    small = ~scientific & (exponent < 0)
    large = ~scientific & (exponent >= 0)
    head = np.zeros(len(significand), dtype=np.int64)
    dots = np.ones(len(significand), dtype=np.int64)
    rest = np.zeros(len(significand), dtype=np.int64)
    # scientific: d1 "." d2...dn, or d1 alone
    scale = _INT_POW10[n - 1]
    head[scientific] = (significand // scale)[scientific]
    dots[scientific] = (n > 1)[scientific]
    rest[scientific] = (significand % scale + scale)[scientific]
    # fixed, exponent >= 0: integer part "." fraction (at least one digit)
    fraction = n - exponent - 1
    wide = large & (fraction <= 0)
    head[wide] = significand[wide] * _INT_POW10[np.clip(-fraction, 0, 18)][wide]
    rest[wide] = 10
    narrow = large & (fraction > 0)
    scale = _INT_POW10[np.clip(fraction, 0, 18)]
    head[narrow] = (significand // scale)[narrow]
    rest[narrow] = (significand % scale + scale)[narrow]
    # fixed, exponent < 0: "0." (-exponent - 1) zeros, the digits
    dots[small] = -exponent[small]
    rest[small] = (significand + _INT_POW10[n])[small]
    return pc.binary_join_element_wise(
        pc.cast(pa.array(head), pa.string()),
        _DOTS.take(pa.array(dots)),
        pc.utf8_slice_codeunits(pc.cast(pa.array(rest), pa.string()), 1),
        "",
    )


def _tails(suffix: str) -> pa.Array:
    """``suffix``, ``.0`` + suffix, then ``e-324`` + suffix .. ``e+308`` + suffix (repr's exponents)."""
    if suffix not in _TAILS:
        exponents = [f"e{k:+03d}{suffix}" for k in range(_EXP_MIN, 309)]
        _TAILS[suffix] = pa.array([suffix, f".0{suffix}", *exponents], pa.string())
    return _TAILS[suffix]


def _hash_lines(
    update: Callable[[Any], None],
    ids: pa.Array,
    texts: pa.Array,
    models: list[str],
    quality: np.ndarray,
    cost: np.ndarray,
) -> None:
    """``update`` with the canonical lines of a few queries, about :data:`_LINE_BYTES` at a time.

    A query's lines are one ``binary_join`` of the list ``["", r1, ..., rk]`` (``r`` is
    ``"model",quality,cost`` of a known cell) with the query's own separator
    ``]\\n["id","text",``: that writes ``]\\n`` + a line for each cell, without copying the query
    text k times beforehand. The stream is the canonical lines shifted by two bytes: its first
    ``]\\n`` is skipped and one is written after the last line.
    """
    n_queries, n_models = quality.shape
    known = ~np.isnan(quality)
    if known.all():
        counts = np.full(n_queries, n_models)
        qualities, costs = quality.ravel(), cost.ravel()
        columns = np.tile(np.arange(n_models), n_queries)
    else:
        counts = known.sum(axis=1)
        qualities, costs = quality[known], cost[known]
        columns = np.nonzero(known)[1]
    if not len(columns):
        return
    # The list values: per query an empty string (each table's last entry), then its cells.
    starts = np.concatenate([[0], np.cumsum(counts + 1)])
    cell = np.ones(starts[-1], dtype=bool)
    cell[starts[:-1]] = False
    pieces = []
    for index, table in (
        (columns, pa.array([f"{_ENCODE(model)}," for model in models], pa.string())),
        _deduplicated_reprs(qualities, ","),
        _deduplicated_reprs(costs, ""),
    ):
        slots = np.full(len(cell), len(table), dtype=np.int64)
        slots[cell] = index
        pieces.append(pa.concat_arrays([table, pa.array([""], pa.string())]).take(pa.array(slots)))
    cells = pc.binary_join_element_wise(*pieces, "")
    del pieces
    lists = pa.ListArray.from_arrays(pa.array(starts.astype(np.int32)), cells)
    separators = pc.binary_join_element_wise(']\n["', _json_inner(ids), '","', _json_inner(texts), '",', "")
    # bytes per query: its cells and one separator per cell
    cell_bytes = np.concatenate([[0], np.cumsum(_lengths(cells))])[starts]
    size = np.diff(cell_bytes) + counts * _lengths(separators)
    ends = np.cumsum(size)
    cuts = np.searchsorted(ends, np.arange(_LINE_BYTES, ends[-1], _LINE_BYTES), side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [n_queries]]))
    skip = 2  # the stream's leading "]\n"
    for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        stream = _utf8(pc.binary_join(lists[start:stop], separators[start:stop]))
        if skip and len(stream):
            stream, skip = stream[skip:], 0
        update(stream)
    update(b"]\n")


def _deduplicated_reprs(values: np.ndarray, suffix: str) -> tuple[np.ndarray, pa.Array]:
    """(index, texts): ``texts[index[i]]`` is ``repr(values[i]) + suffix``, each distinct bit
    pattern formatted once (bits keep ``-0.0`` apart from ``0.0``)."""
    index, bits = _distinct(np.ascontiguousarray(values, dtype=np.float64).view(np.int64))
    return index, float_reprs(bits.view(np.float64), suffix)


def _distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, distinct): ``distinct[index]`` is ``keys``, ``distinct`` without repeats unless the
    first keys hardly repeat (logged qualities and costs repeat a lot; when they do not, the hash
    table would cost about what it saves, and ``distinct`` is ``keys``)."""
    head = keys[:_DEDUPLICATION_PROBE]
    if len(np.unique(head)) > 0.9 * len(head):
        return np.arange(len(keys)), keys
    encoded = pc.dictionary_encode(pa.array(keys))
    return encoded.indices.to_numpy(), encoded.dictionary.to_numpy()


def _json_inner(strings: pa.Array) -> pa.Array:
    """JSON string bodies (:data:`_ENCODE` less its quotes): most strings need no escape at all.

    With ``ensure_ascii=False`` only ``"``, ``\\`` and the control characters below U+0020 are
    escaped; their UTF-8 bytes occur in no other character's encoding, so the strings to escape
    are found on the bytes, and only they go through the encoder.
    """
    if not len(strings):
        return strings
    offsets = _offsets(strings)
    data = np.frombuffer(strings.buffers()[2] or b"", dtype=np.uint8)[offsets[0] : offsets[-1]]
    if not len(data) or (data.min() >= 0x20 and not (data == 0x22).any() and not (data == 0x5C).any()):
        return strings
    special = np.flatnonzero((data < 0x20) | (data == 0x22) | (data == 0x5C))
    rows = np.unique(np.searchsorted(offsets, special + offsets[0], side="right") - 1)
    escaped = pa.array([_ENCODE(value)[1:-1] for value in strings.take(pa.array(rows)).to_pylist()], pa.string())
    return pc.replace_with_mask(strings, _mask(len(strings), rows), escaped)


def _strings(values: Strings) -> pa.Array:
    """A pyarrow string array (int32 offsets) without nulls.

    Python strings that are not ASCII are handed over encoded: pyarrow would otherwise keep a
    UTF-8 copy inside each of them (CPython's cache), memory that lasts as long as the log.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        array = values if values.type == pa.string() else values.cast(pa.string())
    else:
        encoded = [value.encode() if type(value) is str and not value.isascii() else value for value in values]
        array = pa.array(encoded, pa.string())
    if array.null_count:
        raise ValueError("query ids and queries must be strings, not null")
    return array


def _matrix(values: Cells, n_queries: int, n_models: int) -> np.ndarray:
    """``values`` as a (queries × models) float64 array."""
    matrix = np.asarray(values, dtype=np.float64)
    if n_queries == 0 and matrix.size == 0:
        return matrix.reshape(0, n_models)
    if matrix.shape != (n_queries, n_models):
        raise ValueError(f"expected {n_queries} × {n_models} values, got shape {matrix.shape}")
    return matrix


def _offsets(strings: pa.Array) -> np.ndarray:
    return np.frombuffer(strings.buffers()[1], dtype=np.int32, count=len(strings) + 1, offset=strings.offset * 4)


def _lengths(strings: pa.Array) -> np.ndarray:
    return np.diff(_offsets(strings)).astype(np.int64)


def _utf8(strings: pa.Array) -> pa.Buffer | bytes:
    """The concatenated UTF-8 of a string array (its data buffer between the first and last offsets)."""
    offsets = _offsets(strings)
    data = strings.buffers()[2]
    if data is None:
        return b""
    return data.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
