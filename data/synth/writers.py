"""The file writers: a :class:`SynthLog` as a canonical long-format log (.jsonl, .csv or .parquet).

Rows follow docs/contracts.md §1: one per (query, model) for full information, in query-major
order, or one per query (the logged model) for a bandit log. Columns, in order: ``query_id,
query, task, model, quality, cost, prompt_tokens, completion_tokens, [propensity,]
expected_quality, timestamp``. ``task`` is the query's main topic (``topic-0`` ...), the group
of a leave-one-task-out comparison. ``expected_quality`` is ground-truth metadata for
evaluation, never a feature; ``timestamp`` is ISO 8601 UTC (``2024-01-01T00:00:00Z``).

pyarrow is imported lazily, to write ``.parquet`` only.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data.synth.config import SynthLog

#: Written columns, in order; ``propensity`` only in bandit logs.
COLUMNS: tuple[str, ...] = (
    "query_id",
    "query",
    "task",
    "model",
    "quality",
    "cost",
    "prompt_tokens",
    "completion_tokens",
    "propensity",
    "expected_quality",
    "timestamp",
)


def _row_blocks(log: SynthLog, block: int = 20000) -> Iterator[tuple[list[str], dict[str, list]]]:
    """Yield (column names, {column: values}) for blocks of queries, in row order.

    Rows are (query, model) in query-major order for a full-information log, or one per query
    (the logged model) for a bandit log. Values are plain Python objects.
    """
    n, k = log.shape
    names = np.array(log.model_names, dtype=object)
    stamps = np.char.add(np.datetime_as_string(log.timestamps, unit="s"), "Z")
    cols = [c for c in COLUMNS if c != "propensity" or log.is_bandit]
    tasks = log.tasks
    for a in range(0, n, block):
        b = min(n, a + block)
        if log.action is not None:
            rows = np.arange(a, b)
            model = log.action[a:b]
            reps = 1
        else:
            rows = np.repeat(np.arange(a, b), k)
            model = np.tile(np.arange(k), b - a)
            reps = k
        out: dict[str, list] = {
            "query_id": [q for q in log.query_ids[a:b] for _ in range(reps)],
            "query": [q for q in log.queries[a:b] for _ in range(reps)],
            "task": [t for t in tasks[a:b] for _ in range(reps)],
            "model": names[model].tolist(),
            "quality": log.quality[rows, model].tolist(),
            "cost": log.cost[rows, model].tolist(),
            "prompt_tokens": log.prompt_tokens[rows].tolist(),
            "completion_tokens": log.completion_tokens[rows, model].tolist(),
            "expected_quality": log.expected_quality[rows, model].tolist(),
            "timestamp": stamps[rows].tolist(),
        }
        if log.propensity is not None:
            out["propensity"] = log.propensity[a:b].tolist()
        yield cols, out


def _reprs(values: np.ndarray) -> list[str]:
    """``repr`` of each float, formatting each distinct value once (costs repeat a lot)."""
    unique, inverse = np.unique(values, return_inverse=True)
    return np.array(list(map(repr, unique.tolist())), dtype=object)[inverse.ravel()].tolist()


def _write_jsonl(log: SynthLog, path: Path) -> int:
    """Write JSON lines, fast: each line is glued from precomputed string pieces.

    Why so: 11M rows must take well under a minute. Each query text is JSON-escaped once with
    json.dumps (ASCII-escaped, so every line is pure ASCII); per-model constants and expected
    qualities (4 decimals) come from lookup tables; only costs, propensities and token counts
    are formatted (each distinct value once). Numbers are written with ``repr``: exact
    round trip.
    """
    n, k = log.shape
    stamps = np.char.add(np.datetime_as_string(log.timestamps, unit="s"), "Z").tolist()
    tasks = log.tasks
    prop = ',"propensity":{!r}'
    # "model":"<name>","quality":<q>,"cost":   indexed by 2 * model + quality
    model_quality = np.array(
        [f'"model":{json.dumps(m)},"quality":{q!r},"cost":' for m in log.model_names for q in (0.0, 1.0)],
        dtype=object,
    )
    eq_table = np.array([f',"expected_quality":{i / 1e4!r}' for i in range(10001)], dtype=object)
    int_table = np.array(list(map(str, range(int(log.completion_tokens.max()) + 1))), dtype=object)
    block = 20000
    rows = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for a in range(0, n, block):
            b = min(n, a + block)
            reps = 1 if log.action is not None else k
            qidx = np.repeat(np.arange(a, b), reps)
            midx = log.action[a:b] if log.action is not None else np.tile(np.arange(k), b - a)
            head = np.array(
                [
                    f'{{"query_id":"{i}","query":{json.dumps(q)},"task":"{t}",'
                    for i, q, t in zip(log.query_ids[a:b], log.queries[a:b], tasks[a:b], strict=True)
                ],
                dtype=object,
            )[qidx - a].tolist()
            tokens = np.array(
                [f',"prompt_tokens":{p},"completion_tokens":' for p in log.prompt_tokens[a:b].tolist()],
                dtype=object,
            )
            tokens = tokens[qidx - a].tolist()
            tail = np.array([f',"timestamp":"{s}"}}\n' for s in stamps[a:b]], dtype=object)
            tail = tail[qidx - a].tolist()
            mq = model_quality[2 * midx + (log.quality[qidx, midx] > 0.5)].tolist()
            cost = _reprs(log.cost[qidx, midx])
            ctok = int_table[log.completion_tokens[qidx, midx]].tolist()
            if log.propensity is not None:
                ctok = [c + prop.format(r) for c, r in zip(ctok, log.propensity[a:b].tolist(), strict=True)]
            eq = eq_table[np.rint(log.expected_quality[qidx, midx] * 1e4).astype(np.int64)].tolist()
            f.write(
                "".join(
                    [
                        f"{h}{m}{c}{t}{ct}{e}{tl}"
                        for h, m, c, t, ct, e, tl in zip(head, mq, cost, tokens, ctok, eq, tail, strict=True)
                    ]
                )
            )
            rows += len(head)
    return rows


def _write_csv(log: SynthLog, path: Path) -> int:
    """Write CSV with a header row (csv module quoting, UTF-8)."""
    rows = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        header_done = False
        for cols, block in _row_blocks(log):
            if not header_done:
                writer.writerow(cols)
                header_done = True
            writer.writerows(zip(*(block[c] for c in cols), strict=True))
            rows += len(block["query_id"])
    return rows


def _write_parquet(log: SynthLog, path: Path) -> int:
    """Write Parquet (pyarrow imported lazily); timestamp kept as an ISO 8601 string."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError("writing .parquet needs pyarrow (pip install pyarrow)") from exc
    writer = None
    rows = 0
    try:
        for cols, block in _row_blocks(log, block=200000):
            table = pa.table({c: block[c] for c in cols})
            if writer is None:
                writer = pq.ParquetWriter(str(path), table.schema)
            writer.write_table(table)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return rows


def write(log: SynthLog, path: str | Path) -> int:
    """Write ``log`` in canonical long format to ``path`` (.jsonl, .csv or .parquet by suffix).

    Creates missing parent directories. Returns the number of rows written: N*K for a
    full-information log, N for a bandit log. Raises ValueError for another suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    writers = {".jsonl": _write_jsonl, ".csv": _write_csv, ".parquet": _write_parquet}
    if suffix not in writers:
        raise ValueError(f"unknown output format {path.name!r}: use .jsonl, .csv or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    return writers[suffix](log, path)
