"""Choosing a model from scores (the exploration rule) and the JSONL decision log.

The rule (:class:`Exploration`, docs/contracts.md §4.1 and §5.2) is greedy, ε-greedy
(``--explore-epsilon``) or softmax over the scores (``--explore softmax --explore-temperature
T``), optionally with a guaranteed minimum share per model (``--explore-floor P``, for the models
of ``--explore-floor-models`` or all) and models that the policy does not know yet, each explored
with exactly that share (``--explore-new-models``). Every rule goes through one code path: the
probability of each allowed model, then one seeded draw from it (``--explore-seed``).

Decision log format (docs/contracts.md §5), one JSON object per line, appended:

- a **decision**: ``{"query_id", "query", "model", "propensity", "cost_weight",
  "policy_version", "timestamp"}``; proxied requests add ``"prompt_tokens"`` and
  ``"completion_tokens"`` when the backend reported usage, and ``"fallback_from"`` (the model
  the policy chose) when a backend failure made the proxy serve another model.
- a **feedback**: ``{"query_id", "quality", "cost"}`` (``cost`` is null when not given).

``query`` is the text (``--log-queries full``), its sha256 hex (``hash``) or null (``none``).
``propensity`` is the exact probability with which the service chose ``model``: the chosen
model's entry of :meth:`Exploration.probabilities` for the request's scores and allowed models
(e.g. ``1 - ε + ε/K`` for the greedy model and ``ε/K`` for another under ε-greedy over K allowed
models; 1 without exploration or for a scoring fallback).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from policies.faults import fault_point
from serving.settings import ExploreRule, LogQueries, Settings

logger = logging.getLogger("routerl.serving")


def best(scores: list[float], allowed: list[int]) -> int:
    """Index of the highest score among ``allowed`` (sorted); ties go to the lower index."""
    chosen = allowed[0]
    for index in allowed[1:]:
        if scores[index] > scores[chosen]:
            chosen = index
    return chosen


def ranking(scores: list[float], allowed: list[int]) -> list[int]:
    """``allowed`` from the highest score to the lowest; ties keep the lower index first.

    An index past ``scores`` (a new model, :attr:`Exploration.new_models`: no score) comes last.
    """
    scored = len(scores)
    return sorted(allowed, key=lambda index: (-scores[index] if index < scored else math.inf, index))


@dataclass(frozen=True)
class Exploration:
    """The exploration rule of the service: the probability of each model, and a draw from it.

    ``rule`` (``--explore``) gives the rule's own probabilities ``p_rule`` over the K allowed
    models:

    - ``greedy``: 1 for :func:`best`, 0 for the others;
    - ``epsilon``: ``1 − ε + ε/K`` for :func:`best`, ``ε/K`` for another (``--explore-epsilon``);
    - ``softmax``: ``exp(s_k / T) / Σ_j exp(s_j / T)`` over the allowed scores (Boltzmann
      exploration: the soft-max or Gibbs distribution of Sutton & Barto, *Reinforcement
      Learning*, 2nd ed. 2018, §2.8), computed as ``exp((s_k − max s) / T)``
      so that no term overflows. ``T`` (``--explore-temperature``) is in the policy's score
      units (§2.3 of docs/contracts.md): for a ``utility`` policy a model ``T`` below the best
      in quality − w·cost is chosen e⁻¹ ≈ 0.37 times as often as the best; T → 0 is greedy
      (ties shared), T → ∞ uniform.

    The floor (``--explore-floor P``) then mixes in a uniform share for the ``K_f`` floored
    models among the allowed ones (``floored``, model indices: ``--explore-floor-models``; None =
    every model): ``p_k = (1 − K_f·P)·p_rule_k + P·[k floored]``, so each floored model gets at
    least P and the whole still sums to 1. When ``K_f·P`` would reach 1 (a reloaded policy with
    more models; the start refuses it, :meth:`check_floor`), P is capped at ``1/K_f`` for that
    request: uniform over the floored models, nothing left for the rule.

    New models (``--explore-new-models``, :attr:`new_models`: named, but not models of the policy,
    so without a score) take the indices after the policy's K models, ``K + j`` for the j-th, and
    are floored models whose ``p_rule`` is 0: each allowed one gets exactly P, and the policy's
    allowed models share the remaining ``1 − n·P`` by the rule and its floor (n new models allowed
    in the request), so ``K_f`` above counts them too. A request that allows only new models is
    uniform over them. A new model that the policy knows (a promoted policy learned it) is an
    ordinary floored model, in :attr:`floored`.

    :meth:`choose` draws from exactly these probabilities and returns the drawn model's one as
    its propensity, so the decision log's ``propensity`` is the probability under the rule that
    chose, whatever the rule, the floor and the request's ``allowed_models``. The values are
    checked where they come from, as flags (:class:`serving.settings.Settings`).

    Attributes:
        rule: ``greedy``, ``epsilon`` or ``softmax``.
        epsilon: ε of the ``epsilon`` rule, in (0, 1].
        temperature: T of the ``softmax`` rule, finite and > 0.
        floor: P, in [0, 1); 0 = no floor.
        floored: indices of the floored models in the policy's ``models()``; None = every model.
        new_models: names of the models after the policy's (indices ``K``, ``K + 1``, ...), always
            floored, never scored; empty without ``--explore-new-models``.
    """

    rule: ExploreRule = "greedy"
    epsilon: float = 0.0
    temperature: float = 1.0
    floor: float = 0.0
    floored: frozenset[int] | None = None
    new_models: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings, models: Sequence[str]) -> Exploration:
        """The rule of ``settings`` for a policy with ``models``: floored names become indices, and
        the ``--explore-new-models`` that the policy knows are floored, the others appended.

        With ``--explore-new-models`` the floor applies to those and to the models of
        ``--explore-floor-models`` only (not to every model, the default without new models).
        """
        new = settings.explore_new_models or ()
        names = settings.explore_floor_models
        floored = None
        if names is not None or new:
            known_new = [name for name in new if name in models]
            floored = frozenset(models.index(name) for name in (*(names or ()), *known_new))
        return cls(
            settings.explore_rule,
            settings.explore_epsilon,
            settings.explore_temperature or 1.0,
            settings.explore_floor,
            floored,
            tuple(name for name in new if name not in models),
        )

    def check_floor(self, model_count: int) -> None:
        """Raise ``ValueError`` (naming the flags) unless the floor leaves the rule a share
        (``K_f·P < 1``, new models counted) for a policy of ``model_count`` models."""
        in_policy = model_count if self.floored is None else len(self.floored)
        floored = in_policy + len(self.new_models)
        if self.floor * floored >= 1.0:
            which = "--explore-floor-models" if self.floored is not None else "the policy's models"
            if self.new_models:
                which = f"{in_policy} in the policy, {len(self.new_models)} of --explore-new-models not in it"
            raise ValueError(
                f"--explore-floor {self.floor:g} for each of {floored} floored models ({which}) leaves "
                f"nothing to the rule; it must be < 1/{floored}"
            )

    def probabilities(self, scores: list[float], allowed: list[int]) -> list[float]:
        """The probability of each model: the policy's (``scores``' indices), then the new models
        (0 for a model not allowed)."""
        result = [0.0] * (len(scores) + len(self.new_models))
        for index, probability in zip(allowed, self._allowed_probabilities(scores, allowed), strict=True):
            result[index] = probability
        return result

    def choose(self, scores: list[float], allowed: list[int], rng: random.Random) -> tuple[int, float]:
        """Draw a model among ``allowed`` (sorted indices, new models' last): ``(index, its probability)``.

        One uniform draw from ``rng``, inverted through the cumulative probabilities in index
        order (a model of probability 0 is never drawn); the greedy rule without a floor draws
        nothing.
        """
        if self.rule == "greedy" and self.floor == 0.0:
            return best(scores, allowed), 1.0
        probabilities = self._allowed_probabilities(scores, allowed)
        draw = rng.random()
        cumulative = 0.0
        for index, probability in zip(allowed, probabilities, strict=True):
            cumulative += probability
            if draw < cumulative:
                return index, probability
        last = max(j for j, probability in enumerate(probabilities) if probability > 0.0)  # rounding
        return allowed[last], probabilities[last]

    def _allowed_probabilities(self, scores: list[float], allowed: list[int]) -> list[float]:
        """The probabilities of ``allowed``'s models, in its order: the rule's, then the floor.

        New models (indices past ``scores``, at the end of the sorted ``allowed``) get nothing from
        the rule and are floored; with no scored model allowed the floor is uniform over them.
        """
        scored = len(scores)
        if allowed[-1] < scored:  # no new model allowed: always so without --explore-new-models
            rule = self._rule_probabilities(scores, allowed)
        else:
            first_new = bisect.bisect_left(allowed, scored)
            rule = self._rule_probabilities(scores, allowed[:first_new]) if first_new else []
            rule += [0.0] * (len(allowed) - first_new)
        if self.floor == 0.0:
            return rule
        floored = [self.floored is None or index in self.floored or index >= scored for index in allowed]
        count = sum(floored)
        if count == 0:
            return rule
        floor = min(self.floor, 1.0 / count) if allowed[0] < scored else 1.0 / count
        kept = max(0.0, 1.0 - count * floor)
        return [kept * p + (floor if is_floored else 0.0) for p, is_floored in zip(rule, floored, strict=True)]

    def _rule_probabilities(self, scores: list[float], allowed: list[int]) -> list[float]:
        """``p_rule`` of ``allowed``'s models, in its order (greedy, ε-greedy or softmax)."""
        if self.rule == "softmax":
            top = max(scores[index] for index in allowed)
            weights = [math.exp((scores[index] - top) / self.temperature) for index in allowed]
            total = math.fsum(weights)
            return [weight / total for weight in weights]
        greedy = best(scores, allowed)
        epsilon = self.epsilon if self.rule == "epsilon" else 0.0
        share = epsilon / len(allowed)
        return [(1.0 - epsilon if index == greedy else 0.0) + share for index in allowed]


#: The fault points a record passes (:mod:`policies.faults`): before its line is written, and after.
_DECISION_POINTS = ("decision-start", "decision-written")
_FEEDBACK_POINTS = ("feedback-start", "feedback-written")

#: One encoder for every record (``json.dumps`` with options builds a new one per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def shown_query(query: str, log_queries: LogQueries) -> str | None:
    """What the service keeps (the decision log) or shows (the dashboard) of ``query`` under
    ``--log-queries``: the text (``full``), its sha256 hex (``hash``) or nothing (``none``)."""
    if log_queries == "full":
        return query
    if log_queries == "hash":
        return hashlib.sha256(query.encode("utf-8")).hexdigest()
    return None


def _now() -> str:
    """The current UTC time in ISO 8601 with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _ends_with_torn_line(path: Path) -> bool:
    """Whether the file at ``path`` is not empty and its last byte is not a newline."""
    with path.open("rb") as file:
        if file.seek(0, 2) == 0:
            return False
        file.seek(-1, 2)
        return file.read(1) != b"\n"


class DecisionLog:
    """Append-only JSONL file of decisions and feedback, safe to write from several threads.

    Each record is written with one ``write`` of a whole line and flushed at once, so that a
    crash loses at most the record being written and a reader never sees half a line from a
    finished write. A file that a crash left ending in the middle of a line is terminated with a
    newline when it is opened, before the first record is appended: the torn line is then
    rejected alone when the log is read, instead of swallowing the next record.
    """

    def __init__(self, path: Path, log_queries: LogQueries = "full") -> None:
        """Open ``path`` for appending (created with its folder if missing)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.log_queries = log_queries
        self._file = path.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()
        if _ends_with_torn_line(path):
            self._file.write("\n")
            logger.warning(
                "decision log %s ended with a torn line (a crash while it was written?); terminated it, "
                "so that a reader rejects that line alone and the next record starts a line of its own",
                path,
            )

    def _append(self, record: dict[str, Any], points: tuple[str, str]) -> None:
        """Write one record as one line, between its two fault points (:mod:`policies.faults`).

        ``points``: the kind's ``-start`` (nothing of the record written) and ``-written`` (the line
        written and flushed, the request not yet answered), e.g. :data:`_DECISION_POINTS`.
        """
        line = _ENCODER.encode(record) + "\n"
        with self._lock:
            fault_point(points[0])
            self._file.write(line)
            fault_point(points[1])

    def decision(
        self,
        *,
        query_id: str,
        query: str,
        model: str,
        propensity: float,
        cost_weight: float,
        policy_version: str,
        **extra: Any,
    ) -> None:
        """Append one routing decision (``extra``: optional fields such as usage tokens)."""
        self._append(
            {
                "query_id": query_id,
                "query": shown_query(query, self.log_queries),
                "model": model,
                "propensity": propensity,
                "cost_weight": cost_weight,
                "policy_version": policy_version,
                "timestamp": _now(),
                **extra,
            },
            _DECISION_POINTS,
        )

    def feedback(self, query_id: str, quality: float, cost: float | None) -> None:
        """Append the observed outcome of an earlier decision."""
        self._append({"query_id": query_id, "quality": quality, "cost": cost}, _FEEDBACK_POINTS)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._file.close()
