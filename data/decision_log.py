"""Join a service's decision log (docs/contracts.md §4) into bandit-feedback rows.

``serve.py --decision-log FILE`` appends one JSON line per routed request,
``{query_id, query, model, propensity, cost_weight, policy_version, timestamp}`` (plus token
counts when proxied), and ``POST /feedback`` appends ``{query_id, quality, cost}`` to the same
file. A file whose first record carries ``policy_version`` (or is a feedback record) is read as
such a log; its first record is the first line that parses as a JSON object, so that a torn first
line (a crash mid-write) is one rejected line, not a log read as the wrong kind. The logs of
several workers (``serve.py --workers``: a feedback may be appended by another worker than its
decision) are joined together, as one log:

* a decision with feedback becomes one canonical bandit-feedback row: its query, model and
  propensity, the feedback's quality, and the feedback's cost (else the decision's token counts,
  priced by the price table);
* a decision still waiting for feedback is **pending**: counted, neither accepted nor rejected;
* feedback for a query_id with no decision is rejected as ``feedback without decision``; a second
  feedback for one decision as ``duplicate outcome``; a decision the service served by falling
  back (``fallback_from``: the policy did not choose that model, so the propensity is not its
  probability) as ``not the policy's choice``, and its feedback with it; a cascade's answer
  (``cascade``: several calls, ``serve.py --cascade``) as ``cascade decision``, and its feedback.

The decision's line number locates the joined row in ``rejected.jsonl``. The rejections' reasons and
messages are rules of :mod:`data.rules`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from data import rules
from data.reading import Item, ParsedRow, RowError, read_file
from data.rules import Rule

DECISION_LOG_SUFFIX = ".jsonl"  # serve.py writes JSON lines

DECISION_FIELDS = (
    "query_id",
    "query",
    "model",
    "propensity",
    "timestamp",
    "prompt_tokens",
    "completion_tokens",
)


@dataclass(frozen=True)
class Pending:
    """A decision still waiting for feedback (counted in ``ReadStats.pending``)."""

    file: str
    position: int


def is_decision(fields: dict) -> bool:
    """A decision record of the service's log."""
    return "policy_version" in fields


def is_feedback(fields: dict) -> bool:
    """A feedback record of the service's log: a query_id and its quality, no model or query."""
    return "query_id" in fields and "quality" in fields and "model" not in fields and "query" not in fields


def starts_decision_log(items: Iterable[Item]) -> bool:
    """Whether a file read as ``items`` is a decision log: its first record is a decision or a feedback.

    The first record is the first item that parsed; lines before it that did not (a torn first
    line) do not decide. With ``serve.py --workers`` a worker's log may start with feedback on
    another worker's decision.
    """
    first = next((item for item in items if isinstance(item, ParsedRow)), None)
    return first is not None and (is_decision(first.fields) or is_feedback(first.fields))


def is_decision_log(path: Path) -> bool:
    """Whether the file at ``path`` is a service decision log (JSON lines; :func:`starts_decision_log`)."""
    return path.suffix.lower() == DECISION_LOG_SUFFIX and starts_decision_log(read_file(path))


def join_decisions(items: Iterator[Item]) -> Iterator[Item | Pending]:
    """Pass a canonical log through unchanged; join a decision log (:func:`starts_decision_log`) into feedback rows."""
    head: list[Item] = []  # the items up to the first record that parsed
    for item in items:
        head.append(item)
        if isinstance(item, ParsedRow):
            break
    if starts_decision_log(head):
        yield from join_decision_records(chain(head, items))
    else:
        yield from head
        yield from items


def join_decision_records(items: Iterator[Item]) -> Iterator[Item | Pending]:
    """Join decision and feedback records (of one log, or of every worker's log together)."""
    decisions: dict[str, ParsedRow] = {}
    set_aside: dict[str, Rule] = {}  # decisions that are not one routing choice: the rule their feedback gets
    feedback: dict[str, ParsedRow] = {}
    for item in items:
        if not isinstance(item, ParsedRow):
            yield item
            continue
        query_id = str(item.fields.get("query_id"))
        if is_decision(item.fields):
            if query_id in decisions:
                yield _error(item, rules.ALREADY_DECIDED, query_id=query_id)
            elif item.fields.get("fallback_from") is not None:
                set_aside[query_id] = rules.FALLBACK_FEEDBACK
                yield _error(
                    item, rules.FALLBACK_DECISION, model=item.fields.get("model"), failed=item.fields["fallback_from"]
                )
            elif isinstance(item.fields.get("cascade"), list):
                set_aside[query_id] = rules.CASCADE_FEEDBACK
                steps = item.fields["cascade"]
                calls = sum(1 for step in steps if isinstance(step, dict) and step.get("action") == "call")
                yield _error(item, rules.CASCADE_DECISION, model=item.fields.get("model"), calls=calls)
            else:
                decisions[query_id] = item
        elif query_id in feedback:
            yield _error(item, rules.SECOND_FEEDBACK, query_id=query_id)
        else:
            feedback[query_id] = item
    for query_id, answer in feedback.items():
        if query_id in set_aside:
            yield _error(answer, set_aside[query_id], query_id=query_id)
        elif query_id not in decisions:
            yield _error(answer, rules.ORPHAN_FEEDBACK, query_id=query_id)
    for query_id, decision in decisions.items():
        reply = feedback.get(query_id)
        if reply is None:
            yield Pending(decision.file, decision.position)
            continue
        fields = {key: decision.fields.get(key) for key in DECISION_FIELDS}
        fields["quality"] = reply.fields.get("quality")
        if reply.fields.get("cost") is not None:
            fields["cost"] = reply.fields["cost"]
        yield ParsedRow(decision.file, decision.position, decision.locator, fields)


def _error(item: ParsedRow, rule: Rule, **values: object) -> RowError:
    """The record ``item`` rejected by ``rule``; its content is the record as text."""
    return RowError.by(rule, item.file, item.position, item.locator, str(item.fields), **values)
