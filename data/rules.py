"""The validation rules of a log, each defined once: its rejection reason, its message and its test.

Every rejected row of ``rejected.jsonl`` carries a reason of the fixed set
(:class:`data.schema.RejectReason`) and a detail made by one rule of this module. Three paths
apply the rules, and they must reject the same rows with the same reason and detail (the parity
tests: ``tests/test_data_columnar.py``, ``tests/test_blocks.py``, ``tests/test_ray.py``):

* **per row**: :func:`data.validation.validate` applies the row rules to one parsed row, and
  :class:`data.log_builder.LogBuilder` the cross-row rules, row by row in reading order;
* **columnar**: :mod:`data.columnar` checks the same :class:`ValueRule` predicates, the same
  blank-text rule and the same :class:`Limits` on whole columns and takes a block only when
  every row passes;
  :meth:`data.log_builder.LogBuilder.add_block` takes it only when no cross-row rule fires
  (:func:`conflicting_texts`, :func:`first_outcomes`). Any other block is read per row, so every
  rejection of the columnar path is made by the per-row path;
* **``--ray`` blocks**: :func:`training.blocks.read_block` reads files as the two paths above, and
  :func:`training.blocks.query_rules` applies the cross-row rules to whole queries on columns with
  the same :func:`conflicting_texts` and :func:`first_outcomes` and the same messages.

Kinds of rule:

* :class:`ValueRule`: the valid range of a numeric field. Its predicate uses comparison and
  arithmetic operators only, so the one definition tests one float (per row) and a float64
  column elementwise (columnar); NaN fails every comparison and is never valid.
* :class:`Rule`: a reason and its message, for a rule whose test is structural (a missing field,
  a blank text, a line that is not JSON, a repeated outcome). Blank text is :func:`is_blank`,
  and on a column :func:`all_non_blank`.
* :class:`Limits`: what a run may set about the rules of one file: the largest cost a row may
  have (``data.max_cost``, :func:`within_max_cost` on one float or a column) and whether a number
  may be written as text (not in JSON lines and Parquet under ``--strict``:
  :meth:`ValueRule.written_as_text`). Every path is given the same limits.

Where a new rule goes: its :class:`Rule` or :class:`ValueRule` here, with a reason of the fixed
set (a new reason is a new member of :class:`data.schema.RejectReason`, the documented set).
A changed :class:`ValueRule` changes every path; a new one, for a new optional numeric field,
joins :data:`OPTIONAL_VALUE_RULES` (and the field :class:`data.validation.Outcome`). A rule
that a run may set reads its setting from :class:`Limits`, which each path gets per file
(:meth:`Limits.of`). A structural row rule is raised by :func:`data.validation.validate` where
it reads the field; the columnar path must leave the rows it cannot check to the per-row path.
A cross-row rule is applied by :meth:`data.log_builder.LogBuilder.add`, refused by
``add_block`` and applied by :func:`training.blocks.query_rules`. Every rule needs a bad row in
``test_data_validation.CASES`` (or a parity test of its own): ``tests/test_blocks.py`` checks
that the three paths reject it alike and that every rule here is met (the ones that only
``--strict`` meets, by a test of their own). The ``--ray`` path reads no embeddings, bandit
feedback or decision logs, so it never meets the embedding-length, bandit or decision-log rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from data.schema import DataError, RejectReason

#: The default of ``data.max_cost``, USD per call: far above what one LLM call costs (a long
#: answer of the dearest model is a few USD), so that only an absurd value is rejected, such as
#: 1e6 or 1e308, which would outweigh every real reward (or overflow) in training.
MAX_COST = 100.0
#: Files whose numbers are typed (JSON numbers, Parquet columns); in CSV and RouterBench pickles
#: (read as text) every value is text by nature. Under ``--strict`` a typed file's number given
#: as text (``"0.5"``) is rejected.
TYPED_SUFFIXES = (".jsonl", ".parquet")


class Invalid(Exception):
    """A row-level validation failure: one reason of the fixed set and a detail."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Rule:
    """A rejection: its reason and its message, a :meth:`str.format` template of the row's values."""

    reason: RejectReason
    message: str

    def detail(self, **values: Any) -> str:
        """The message with ``values`` filled in (the ``detail`` of ``rejected.jsonl``)."""
        return self.message.format(**values)

    def invalid(self, **values: Any) -> Invalid:
        """The :class:`Invalid` that rejects a row by this rule."""
        return Invalid(self.reason, self.detail(**values))


@dataclass(frozen=True)
class ValueRule:
    """A numeric field's valid values: rejects ``"<field>=<value> <requirement>"`` with ``reason``.

    ``accepts`` takes one float (per-row path) or a float64 array (columnar path, elementwise).
    A value that is not a number at all is rejected with the same reason (:meth:`not_a_number`).
    """

    field: str
    reason: RejectReason
    requirement: str
    accepts: Callable[[Any], Any]

    def check(self, value: float) -> float:
        """``value`` when valid; else raise :class:`Invalid`."""
        if not self.accepts(value):
            raise Invalid(self.reason, f"{self.field}={value!r} {self.requirement}")
        return value

    def not_a_number(self, value: Any) -> Invalid:
        """The rejection of a value that is neither a number nor a numeric text."""
        return Invalid(self.reason, f"{self.field}={value!r} is not a number")

    def written_as_text(self, value: str) -> Invalid:
        """The rejection of a number given as text where :attr:`Limits.text_numbers` is False."""
        return Invalid(
            self.reason,
            f"{self.field}={value!r} is a number written as text (refused by --strict in JSON lines and Parquet)",
        )

    def accepts_all(self, values: np.ndarray) -> bool:
        """Whether every value of a float64 column is valid (the columnar form of :meth:`check`)."""
        with np.errstate(invalid="ignore"):  # inf % 1 is NaN, which the predicate rejects
            return bool(np.all(self.accepts(values)))


def _unit_interval(value: Any) -> Any:
    return (value >= 0.0) & (value <= 1.0)


def _probability(value: Any) -> Any:
    return (value > 0.0) & (value <= 1.0)


def _finite_non_negative(value: Any) -> Any:
    return (value >= 0.0) & (value < math.inf)


def _whole_non_negative(value: Any) -> Any:
    return (value >= 0.0) & (value < math.inf) & (value % 1.0 == 0.0)


# --------------------------------------------------------------------------- row rules: values

QUALITY = ValueRule("quality", RejectReason.BAD_QUALITY, "is outside [0, 1]", _unit_interval)
COST = ValueRule("cost", RejectReason.BAD_COST, "must be finite and >= 0", _finite_non_negative)
PROMPT_TOKENS = ValueRule("prompt_tokens", RejectReason.BAD_TOKENS, "must be a whole number >= 0", _whole_non_negative)
COMPLETION_TOKENS = ValueRule(
    "completion_tokens", RejectReason.BAD_TOKENS, "must be a whole number >= 0", _whole_non_negative
)
PROPENSITY = ValueRule("propensity", RejectReason.BAD_PROPENSITY, "is outside (0, 1]", _probability)
LATENCY = ValueRule("latency_ms", RejectReason.BAD_LATENCY, "must be finite and >= 0", _finite_non_negative)
ENERGY = ValueRule("energy_wh", RejectReason.BAD_ENERGY, "must be finite and >= 0", _finite_non_negative)
EXPECTED_QUALITY = ValueRule("expected_quality", RejectReason.BAD_QUALITY, "is outside [0, 1]", _unit_interval)
#: The optional fields' rules, checked in this order after the cost (each a field of ``Outcome``).
OPTIONAL_VALUE_RULES = (PROPENSITY, LATENCY, ENERGY, EXPECTED_QUALITY)
#: Every numeric field's rule. Quality is required; a missing cost is priced from the tokens.
VALUE_RULES = (QUALITY, COST, PROMPT_TOKENS, COMPLETION_TOKENS, *OPTIONAL_VALUE_RULES)
#: A valid cost (given or priced) above :attr:`Limits.max_cost`.
COST_ABOVE_MAX = Rule(RejectReason.BAD_COST, "cost={value!r} is above data.max_cost={limit!r} (USD per call)")


def within_max_cost(cost: Any, limit: float) -> Any:
    """The max-cost rule: ``cost <= limit``, on one float (per row) or a float64 column (elementwise)."""
    return cost <= limit


@dataclass(frozen=True)
class Limits:
    """The settings of the rules for one file, the same on every reading path.

    ``max_cost``: a cost above it is rejected (:data:`COST_ABOVE_MAX`); ``inf`` sets no bound.
    ``text_numbers``: whether a number may be written as text (``"0.5"``); :meth:`of` makes it
    False for a typed file under ``--strict``.
    """

    max_cost: float = MAX_COST
    text_numbers: bool = True

    def __post_init__(self) -> None:
        if not self.max_cost > 0:  # NaN too
            raise DataError(f"max_cost must be a number > 0 (USD per call; inf: no bound), got {self.max_cost!r}")

    @classmethod
    def of(cls, file: Path, max_cost: float = MAX_COST, strict: bool = False) -> Limits:
        """The limits of ``file`` in a run with ``data.max_cost`` and ``--strict`` as given."""
        return cls(max_cost, text_numbers=not (strict and file.suffix.lower() in TYPED_SUFFIXES))


#: The limits of a run that sets none: ``data.max_cost`` at its default, not ``--strict``.
DEFAULT_LIMITS = Limits()

# --------------------------------------------------------------------------- row rules: structure

MISSING_FIELD = Rule(RejectReason.MISSING_COLUMN, "no {field!r} field")
BLANK_IDENTIFIER = Rule(RejectReason.MISSING_COLUMN, "{field} is missing or empty")
IDENTIFIER_TYPE = Rule(RejectReason.MISSING_COLUMN, "{field}={value!r} is not a string or integer")
QUERY_MISSING = Rule(RejectReason.EMPTY_QUERY, "query is missing")
QUERY_NOT_TEXT = Rule(RejectReason.BAD_QUERY, "query must be a string, got {type}")
QUERY_BLANK = Rule(RejectReason.EMPTY_QUERY, "query is empty")
QUALITY_BLANK = Rule(RejectReason.BLANK_SCORE, "quality is blank")
NO_COST = Rule(RejectReason.MISSING_COLUMN, "no cost, and no prompt_tokens and completion_tokens to price")
NO_PRICE = Rule(RejectReason.NO_PRICE, "no price for model {model!r} (see --prices)")
EMBEDDING_NOT_JSON = Rule(RejectReason.BAD_EMBEDDING, "embedding is not a JSON list")
EMBEDDING_NOT_LIST = Rule(RejectReason.BAD_EMBEDDING, "embedding must be a non-empty list of numbers")
EMBEDDING_NOT_NUMBER = Rule(RejectReason.BAD_EMBEDDING, "embedding holds a value that is not a number")
EMBEDDING_NOT_FINITE = Rule(RejectReason.BAD_EMBEDDING, "embedding values must be finite numbers")
TIMESTAMP_FORMAT = Rule(RejectReason.BAD_TIMESTAMP, "timestamp={text!r} is not ISO 8601")
#: The optional ``task`` (a query's group: a benchmark, a domain) is an identifier as ``query_id``
#: is: a non-empty string, or an integer read as its decimal string. Absent (null, an empty CSV
#: cell) it is no task; blank text or another type is refused, so that a typo never makes a task
#: of its own in a leave-one-task-out comparison. A query's task is that of its first accepted row
#: that has one; rows of a query with other tasks are not refused (the task is metadata, like the
#: embedding). Columnar: a block with a task that is not a non-blank string (or integer, in
#: Parquet) goes to the per-row path, which rejects it.
TASK_BLANK = Rule(RejectReason.BAD_TASK, "task is blank")
TASK_TYPE = Rule(RejectReason.BAD_TASK, "task={value!r} is not a string or integer")

# --------------------------------------------------------------------------- cross-row rules

CONFLICTING_TEXT = Rule(RejectReason.CONFLICTING_TEXT, "query_id {query_id!r} was first seen with different text")
DUPLICATE_OUTCOME = Rule(RejectReason.DUPLICATE_OUTCOME, "({query_id!r}, {model!r}) already has an outcome")
DUPLICATE_ACTION = Rule(RejectReason.DUPLICATE_OUTCOME, "query_id {query_id!r} already has a logged action")
EMBEDDING_LENGTH = Rule(RejectReason.BAD_EMBEDDING, "embedding has {length} values, earlier rows have {expected}")
INCOMPLETE_QUERY = Rule(RejectReason.INCOMPLETE_QUERY, "query {query_id!r} has {outcomes} of {models} models' outcomes")


def incomplete_row_content(query_id: str, query: str, model: str, quality: float, cost: float) -> dict[str, Any]:
    """The ``content`` of an ``incomplete query`` row in ``rejected.jsonl``: its accepted values.

    The rule is applied once every row is read, and an accepted row's raw fields are not kept.
    """
    return {"query_id": query_id, "query": query, "model": model, "quality": quality, "cost": cost}


# --------------------------------------------------------------------------- lines the readers cannot parse

LINE_NOT_UTF8 = Rule(RejectReason.INVALID_UTF8, "{error}")
MALFORMED_JSON = Rule(RejectReason.MALFORMED_LINE, "invalid JSON: {error}")
TRUNCATED_JSON = Rule(RejectReason.TRUNCATED_LINE, "invalid JSON: {error}")
NOT_AN_OBJECT = Rule(RejectReason.MALFORMED_LINE, "a line must be a JSON object")
MALFORMED_CSV = Rule(RejectReason.MALFORMED_LINE, "bad CSV: {error}")
#: A CSV record over several lines that is not valid CSV: its first line is rejected alone and
#: the lines after it are read again (:func:`data.reading.first_unterminated_quote`).
UNTERMINATED_QUOTE = Rule(RejectReason.MALFORMED_LINE, 'unterminated quote (") opened on line {line}: {error}')
FIELD_COUNT = Rule(RejectReason.MALFORMED_LINE, "{fields} fields, header has {width}")
FIELD_NOT_UTF8 = Rule(RejectReason.INVALID_UTF8, "field is not valid UTF-8")

# --------------------------------------------------------------------------- decision logs (data.decision_log)

ALREADY_DECIDED = Rule(RejectReason.DUPLICATE_OUTCOME, "query_id {query_id!r} was already decided")
SECOND_FEEDBACK = Rule(RejectReason.DUPLICATE_OUTCOME, "query_id {query_id!r} already has feedback")
FALLBACK_DECISION = Rule(RejectReason.NOT_POLICY_CHOICE, "served by {model!r} after {failed!r} failed")
FALLBACK_FEEDBACK = Rule(RejectReason.NOT_POLICY_CHOICE, "feedback on the fallback-served {query_id!r}")
CASCADE_DECISION = Rule(
    RejectReason.CASCADE_DECISION, "{model!r} answered a cascade of {calls} call(s), not one routing choice"
)
CASCADE_FEEDBACK = Rule(RejectReason.CASCADE_DECISION, "feedback on the cascade's answer {query_id!r}")
ORPHAN_FEEDBACK = Rule(RejectReason.ORPHAN_FEEDBACK, "no decision for query_id {query_id!r}")


# --------------------------------------------------------------------------- the rules' column forms


def is_blank(text: str) -> bool:
    """An empty text or one of whitespace only (``str.isspace``: Unicode's definition)."""
    return not text or text.isspace()


def all_non_blank(texts: Any) -> bool:
    """:func:`is_blank` is false for every text of a non-null Arrow string column.

    A text with a visible ASCII character is not blank; the few others are checked in Python.
    """
    visible = pc.match_substring_regex(texts, "[!-~]")
    if pc.all(visible).as_py() is not False:
        return True
    return not any(is_blank(text) for text in texts.filter(pc.invert(visible)).to_pylist())


def first_items(group: np.ndarray, n_groups: int) -> np.ndarray:
    """The index of the first item of each of ``n_groups`` groups (every group has an item).

    ``group`` holds each item's group, items in reading order; the assignment in reverse order
    leaves each group's earliest index.
    """
    first = np.empty(n_groups, dtype=np.int64)
    first[group[::-1]] = np.arange(len(group) - 1, -1, -1)
    return first


def conflicting_texts(texts: Any, group: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The conflicting-text rule on columns: which items' text differs from their query's first.

    ``texts``: an Arrow string column of items (rows, or the records of a wide file) in reading
    order; ``group``: each item's query; ``first``: each query's first item (:func:`first_items`).
    """
    differs = pc.not_equal(texts, texts.take(first[group]))
    return np.asarray(differs.to_numpy(zero_copy_only=False), dtype=bool)


def first_outcomes(query: np.ndarray, model: np.ndarray | None, n_models: int) -> np.ndarray:
    """The duplicate-outcome rule on columns: which rows are the first of their (query, model).

    Rows in reading order; every later row of an outcome is a ``duplicate outcome``. ``model``
    None: bandit feedback, where a query has one logged outcome, whatever its model.
    """
    keys = query if model is None else query.astype(np.int64) * n_models + model
    _, first = np.unique(keys, return_index=True)  # a stable sort: the first occurrence's index
    firsts = np.zeros(len(keys), dtype=bool)
    firsts[first] = True
    return firsts
