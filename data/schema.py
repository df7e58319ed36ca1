"""The log schema of docs/contracts.md §1: column names, the fixed set of rejection reasons, errors.

Kept free of third-party imports so that every layer (and the service) may use it.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

#: Columns every canonical (long-format) row must carry. ``cost`` may be replaced by tokens.
REQUIRED_COLUMNS: tuple[str, ...] = ("query_id", "query", "model", "quality")
#: Optional columns that routerl reads and validates; anything else is kept as metadata only.
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "cost",
    "prompt_tokens",
    "completion_tokens",
    "propensity",
    "latency_ms",
    "energy_wh",
    "embedding",
    "timestamp",
    "expected_quality",
    "task",
)
ROUTERBENCH_COST_SUFFIX = "|total_cost"
ROUTERBENCH_RESPONSE_SUFFIX = "|model_response"
#: The RouterBench wide column read as each record's ``task`` (the benchmark it comes from).
ROUTERBENCH_TASK_COLUMN = "eval_name"


class RejectReason(str, Enum):
    """Why an outcome row was rejected. The set is fixed and documented (docs/contracts.md §1).

    Every rejected row lands in ``rejected.jsonl`` with one of these values as ``reason``.
    """

    MISSING_COLUMN = "missing column"  # a required field is absent, null or empty (query_id, model)
    EMPTY_QUERY = "empty query"  # the query text is empty or only whitespace
    BAD_QUERY = "bad query"  # the query is not a string
    BAD_COST = "bad cost"  # cost is NaN, infinite, negative or not a number
    BAD_QUALITY = "bad quality"  # quality outside [0, 1], NaN or not a number
    BLANK_SCORE = "blank score"  # quality is blank (null / empty cell), as RouterBench has
    BAD_TOKENS = "bad tokens"  # prompt/completion tokens negative or not integers
    BAD_LATENCY = "bad latency"  # latency_ms NaN, infinite or negative
    BAD_ENERGY = "bad energy"  # energy_wh NaN, infinite or negative
    BAD_EMBEDDING = "bad embedding"  # not a list of finite numbers, or a length unlike the others
    BAD_TIMESTAMP = "bad timestamp"  # not ISO 8601
    BAD_PROPENSITY = "bad propensity"  # propensity outside (0, 1]
    BAD_TASK = "bad task"  # task blank, or neither a string nor an integer
    DUPLICATE_OUTCOME = "duplicate outcome"  # a later row for an already accepted (query_id, model)
    CONFLICTING_TEXT = "conflicting text"  # the query text differs from the first seen for its query_id
    NO_PRICE = "no price for model"  # cost must come from tokens but the price table lacks the model
    INVALID_UTF8 = "invalid UTF-8"  # the line (or a CSV field) is not valid UTF-8
    MALFORMED_LINE = "malformed line"  # not a JSON object
    TRUNCATED_LINE = "truncated line"  # the last line of the file is cut short (no newline, no JSON)
    INCOMPLETE_QUERY = "incomplete query"  # full-information query that lost a model's outcome
    ORPHAN_FEEDBACK = "feedback without decision"  # decision log: feedback for an unknown query_id
    NOT_POLICY_CHOICE = "not the policy's choice"  # decision log: served by a fallback, propensity unknown
    CASCADE_DECISION = "cascade decision"  # decision log: a cascade's answer, several calls, not one routing choice


class DataError(Exception):
    """A user error in the input (unreadable, empty or unknown file, mixed log kinds, --strict).

    The CLI prints ``str(error)`` as one line and exits with status 2, without a traceback.
    """


def read_yaml(path: Path, what: str) -> Any:
    """The YAML document at ``path``; an unreadable file or bad YAML is a :class:`DataError` naming ``what``."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise DataError(f"{path}: cannot read {what}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise DataError(f"{path}: not valid YAML: {error}") from None


class StrictModeError(DataError):
    """Raised under ``--strict`` at the first rejected row."""
