"""Micro-batching of concurrent ``/route`` scoring (serving/batching.py): one call for the
queries that arrive together, the same scores as one call each, failures kept to their request."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import torch

from serving.batching import ScoreBatcher
from serving.policy import load_policy


class CountingPolicy:
    """A stand-in policy: the score of a query is its length; ``__fail__`` in a call raises."""

    estimated_objectives = ()  # USD only

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def scores(self, queries: list[str], cost_weight: float) -> torch.Tensor:
        self.calls.append(list(queries))
        if "__fail__" in queries:
            raise RuntimeError("cannot score __fail__")
        return torch.tensor([[float(len(q)), cost_weight] for q in queries])


async def _scores(batcher: ScoreBatcher, policy: Any, query: str, cost_weight: float) -> list[float]:
    """One request's row of scores."""
    return (await batcher.scored(policy, query, cost_weight)).scores[0]


async def _gather(batcher: ScoreBatcher, policy: Any, queries: list[str], cost_weight: float = 1.0) -> list[Any]:
    """Score ``queries`` as concurrent requests; results or the exceptions raised."""
    return await asyncio.gather(*(_scores(batcher, policy, q, cost_weight) for q in queries), return_exceptions=True)


def test_concurrent_queries_share_one_call() -> None:
    policy = CountingPolicy()
    results = asyncio.run(_gather(ScoreBatcher(), policy, ["a", "bb", "ccc"]))
    assert results == [[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]]
    assert policy.calls == [["a", "bb", "ccc"]]


def test_batches_are_split_by_weight_and_size() -> None:
    policy = CountingPolicy()

    async def run() -> list[Any]:
        batcher = ScoreBatcher(max_batch=2)
        return await asyncio.gather(
            *(_scores(batcher, policy, q, w) for q, w in [("a", 1.0), ("b", 2.0), ("c", 1.0), ("d", 1.0)])
        )

    assert asyncio.run(run()) == [[1.0, 1.0], [1.0, 2.0], [1.0, 1.0], [1.0, 1.0]]
    assert sorted(policy.calls) == [["a", "c"], ["b"], ["d"]]


def test_a_failing_query_fails_only_its_own_request() -> None:
    policy = CountingPolicy()
    ok, failed, also_ok = asyncio.run(_gather(ScoreBatcher(), policy, ["a", "__fail__", "ccc"]))
    assert ok == [1.0, 1.0] and also_ok == [3.0, 1.0]
    assert isinstance(failed, RuntimeError) and "__fail__" in str(failed)


def test_sequential_requests_are_not_delayed_into_batches() -> None:
    policy = CountingPolicy()

    async def one_by_one() -> None:
        batcher = ScoreBatcher()
        for query in ["a", "b", "c"]:
            await batcher.scored(policy, query, 0.0)

    asyncio.run(one_by_one())
    assert policy.calls == [["a"], ["b"], ["c"]]


def test_batched_scores_equal_single_scores_of_the_real_policy(demo_policy: Path) -> None:
    torch.set_num_threads(1)  # as serve.py runs
    policy = load_policy(demo_policy)
    queries = [f"query {i}: " + "prove the theorem about primes " * (i % 7) for i in range(40)]
    batched = asyncio.run(_gather(ScoreBatcher(), policy, queries, policy.default_cost_weight))
    single = [policy.scores([q], policy.default_cost_weight)[0].tolist() for q in queries]
    assert batched == single


def test_batched_costs_equal_single_costs_of_the_real_policy(demo_policy: Path) -> None:
    """Under a live budget the batcher asks ``score_costs``: each query's costs are its own."""
    torch.set_num_threads(1)
    policy = load_policy(demo_policy)
    queries = [f"query {i}: " + "summarise the report " * (i % 5) for i in range(12)]

    async def run() -> list[Any]:
        batcher = ScoreBatcher()
        return await asyncio.gather(*(batcher.scored(policy, q, 300.0, with_costs=True) for q in queries))

    batched = asyncio.run(run())
    for query, scored in zip(queries, batched, strict=True):
        scores, costs = policy.score_costs([query], 300.0).tensor_split(2, dim=1)
        assert scored.scores == scores.tolist() and scored.costs == costs.tolist()
