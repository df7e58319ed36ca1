"""Sessions: a conversation stays on its model unless switching is clearly better.

A conversation that changes model between turns changes voice, format and what it remembers of
the earlier turns' style; users of routers ask for "sticky" routing. The service keeps, per
session id, the model of the session's last turn; a later turn stays on it unless the policy's
advantage for switching exceeds ``--session-switch-cost``:

    choose best                 if score(best) − score(previous) > switch_cost
    choose previous             otherwise

with ``best`` the best-scoring allowed model and ``previous`` the session's model (if it is still
allowed and still scored: a model the policy dropped, or one the request or the tenant does not
allow, is left as if the session were new). The switching cost is in the policy's score units
(for ``utility`` policies, quality − w·cost: 0.05 means "switch only for five points of expected
quality, net of cost"). A session's first turn is decided as any request (exploration included); a
later turn is the deterministic rule above and is logged with propensity 1 and ``"session_turn":
true``, so that the decision log stays a valid log for off-policy evaluation.

The session id is the ``x-routerl-session`` header (``/route`` and the proxy) or, for the proxy
without that header, the OpenAI request's ``user`` field; sessions of different tenants never mix.
Sessions live in :class:`serving.shared_memory.KeyedTable` (:data:`SESSION_CAPACITY` entries,
shared by the workers of ``--workers N``): a session idle for ``--session-ttl`` seconds, or whose
entry another session took, starts again as a new one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from serving.decisions import best
from serving.shared_memory import KeyedTable, SharedMemory, key_of

#: Sessions remembered at once (24 bytes each).
SESSION_CAPACITY = 1 << 18
#: The header that names a session.
SESSION_HEADER = "x-routerl-session"


class Sessions:
    """The model of each live session, and the stay-or-switch rule (module docstring)."""

    def __init__(self, memory: SharedMemory, switch_cost: float, ttl_s: float) -> None:
        """Remember sessions in ``memory`` for ``ttl_s`` seconds; switch above ``switch_cost``."""
        self.table = KeyedTable(memory, SESSION_CAPACITY)
        self.switch_cost = switch_cost
        self.ttl_s = ttl_s
        self._model_keys: dict[str, int] = {}

    @staticmethod
    def _key(tenant: str, session: str) -> int:
        return key_of(f"{tenant}\0{session}")

    def previous(self, tenant: str, session: str, models: Sequence[str]) -> int | None:
        """The index in ``models`` of the session's last model; None for a new, expired or
        forgotten session, or one whose model is no longer in ``models``."""
        found = self.table.get(self._key(tenant, session))
        if found is None or time.time() - found[1] > self.ttl_s:
            return None
        for index, name in enumerate(models):
            if self._model_key(name) == found[0]:
                return index
        return None

    def _model_key(self, model: str) -> int:
        """``key_of(model)``, hashed once per model name."""
        key = self._model_keys.get(model)
        if key is None:
            key = self._model_keys[model] = key_of(model)
        return key

    def remember(self, tenant: str, session: str, model: str) -> None:
        """Record ``model`` as the session's model, now."""
        self.table.put(self._key(tenant, session), self._model_key(model), time.time())

    def choose(self, scores: list[float], allowed: list[int], previous: int) -> int:
        """Stay on ``previous`` (allowed and scored) unless the best allowed model beats it by
        more than the switching cost."""
        top = best(scores, allowed)
        return top if scores[top] - scores[previous] > self.switch_cost else previous
