"""The service's decision logs, read as they grow: each record once, joined into rounds as feedback arrives.

``serve.py --decision-log`` appends decisions and feedback to one JSONL file per worker
(docs/contracts.md §5); a feedback may land in another worker's file than its decision, before or
after it. :class:`DecisionStream` reads every decision log of a folder from where it stopped (its
byte offset per file) up to the last complete line, and joins as §5.5 does, incrementally:

* a decision waits (``pending``) until its feedback comes; a feedback read before its decision
  waits (``early``) until the decision comes;
* the pair becomes a :class:`Round`: the query, the served model, the exact propensity, the cost
  weight it was decided at, the quality and the cost (the feedback's, else the decision's token
  counts priced by the price table);
* a second decision or feedback for a joined or waiting ``query_id`` is rejected as
  ``duplicate outcome``, a decision served by a fallback as ``not the policy's choice``, a bad
  value by its rule of :mod:`data.rules`, a model the learner does not know as ``missing column``.

A repeat is recognised among the latest ``remembered`` joined ids (the checkpoint holds them: about
35 bytes each); an older one would wait for a decision that never comes, and is never counted.
Its whole state (offsets, waiting records, joined ids, rejection counts) is :meth:`state`, which
the follower writes in the same atomic checkpoint as the statistics it fed: after a kill, a
restart from the checkpoint reads from the same offsets and neither loses nor double-counts a
record. A line without its newline yet (a record being written) is left for the next poll.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data import rules
from data.decision_log import DECISION_LOG_SUFFIX, is_decision, is_feedback
from data.prices import PriceTable
from data.rules import Invalid
from data.schema import RejectReason


@dataclass(frozen=True)
class Round:
    """One decision joined with its feedback."""

    query_id: str
    query: str
    action: int  # index of the served model
    propensity: float
    cost_weight: float
    quality: float
    cost: float


@dataclass(frozen=True)
class Rejection:
    """A record that cannot become a round: where it is, why, and what it held."""

    file: str
    line: int
    reason: str
    detail: str

    def as_json(self) -> dict[str, Any]:
        """The ``rejected.jsonl`` record (docs/contracts.md §1.8 fields)."""
        return {"file": self.file, "line": self.line, "reason": self.reason, "detail": self.detail}


class DecisionStream:
    """Decision and feedback records of every ``*.jsonl`` decision log in ``folder``, joined incrementally."""

    def __init__(
        self,
        folder: Path,
        models: list[str],
        prices: PriceTable,
        max_bytes: int = 16 * 2**20,
        remembered: int = 100_000,
    ) -> None:
        self.folder = folder
        self.models = {name: index for index, name in enumerate(models)}
        self.prices = prices
        self.max_bytes = max_bytes  # read at most this much of one file per poll
        self.offsets: dict[str, int] = {}  # file name -> bytes consumed
        self.lines: dict[str, int] = {}  # file name -> lines consumed
        self.pending: dict[str, dict[str, Any]] = {}  # query_id -> decision waiting for feedback
        self.early: dict[str, dict[str, Any]] = {}  # query_id -> feedback waiting for its decision
        self.remembered = remembered  # joined ids kept to refuse a repeat (the latest ones)
        self.joined: dict[str, None] = {}  # in joining order
        self.rejected: Counter[str] = Counter()

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly here (JSON-serialisable)."""
        return {
            "offsets": dict(self.offsets),
            "lines": dict(self.lines),
            "pending": dict(self.pending),
            "early": dict(self.early),
            "joined": list(self.joined),
            "rejected": dict(self.rejected),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        self.offsets, self.lines = dict(state["offsets"]), dict(state["lines"])
        self.pending, self.early = dict(state["pending"]), dict(state["early"])
        self.joined, self.rejected = dict.fromkeys(state["joined"]), Counter(state["rejected"])

    def files(self) -> list[Path]:
        """The folder's decision logs, by name (a file whose first line is not yet complete waits)."""
        return sorted(
            path for path in self.folder.glob(f"*{DECISION_LOG_SUFFIX}") if path.is_file() and _starts_log(path)
        )

    def poll(self) -> tuple[list[Round], list[Rejection]]:
        """Read what was appended since the last poll (at most ``max_bytes`` per file); rounds in reading order."""
        rounds: list[Round] = []
        rejections: list[Rejection] = []
        for path in self.files():
            name = path.name
            offset = self.offsets.get(name, 0)
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read(self.max_bytes)
                if b"\n" not in chunk and len(chunk) == self.max_bytes:  # one line longer than a poll reads
                    chunk += handle.readline()
            end = chunk.rfind(b"\n") + 1
            line = self.lines.get(name, 0)
            for raw in chunk[:end].splitlines():
                line += 1
                self._record(raw, name, line, rounds, rejections)
            self.offsets[name], self.lines[name] = offset + end, line
        for rejection in rejections:
            self.rejected[rejection.reason] += 1
        return rounds, rejections

    def _record(self, raw: bytes, file: str, line: int, rounds: list[Round], rejections: list[Rejection]) -> None:
        """Take one line: wait, join, or reject it."""
        if not raw.strip():
            return
        try:
            fields = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            rejections.append(Rejection(file, line, RejectReason.MALFORMED_LINE.value, f"invalid JSON: {error}"))
            return
        if not isinstance(fields, dict) or not isinstance(fields.get("query_id"), str):
            rejections.append(Rejection(file, line, RejectReason.MALFORMED_LINE.value, "not a decision or feedback"))
            return
        query_id = fields["query_id"]
        try:
            if is_decision(fields):
                self._decision(query_id, fields, rounds)
            elif is_feedback(fields):
                self._feedback(query_id, fields, rounds)
            else:
                raise Invalid(RejectReason.MALFORMED_LINE, "neither a decision nor a feedback record")
        except Invalid as invalid:
            rejections.append(Rejection(file, line, invalid.reason.value, invalid.detail))

    def _decision(self, query_id: str, fields: dict[str, Any], rounds: list[Round]) -> None:
        if query_id in self.pending or query_id in self.joined:
            raise rules.ALREADY_DECIDED.invalid(query_id=query_id)
        if fields.get("fallback_from") is not None:
            self.early.pop(query_id, None)  # its feedback, if it came first, goes with it
            raise rules.FALLBACK_DECISION.invalid(model=fields.get("model"), failed=fields["fallback_from"])
        if fields.get("model") not in self.models:
            raise Invalid(RejectReason.MISSING_COLUMN, f"model {fields.get('model')!r} is not one of the learner's")
        query = fields.get("query")
        if not isinstance(query, str) or rules.is_blank(query):
            raise rules.QUERY_BLANK.invalid()
        rules.PROPENSITY.check(_number(fields.get("propensity"), rules.PROPENSITY))
        weight = _number(fields.get("cost_weight"), rules.COST)
        decision = {
            key: fields.get(key) for key in ("query", "model", "propensity", "prompt_tokens", "completion_tokens")
        }
        decision["cost_weight"] = rules.COST.check(weight)
        feedback = self.early.pop(query_id, None)
        if feedback is None:
            self.pending[query_id] = decision
        else:
            rounds.append(self._join(query_id, decision, feedback))

    def _feedback(self, query_id: str, fields: dict[str, Any], rounds: list[Round]) -> None:
        if query_id in self.joined or query_id in self.early:
            raise rules.SECOND_FEEDBACK.invalid(query_id=query_id)
        feedback = {"quality": fields.get("quality"), "cost": fields.get("cost")}
        decision = self.pending.pop(query_id, None)
        if decision is None:
            self.early[query_id] = feedback
        else:
            rounds.append(self._join(query_id, decision, feedback))

    def _join(self, query_id: str, decision: dict[str, Any], feedback: dict[str, Any]) -> Round:
        """The round of a decision and its feedback; the id counts as joined even when a value is bad."""
        self.joined[query_id] = None
        if len(self.joined) > self.remembered:
            del self.joined[next(iter(self.joined))]
        quality = rules.QUALITY.check(_number(feedback["quality"], rules.QUALITY))
        cost = feedback["cost"]
        if cost is None:
            cost = self._priced(decision)
        cost = rules.COST.check(_number(cost, rules.COST))
        if not rules.within_max_cost(cost, rules.MAX_COST):
            raise rules.COST_ABOVE_MAX.invalid(value=cost, limit=rules.MAX_COST)
        return Round(
            query_id,
            decision["query"],
            self.models[decision["model"]],
            float(decision["propensity"]),
            float(decision["cost_weight"]),
            quality,
            cost,
        )

    def _priced(self, decision: dict[str, Any]) -> float:
        """The decision's token counts priced by the table (no feedback cost)."""
        prompt, completion = decision.get("prompt_tokens"), decision.get("completion_tokens")
        if prompt is None or completion is None:
            raise rules.NO_COST.invalid()
        price = self.prices.get(decision["model"])
        if price is None:
            raise rules.NO_PRICE.invalid(model=decision["model"])
        return price.cost(int(prompt), int(completion))


def _number(value: Any, rule: rules.ValueRule) -> float:
    """``value`` as a finite-or-not float; anything that is not a JSON number is rejected by ``rule``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise rule.not_a_number(value)
    number = float(value)
    if math.isnan(number):
        raise rule.not_a_number(value)
    return number


def _starts_log(path: Path) -> bool:
    """Whether the file's first complete line is a decision or feedback record."""
    with open(path, "rb") as handle:
        first = handle.readline()
    if not first.endswith(b"\n"):
        return False
    try:
        fields = json.loads(first.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return True  # a torn first line of a decision log (§5.4): read on, and it is rejected
    return isinstance(fields, dict) and (is_decision(fields) or is_feedback(fields))
