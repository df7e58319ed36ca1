"""Micro-batching: the single queries of concurrent ``/route`` requests share one policy call.

Why: a TorchScript ``scores`` call has a fixed cost of about 0.1 ms on top of a few tens of µs
per query (BENCHMARKS.md), so under load scoring eight requests in one call costs about a third
of scoring them one by one (``--engine torchscript``). The native engine counts each query's terms
on its own and does the numpy work of a batch of up to 63 queries in one set of calls, and its
head once a batch (:meth:`policies.native_featurizer.NativeFeaturizer.hidden_few`): a query
costs it fewer µs in a batch of eight than alone (BENCHMARKS.md). Nothing waits for a batch to
fill: the first request of an event loop iteration schedules one flush with ``call_soon``, which
runs after every request that was already ready to run in that iteration has joined. An idle
server therefore scores each request at once, and a busy one scores whatever arrived together.

A batch whose call raises is scored again query by query, so that a query that makes the policy
fail affects only its own request, exactly as without batching. With one torch thread (as
``serve.py`` runs) a query's scores in a batch are bit-identical to its scores alone, for every
exported policy kind measured (LinUCB, PPO, kNN, logistic; ``tests/test_serve_batching.py``
checks the demo policy). The native engine's scores of a query in a batch equal its scores alone
within float64 rounding (sums in another order, and its heads' matrix products may round a row
differently in batches of other sizes; ``tests/test_native_featurizer.py``): the float32 scores
were bit for bit the same on every demo and RouterBench query measured, and a decision can differ
only where two models tie to the last bit. Under a live budget (:mod:`serving.budget`) the calls
are ``score_costs``, which give each model's predicted cost with its score from one featurization.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol


class Rows(Protocol):
    """A (N, columns) array: a torch tensor (``--engine torchscript``) or a numpy array (``native``)."""

    def tolist(self) -> Any:
        """The rows as lists of floats."""
        ...


class Scorer(Protocol):
    """What the batcher needs of a policy (:data:`serving.policy.ServingPolicy` has it)."""

    @property
    def estimated_objectives(self) -> tuple[str, ...]:
        """The objectives beside USD it estimates (docs/contracts.md §2.13); () for a USD-only policy."""
        ...

    def scores(self, queries: list[str], cost_weight: float | dict[str, float]) -> Rows:
        """Per-model scores ``[N, K]`` of ``queries``."""
        ...

    def score_costs(self, queries: list[str], cost_weight: float | dict[str, float]) -> Rows:
        """Per-model scores, then predicted costs, ``[N, 2K]``, of ``queries``."""
        ...

    def score_objective_costs(self, queries: list[str], cost_weight: float | dict[str, float]) -> Rows:
        """``score_costs``, then the predicted costs of each objective beside USD, ``[N, (2 + J)K]``."""
        ...


@dataclass(frozen=True)
class Scored:
    """The scores of some queries (a row per query) and, when asked for, their predicted costs."""

    scores: list[list[float]]
    costs: list[list[float]] | None = None
    # per query, the predicted cost of each objective beside USD, J·K values objective by objective
    objective_costs: list[list[float]] | None = None

    @classmethod
    def of(cls, policy: Scorer, queries: list[str], cost_weight: float | dict[str, float], with_costs: bool) -> Scored:
        """Score ``queries`` with one call: ``score_costs`` when ``with_costs``, ``score_objective_costs``
        when the policy estimates objectives beside USD (the service counts them)."""
        objectives = len(policy.estimated_objectives)
        if not with_costs and not objectives:
            return cls(policy.scores(queries, cost_weight).tolist())
        if not objectives:
            rows = policy.score_costs(queries, cost_weight).tolist()
            models = len(rows[0]) // 2 if rows else 0
            return cls([row[:models] for row in rows], [row[models:] for row in rows])
        rows = policy.score_objective_costs(queries, cost_weight).tolist()
        k = len(rows[0]) // (2 + objectives) if rows else 0
        return cls([row[:k] for row in rows], [row[k : 2 * k] for row in rows], [row[2 * k :] for row in rows])

    def row(self, index: int) -> Scored:
        """The scores (and costs) of query ``index`` alone."""
        return Scored(
            [self.scores[index]],
            None if self.costs is None else [self.costs[index]],
            None if self.objective_costs is None else [self.objective_costs[index]],
        )


#: Most queries in one batched call; more waiting queries go into further calls of the same flush.
MAX_BATCH = 64

#: Queries scored in one call share: the policy (by identity), the cost weight, whether costs are asked.
_Group = tuple[int, float, bool]


class ScoreBatcher:
    """Collects single-query scoring requests and answers them with batched ``scores`` calls."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        """Score at most ``max_batch`` queries per call."""
        self.max_batch = max_batch
        self._pending: dict[_Group, tuple[Scorer, list[tuple[str, asyncio.Future[Scored]]]]] = {}
        self._scheduled = False

    async def scored(self, policy: Scorer, query: str, cost_weight: float, with_costs: bool = False) -> Scored:
        """``policy``'s scores (and costs) of ``query`` at ``cost_weight``, computed together with
        concurrent queries.

        Raises:
            Exception: whatever scoring ``[query]`` alone raises.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Scored] = loop.create_future()
        key = (id(policy), cost_weight, with_costs)  # one call per policy and weight: a reload starts a new group
        self._pending.setdefault(key, (policy, []))[1].append((query, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        """Score every waiting query, one call per (policy, weight) group and ``max_batch`` slice."""
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for (_, cost_weight, with_costs), (policy, items) in pending.items():
            for start in range(0, len(items), self.max_batch):
                self._score(policy, cost_weight, with_costs, items[start : start + self.max_batch])

    @staticmethod
    def _score(
        policy: Scorer, cost_weight: float, with_costs: bool, items: list[tuple[str, asyncio.Future[Scored]]]
    ) -> None:
        """Answer ``items`` with one call; after a failure, with one call each."""
        try:
            scored = Scored.of(policy, [query for query, _ in items], cost_weight, with_costs)
        except Exception as exc:
            if len(items) > 1:
                for item in items:
                    ScoreBatcher._score(policy, cost_weight, with_costs, [item])
            elif not items[0][1].done():
                items[0][1].set_exception(exc)
            return
        for index, (_, future) in enumerate(items):
            if not future.done():  # a request cancelled while waiting (client gone)
                future.set_result(scored.row(index))
