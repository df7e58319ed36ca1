"""Row validation: one parsed outcome row in, a clean :class:`Outcome` or a rejection reason out.

The rules themselves (reason, message, test, and the limits a run sets) are defined in
:mod:`data.rules`; this module applies them to one row, in the order that decides which problem
a row with several is rejected for.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from data import rules
from data.prices import PriceTable
from data.rules import DEFAULT_LIMITS, Limits, ValueRule
from data.schema import REQUIRED_COLUMNS


class Outcome(NamedTuple):
    """A valid outcome row with typed values (a NamedTuple: immutable and cheap to build per row)."""

    query_id: str
    query: str
    model: str
    quality: float
    cost: float
    propensity: float | None
    latency_ms: float | None
    energy_wh: float | None  # Wh of the call as logged (an estimate fills a missing one later: data.energy)
    expected_quality: float | None
    embedding: list[float] | None
    timestamp: datetime | None
    task: str | None
    prompt_tokens: float | None  # kept for token mode (docs/contracts.md §2.10), also when cost is given
    completion_tokens: float | None


def _number(value: Any, rule: ValueRule, text_numbers: bool) -> float:
    """A float from a JSON number, a numeric string (CSV; JSON too unless not ``text_numbers``) or a bool (0/1)."""
    kind = type(value)
    if kind is float:  # the common case first: this runs several times per row
        return value
    if kind is int or isinstance(value, (int, float)):  # bool is an int
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise rule.not_a_number(value) from None
        if not text_numbers:
            raise rule.written_as_text(value)
        return number
    raise rule.not_a_number(value)


def _optional_number(fields: dict[str, Any], rule: ValueRule, text_numbers: bool) -> float | None:
    """The field of ``rule`` as a float, None when absent (not yet checked against the rule)."""
    value = fields.get(rule.field)
    if value is None or type(value) is float:  # the common cases without a further call
        return value
    return _number(value, rule, text_numbers)


def _checked(fields: dict[str, Any], rule: ValueRule, text_numbers: bool) -> float | None:
    """An optional numeric field, checked by its rule."""
    value = _optional_number(fields, rule, text_numbers)
    return None if value is None else rule.check(value)


def _tokens(fields: dict[str, Any], rule: ValueRule, text_numbers: bool) -> int | None:
    value = _checked(fields, rule, text_numbers)
    return None if value is None else int(value)


def _identifier(fields: dict[str, Any], field: str) -> str:
    value = fields.get(field)
    if type(value) is str and not rules.is_blank(value):  # the common case first
        return value
    if value is None or (isinstance(value, str) and rules.is_blank(value)):
        raise rules.BLANK_IDENTIFIER.invalid(field=field)
    if isinstance(value, (dict, list, bool, float)):
        raise rules.IDENTIFIER_TYPE.invalid(field=field, value=value)
    return str(value)


def _task(value: Any) -> str | None:
    """The optional task: a non-blank string, or an integer as its decimal string (:data:`data.rules.TASK_TYPE`)."""
    if value is None:
        return None
    if isinstance(value, str):
        if rules.is_blank(value):
            raise rules.TASK_BLANK.invalid()
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise rules.TASK_TYPE.invalid(value=value)


def _query(value: Any) -> str:
    if value is None:
        raise rules.QUERY_MISSING.invalid()
    if not isinstance(value, str):
        raise rules.QUERY_NOT_TEXT.invalid(type=type(value).__name__)
    if rules.is_blank(value):
        raise rules.QUERY_BLANK.invalid()
    return value


def _quality(value: Any, text_numbers: bool) -> float:
    if value is None or (isinstance(value, str) and rules.is_blank(value)):
        raise rules.QUALITY_BLANK.invalid()
    return rules.QUALITY.check(_number(value, rules.QUALITY, text_numbers))


def _priced_cost(model: str, prompt: int | None, completion: int | None, prices: PriceTable | None) -> float:
    """cost = (prompt × input + completion × output) / 1e6 USD, by the price table's row for ``model``."""
    if prompt is None or completion is None:
        raise rules.NO_COST.invalid()
    price = prices.get(model) if prices is not None else None
    if price is None:
        raise rules.NO_PRICE.invalid(model=model)
    return price.cost(prompt, completion)


def _embedding(value: Any) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise rules.EMBEDDING_NOT_JSON.invalid() from None
    if not isinstance(value, list) or not value:
        raise rules.EMBEDDING_NOT_LIST.invalid()
    try:
        vector = [float(v) for v in value if not isinstance(v, bool)]
    except (TypeError, ValueError):
        raise rules.EMBEDDING_NOT_NUMBER.invalid() from None
    if len(vector) != len(value) or not all(math.isfinite(v) for v in vector):
        raise rules.EMBEDDING_NOT_FINITE.invalid()
    return vector


def _timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return parse_timestamp(str(value))


@lru_cache(maxsize=4096)
def parse_timestamp(text: str) -> datetime:
    """ISO 8601 text to a datetime; cached because a query's rows usually share one timestamp."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise rules.TIMESTAMP_FORMAT.invalid(text=text) from None


def milliseconds(stamp: datetime) -> int:
    """Milliseconds since the Unix epoch; an aware time is taken in UTC, a naive one as UTC."""
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(timezone.utc).replace(tzinfo=None)
    return int(np.datetime64(stamp, "ms").astype(np.int64))


def validate(fields: dict[str, Any], prices: PriceTable | None, limits: Limits = DEFAULT_LIMITS) -> Outcome:
    """Check one outcome row against docs/contracts.md §1; raise :class:`data.rules.Invalid` with the first problem.

    ``cost`` may be absent when ``prompt_tokens`` and ``completion_tokens`` are given and
    ``prices`` lists the model: cost = (prompt × input + completion × output) / 1e6 USD. Given
    or priced, it must not exceed ``limits.max_cost``; ``limits`` are those of the row's file
    (:meth:`data.rules.Limits.of`).
    """
    for column in REQUIRED_COLUMNS:
        if column not in fields:
            raise rules.MISSING_FIELD.invalid(field=column)
    text_numbers = limits.text_numbers
    query_id = _identifier(fields, "query_id")
    model = _identifier(fields, "model")
    query = _query(fields["query"])
    quality = _quality(fields["quality"], text_numbers)
    cost = _optional_number(fields, rules.COST, text_numbers)
    prompt_tokens = _tokens(fields, rules.PROMPT_TOKENS, text_numbers)
    completion_tokens = _tokens(fields, rules.COMPLETION_TOKENS, text_numbers)
    if cost is None:
        cost = _priced_cost(model, prompt_tokens, completion_tokens, prices)
    cost = rules.COST.check(cost)
    if not rules.within_max_cost(cost, limits.max_cost):
        raise rules.COST_ABOVE_MAX.invalid(value=cost, limit=limits.max_cost)
    propensity, latency_ms, energy_wh, expected_quality = [
        _checked(fields, rule, text_numbers) for rule in rules.OPTIONAL_VALUE_RULES
    ]
    embedding = _embedding(fields.get("embedding"))
    timestamp = _timestamp(fields.get("timestamp"))
    task = _task(fields.get("task"))
    # Positional, in field order: built by keyword, a NamedTuple takes twice as long, once per row.
    return Outcome(
        query_id, query, model, quality, cost, propensity, latency_ms, energy_wh, expected_quality, embedding,
        timestamp, task, prompt_tokens, completion_tokens,
    )  # fmt: skip
