"""Each outcome's response text, read on demand: :func:`read_responses`.

A :class:`~data.routing_log.RoutingLog` keeps no response text: routing before generation never
needs it, and RouterBench's answers would make every load several times heavier. Cascades
(docs/architecture.md §6) do need them, so this module reads them afterwards, for a log already
loaded from the same path, into an (N, K) array aligned with the log's queries and models.

Where a response comes from (docs/contracts.md §7.1): the ``response`` field of a long-format row,
or the ``<model>|model_response`` column of a RouterBench wide file, whose Python-list strings
(``"['D\\n']"``) are decoded like its prompts (:func:`data.reading.parse_prompt`).

Which row's response: the loader keeps the first accepted row of each (query_id, model)
(docs/contracts.md §1.6), and rows rejected for another reason (RouterBench's blank copies, a
conflicting text) never claim the outcome. So an outcome's response is that of the first row of
its (query_id, model) whose query text and quality are those the log accepted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from data.decision_log import is_decision_log
from data.reading import ParsedRow, csv_layout, list_files, parse_prompt, read_file
from data.routing_log import RoutingLog
from data.schema import DataError

#: The field of a parsed row that holds its response (long format, and RouterBench's wide columns).
RESPONSE_FIELD = "response"


def read_responses(path: str | Path, log: RoutingLog, allow_pickle: bool = False) -> np.ndarray:
    """The (N, K) response texts (object array of ``str``) of ``log``, read again from ``path``.

    ``log`` must have been loaded from ``path`` (any subset of it works: only its cells are filled).
    Raises :class:`DataError` when no row at ``path`` carries a response, or when some outcome of
    ``log`` has none (naming the first such query and model).
    """
    cells: dict[tuple[str | None, str | None], tuple[int, int]] = {
        (query_id, model): (i, k)
        for i, query_id in enumerate(log.query_ids.tolist())
        for k, model in enumerate(log.models)
    }
    responses = np.full((log.n_queries, log.n_models), None, dtype=object)
    seen_any = False
    for file in list_files(Path(path)):
        if is_decision_log(file):
            continue  # a service's decision log holds no responses
        decode = _is_wide(file)
        for item in read_file(file, allow_pickle=allow_pickle):
            if not isinstance(item, ParsedRow) or RESPONSE_FIELD not in item.fields:
                continue
            seen_any = True
            fields = item.fields
            cell = cells.get((_text(fields.get("query_id")), _text(fields.get("model"))))
            if cell is None or responses[cell] is not None or not _is_accepted_row(fields, log, *cell):
                continue
            responses[cell] = _response_text(fields[RESPONSE_FIELD], decode)
    if not seen_any:
        raise DataError(
            f"{path}: the log has no responses (a '{RESPONSE_FIELD}' field per row, or RouterBench's "
            "'<model>|model_response' columns); cascades need every model's response to every query"
        )
    missing = np.argwhere(responses == None)  # noqa: E711 (elementwise on an object array)
    if len(missing):
        i, k = (int(v) for v in missing[0])
        raise DataError(
            f"{path}: {len(missing)} outcome(s) of the log have no response, the first query_id "
            f"{log.query_ids[i]!r} model {log.models[k]!r}; cascades need every model's response to every query"
        )
    return responses


def _is_wide(file: Path) -> bool:
    """Whether ``file`` is RouterBench's wide format (whose responses are Python-list strings)."""
    suffix = file.suffix.lower()
    return suffix == ".pkl" or (suffix == ".csv" and bool(csv_layout(file)[1]))


def _text(value: Any) -> str | None:
    """An id as the loader keeps it (a string; integers of JSON lines as their decimal text)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _is_accepted_row(fields: dict[str, Any], log: RoutingLog, query: int, model: int) -> bool:
    """Whether the row carries the accepted text and quality of its outcome (see the module docstring)."""
    if fields.get("query") != log.queries[query]:
        return False
    quality = fields.get("quality")
    try:
        return quality is not None and quality != "" and float(quality) == log.quality[query, model]
    except (TypeError, ValueError):
        return False


def _response_text(value: Any, decode: bool) -> str:
    """A response as text: RouterBench's list strings decoded, a JSON null as "", other values as ``str``."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return str(value)
    return parse_prompt(value) if decode else value
