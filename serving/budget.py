"""The live budget (``serve.py --budget USD``): the cost weight, steered so that spend stays on budget.

One exported policy scores every cost weight w (quality − w·cost, docs/contracts.md §2), so the
service can trade quality for cost per request. Holding a mean cost per query B is the
constrained problem max E[quality] s.t. E[cost] <= B, whose Lagrangian relaxation routes each
query at the multiplier w; the multiplier is found online by dual (sub)gradient ascent, as PPO's
budget mode does in training (:mod:`envs.rewards`; Boyd & Vandenberghe, *Convex Optimization*
§5; the "budget pacing" of Balseiro & Gur, *Management Science* 65(9), 2019). The update is taken
on log w (mirror descent: the weight stays > 0 and a step is relative, whatever the policy's
scale of w):

    log w ← clip(log w + η · (c − B) / B, log w₀ − R, log w₀ + R)

for every routed query of predicted cost c, with η = ``--budget-step``. Summed, log w is
proportional to the spend above budget so far: an integral controller, so a window's mean cost
returns to B after any change of traffic or prices instead of settling beside it. When a query's
actual cost becomes known (the proxy prices the backend's token usage; ``POST /feedback`` reports
``cost``), the difference actual − predicted is applied the same way, so the controller holds
the *actual* spend, not the policy's estimate of it. The clip (R = ln 10⁴ around the starting
weight w₀) keeps the multiplier from winding up while the budget is out of reach (above the
dearest routing, or below the cheapest).

Accounts: account 0 is ``--budget`` (every request without a budget of its own); a tenant with a
``budget`` (:mod:`serving.tenants`) has its own account. Every account lives in
:class:`serving.shared_memory.SharedMemory`, so the N workers of ``--workers N`` hold one budget
together, and a query's predicted cost waits there (:class:`serving.shared_memory.KeyedTable`,
:data:`PENDING_CAPACITY` entries) for its actual cost, whichever worker receives it. A prediction
overwritten before its cost arrived is never corrected (counted in
``routerl_budget_corrections_total{result="unmatched"}``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from serving.settings import DEFAULT_BUDGET_STEP
from serving.shared_memory import KeyedTable, SharedMemory, key_of

#: How far (in log w) the weight may move from where it started: a factor of 10⁴ either way.
WEIGHT_RANGE_LOG = math.log(1e4)
#: Queries over which the reported mean cost is averaged (exponentially weighted).
MEAN_COST_QUERIES = 1000
#: Predictions kept for their actual cost (24 bytes each).
PENDING_CAPACITY = 1 << 17

#: The cells of one account: log w, its starting log w₀, queries routed, spend (USD), mean cost.
_ACCOUNT = struct.Struct("<5d")
_LOG_WEIGHT = struct.Struct("<d")


@dataclass(frozen=True)
class Account:
    """One budget: its name (``""`` for ``--budget``), USD per query and starting weight."""

    name: str
    budget: float
    start_weight: float


class Charge(NamedTuple):
    """What one routed query costs an account: the account's index and its predicted cost (USD).

    A named tuple, not a dataclass: one is made for every routed query, and a tuple is made faster.
    """

    account: int
    predicted: float


class BudgetController:
    """The accounts' weights, moved by every predicted and every actual cost (module docstring)."""

    def __init__(self, accounts: Sequence[Account], memory: SharedMemory, step: float = DEFAULT_BUDGET_STEP) -> None:
        """Hold ``accounts`` in ``memory`` (initialized by the first worker to get there)."""
        if not math.isfinite(step) or step <= 0:
            raise ValueError(f"--budget-step must be a finite number > 0, got {step!r}")
        self.accounts = tuple(accounts)
        self.step = step
        self.memory = memory
        region = memory.region(len(self.accounts) * _ACCOUNT.size // 8)
        self.offsets = [region.offset + i * _ACCOUNT.size for i in range(len(self.accounts))]
        self.pending = KeyedTable(memory, PENDING_CAPACITY)
        region.initialize_once(self._initialize)

    def _initialize(self) -> None:
        for offset, account in zip(self.offsets, self.accounts, strict=True):
            start = math.log(account.start_weight) if account.start_weight > 0 else math.log(0.1 / account.budget)
            _ACCOUNT.pack_into(self.memory.buffer, offset, start, start, 0.0, 0.0, account.budget)

    def index(self, name: str) -> int:
        """The account of ``name`` (a tenant with a budget; ``""`` for ``--budget``)."""
        for index, account in enumerate(self.accounts):
            if account.name == name:
                return index
        raise KeyError(name)

    def weight(self, account: int) -> float:
        """The account's cost weight now (read without the lock: one aligned 8-byte value)."""
        return math.exp(_LOG_WEIGHT.unpack_from(self.memory.buffer, self.offsets[account])[0])

    def _move(self, account: int, cost: float, queries: int, predicted: float = 0.0) -> None:
        """Book ``cost`` (USD) in place of ``predicted`` for ``queries`` new queries: step log w by
        η·(cost − predicted − queries·B)/B, clipped; the caller holds the lock."""
        offset = self.offsets[account]
        budget = self.accounts[account].budget
        log_weight, start, count, spend, mean = _ACCOUNT.unpack_from(self.memory.buffer, offset)
        overspend = cost - predicted - queries * budget
        log_weight = min(
            max(log_weight + self.step * overspend / budget, start - WEIGHT_RANGE_LOG), start + WEIGHT_RANGE_LOG
        )
        mean += (cost - predicted - queries * mean) / MEAN_COST_QUERIES
        _ACCOUNT.pack_into(
            self.memory.buffer, offset, log_weight, start, count + queries, spend + cost - predicted, mean
        )

    def charge(self, query_ids: Sequence[str], charges: Sequence[Charge]) -> None:
        """Book routed queries at their predicted costs, and keep each prediction for its actual cost
        (:meth:`correct`); under one lock, with one step per account for the sum of its charges.

        The service books every decision of an event-loop iteration together
        (:class:`serving.spending.Spending`), so that the budget costs a few microseconds per query
        under load. The sum of the steps is the same as step by step, unless the clip is reached
        on the way.
        """
        totals: dict[int, list[float]] = {}
        for account, predicted in charges:
            total = totals.get(account)
            if total is None:
                totals[account] = [predicted, 1.0]
            else:
                total[0] += predicted
                total[1] += 1.0
        write = self.pending.write
        with self.memory.lock():
            for query_id, (account, predicted) in zip(query_ids, charges, strict=True):
                write(key_of(query_id), account, predicted)
            for account, (cost, queries) in totals.items():
                self._move(account, cost, int(queries))

    def correct(self, query_id: str, actual: float) -> bool:
        """Replace a routed query's predicted cost by its ``actual`` cost; False when the
        prediction is gone (never made here, already corrected, or overwritten)."""
        found = self.pending.pop(key_of(query_id))
        if found is None:
            return False
        account, predicted = found
        with self.memory.lock():
            self._move(account, actual, 0, predicted)
        return True

    def snapshot(self) -> list[dict[str, float | str]]:
        """Each account's name, budget, weight, queries, spend (USD) and mean cost, for metrics and reports."""
        with self.memory.lock():
            rows = [_ACCOUNT.unpack_from(self.memory.buffer, offset) for offset in self.offsets]
        return [
            {
                "account": account.name,
                "budget": account.budget,
                "cost_weight": math.exp(row[0]),
                "queries": row[2],
                "spend": row[3],
                "mean_cost": row[4],
            }
            for account, row in zip(self.accounts, rows, strict=True)
        ]
