"""The service's spend controls together: the live budget and its bookkeeping, the price table, sessions.

:class:`Spending` is what :class:`serving.router.Router` asks about money: the weight to route at
under a budget, where to book a decision's predicted cost, what to do with an actual cost. It is
built once per service process (:meth:`Spending.build`) over the memory the workers share
(:mod:`serving.shared_memory`), so every worker of ``--workers N`` sees one budget, one price
table and one set of sessions.

Why decisions are booked late: charging the budget takes its lock and a few microseconds of
Python per call; booking the decisions of :data:`BOOK_WITHIN_S` in one call (and before an actual
cost corrects a prediction, or the metrics are read) keeps the controller's cost per request small
(BENCHMARKS.md, "Live budget"). The weight a request reads then lags the decisions of the last
:data:`BOOK_WITHIN_S` (a few hundred at thousands of requests per second), which the integral
controller, steering over about a thousand queries, does not notice: the service's test holds every
window of 1,000 requests within ±5% of the budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path

from serving.budget import Account, BudgetController, Charge
from serving.metrics import Metrics
from serving.policy import ServingPolicy
from serving.pricing import Pricing, read_price_file
from serving.sessions import Sessions
from serving.settings import Settings
from serving.shared_memory import SharedMemory
from serving.tenants import Tenant
from serving.workers import PRICES_FILE, SHARED_FILE

#: Bytes of the memory the workers share, besides 64 per budget account: room for the pending
#: costs and the sessions; untouched pages cost no memory.
SHARED_BYTES = 32 * 1024 * 1024
#: Seconds a decision waits at most to be charged to the live budget (:meth:`Spending.book`).
BOOK_WITHIN_S = 0.05
#: Seconds after which an actual cost that found no prediction is tried again, once (:meth:`Spending.correct`).
CORRECTION_RETRY_S = 0.2


class Spending:
    """The live budget (None: none), the price table and the sessions (None: none) of one process."""

    def __init__(
        self,
        pricing: Pricing,
        budget: BudgetController | None = None,
        sessions: Sessions | None = None,
        service_budget: bool = False,
    ) -> None:
        """``service_budget``: ``--budget`` is set, so requests without a budget of their own use it."""
        self.pricing = pricing
        self.budget = budget
        self.sessions = sessions
        self.service_account = budget.index("") if budget is not None and service_budget else None
        self._unbooked: list[tuple[str, Charge]] = []
        self._booking = False

    @classmethod
    def none(cls) -> Spending:
        """No budget, no sessions, the policy's own prices: a router of one process without them."""
        return cls(Pricing({}, SharedMemory(4096), None))

    @classmethod
    def build(
        cls,
        settings: Settings,
        tenants: Collection[Tenant],
        known_models: Collection[str],
        policy: ServingPolicy,
        state_dir: Path | None,
    ) -> Spending:
        """The budget's accounts (``--budget``, then the tenants with a budget), the price table
        (``--prices``, applied to ``policy``) and the sessions, in memory every worker shares.

        Raises:
            ValueError: the price file is invalid (one line naming it).
        """
        accounts = [
            Account(t.name, t.budget, policy.default_cost_weight if t.cost_weight is None else t.cost_weight)
            for t in tenants
            if t.budget is not None
        ]
        if settings.budget is not None:
            accounts.insert(0, Account("", settings.budget, policy.default_cost_weight))
        memory = SharedMemory(SHARED_BYTES + 64 * len(accounts), state_dir / SHARED_FILE if state_dir else None)
        prices = read_price_file(settings.prices, known_models) if settings.prices else {}
        pricing = Pricing(prices, memory, state_dir / PRICES_FILE if state_dir else None)
        pricing.apply(policy)
        budget = BudgetController(accounts, memory, settings.budget_step) if accounts else None
        switch_cost = settings.session_switch_cost
        sessions = Sessions(memory, switch_cost, settings.session_ttl) if switch_cost is not None else None
        return cls(pricing, budget, sessions, settings.budget is not None)

    def account(self, tenant: Tenant | None) -> int | None:
        """The budget account a request of ``tenant`` is charged to: its own, else ``--budget``'s, else None."""
        if self.budget is not None and tenant is not None and tenant.budget is not None:
            return self.budget.index(tenant.name)
        return self.service_account

    def weight(self, account: int) -> float:
        """The account's weight now: decisions are booked together, within :data:`BOOK_WITHIN_S`
        (module docstring), so it may lag the latest ones by that much."""
        assert self.budget is not None
        return self.budget.weight(account)

    def book(self, query_ids: list[str], charges: list[Charge]) -> None:
        """Keep decisions for the budget until it is next read (:meth:`weight`), or for
        :data:`BOOK_WITHIN_S` at most (module docstring)."""
        self._unbooked.extend(zip(query_ids, charges, strict=True))
        if self._booking:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.book_now()
            return
        self._booking = True  # one timer at a time, however often the weight is read (and books) meanwhile
        loop.call_later(BOOK_WITHIN_S, self._book_on_time)

    def _book_on_time(self) -> None:
        """The timer of :meth:`book`: book what is waiting; the next decision starts another timer."""
        self._booking = False
        self.book_now()

    def book_now(self) -> None:
        """Charge every decision not booked yet (:meth:`serving.budget.BudgetController.charge`)."""
        unbooked, self._unbooked = self._unbooked, []
        if unbooked and self.budget is not None:
            self.budget.charge([query_id for query_id, _ in unbooked], [charge for _, charge in unbooked])

    def correct(self, query_id: str, actual: float, metrics: Metrics, retry: bool = True) -> None:
        """Give the budget (if any) a routed query's actual cost; count in ``metrics`` what it could not use.

        A feedback can overtake its decision's booking: the feedback may reach another worker
        before the deciding one booked. So this worker books what it has first, and a cost that
        finds no prediction is tried once more after :data:`CORRECTION_RETRY_S`.
        """
        if self.budget is None:
            return
        self.book_now()
        if self.budget.correct(query_id, actual):
            metrics.budget_corrections.labels("applied").inc()
        elif retry:
            asyncio.get_running_loop().call_later(CORRECTION_RETRY_S, self.correct, query_id, actual, metrics, False)
        else:
            metrics.budget_corrections.labels("unmatched").inc()

    def observe(self, metrics: Metrics) -> None:
        """Book what is waiting, then set the budget's gauges in ``metrics`` (before each ``/metrics``)."""
        if self.budget is not None:
            self.book_now()
            metrics.observe_budget(self.budget.snapshot())
