"""Row validation: one parsed outcome row in, a clean :class:`Outcome` or a rejection reason out."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from data.prices import PriceTable
from data.schema import RejectReason


class Outcome(NamedTuple):
    """A valid outcome row with typed values (a NamedTuple: immutable and cheap to build per row)."""

    query_id: str
    query: str
    model: str
    quality: float
    cost: float
    propensity: float | None
    latency_ms: float | None
    expected_quality: float | None
    embedding: list[float] | None
    timestamp: datetime | None


class Invalid(Exception):
    """A row-level validation failure: one reason of the fixed set and a detail."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def _number(value: Any, field: str, reason: RejectReason) -> float:
    """A float from a JSON number, a numeric string (CSV) or a bool (0/1 correctness)."""
    kind = type(value)
    if kind is float:  # the common case first: this runs several times per row
        return value
    if kind is int or isinstance(value, (int, float)):  # bool is an int
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise Invalid(reason, f"{field}={value!r} is not a number")


def _optional_number(fields: dict[str, Any], field: str, reason: RejectReason) -> float | None:
    value = fields.get(field)
    if value is None or type(value) is float:  # the common cases without a further call
        return value
    return _number(value, field, reason)


def _non_negative(value: float, field: str, reason: RejectReason) -> float:
    if not math.isfinite(value) or value < 0:
        raise Invalid(reason, f"{field}={value!r} must be finite and >= 0")
    return value


def _tokens(fields: dict[str, Any], field: str) -> int | None:
    value = _optional_number(fields, field, RejectReason.BAD_TOKENS)
    if value is None:
        return None
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise Invalid(RejectReason.BAD_TOKENS, f"{field}={value!r} must be a whole number >= 0")
    return int(value)


def _identifier(fields: dict[str, Any], field: str) -> str:
    value = fields.get(field)
    if type(value) is str and value and not value.isspace():  # the common case first
        return value
    if value is None or (isinstance(value, str) and value.strip() == ""):
        raise Invalid(RejectReason.MISSING_COLUMN, f"{field} is missing or empty")
    if isinstance(value, (dict, list, bool, float)):
        raise Invalid(RejectReason.MISSING_COLUMN, f"{field}={value!r} is not a string or integer")
    return str(value)


def _embedding(value: Any) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise Invalid(RejectReason.BAD_EMBEDDING, "embedding is not a JSON list") from None
    if not isinstance(value, list) or not value:
        raise Invalid(RejectReason.BAD_EMBEDDING, "embedding must be a non-empty list of numbers")
    try:
        vector = [float(v) for v in value if not isinstance(v, bool)]
    except (TypeError, ValueError):
        raise Invalid(RejectReason.BAD_EMBEDDING, "embedding holds a value that is not a number") from None
    if len(vector) != len(value) or not all(math.isfinite(v) for v in vector):
        raise Invalid(RejectReason.BAD_EMBEDDING, "embedding values must be finite numbers")
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
        raise Invalid(RejectReason.BAD_TIMESTAMP, f"timestamp={text!r} is not ISO 8601") from None


def milliseconds(stamp: datetime) -> int:
    """Milliseconds since the Unix epoch; an aware time is taken in UTC, a naive one as UTC."""
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(timezone.utc).replace(tzinfo=None)
    return int(np.datetime64(stamp, "ms").astype(np.int64))


def validate(fields: dict[str, Any], prices: PriceTable | None) -> Outcome:
    """Check one outcome row against CONTRACTS.md §1; raise :class:`Invalid` with the first problem.

    ``cost`` may be absent when ``prompt_tokens`` and ``completion_tokens`` are given and
    ``prices`` lists the model: cost = (prompt × input + completion × output) / 1e6 USD.
    """
    for column in ("query_id", "query", "model"):
        if column not in fields:
            raise Invalid(RejectReason.MISSING_COLUMN, f"no {column!r} field")
    if "quality" not in fields:
        raise Invalid(RejectReason.MISSING_COLUMN, "no 'quality' field")
    query_id = _identifier(fields, "query_id")
    model = _identifier(fields, "model")
    query = fields["query"]
    if query is None:
        raise Invalid(RejectReason.EMPTY_QUERY, "query is missing")
    if not isinstance(query, str):
        raise Invalid(RejectReason.BAD_QUERY, f"query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise Invalid(RejectReason.EMPTY_QUERY, "query is empty")

    raw_quality = fields["quality"]
    if raw_quality is None or (isinstance(raw_quality, str) and raw_quality.strip() == ""):
        raise Invalid(RejectReason.BLANK_SCORE, "quality is blank")
    quality = _number(raw_quality, "quality", RejectReason.BAD_QUALITY)
    if not 0.0 <= quality <= 1.0:  # also false for NaN
        raise Invalid(RejectReason.BAD_QUALITY, f"quality={quality!r} is outside [0, 1]")

    cost = _optional_number(fields, "cost", RejectReason.BAD_COST)
    prompt_tokens = _tokens(fields, "prompt_tokens")
    completion_tokens = _tokens(fields, "completion_tokens")
    if cost is None:
        if prompt_tokens is None or completion_tokens is None:
            raise Invalid(RejectReason.MISSING_COLUMN, "no cost, and no prompt_tokens and completion_tokens to price")
        price = prices.get(model) if prices is not None else None
        if price is None:
            raise Invalid(RejectReason.NO_PRICE, f"no price for model {model!r} (see --prices)")
        cost = price.cost(prompt_tokens, completion_tokens)
    cost = _non_negative(cost, "cost", RejectReason.BAD_COST)

    propensity = _optional_number(fields, "propensity", RejectReason.BAD_PROPENSITY)
    if propensity is not None and not 0.0 < propensity <= 1.0:
        raise Invalid(RejectReason.BAD_PROPENSITY, f"propensity={propensity!r} is outside (0, 1]")
    latency = _optional_number(fields, "latency_ms", RejectReason.BAD_LATENCY)
    if latency is not None:
        latency = _non_negative(latency, "latency_ms", RejectReason.BAD_LATENCY)
    expected = _optional_number(fields, "expected_quality", RejectReason.BAD_QUALITY)
    if expected is not None and not 0.0 <= expected <= 1.0:
        raise Invalid(RejectReason.BAD_QUALITY, f"expected_quality={expected!r} is outside [0, 1]")
    return Outcome(
        query_id=query_id,
        query=query,
        model=model,
        quality=quality,
        cost=cost,
        propensity=propensity,
        latency_ms=latency,
        expected_quality=expected,
        embedding=_embedding(fields.get("embedding")),
        timestamp=_timestamp(fields.get("timestamp")),
    )
