"""Who sends a request, and in which conversation: its tenant and its session.

:class:`serving.auth.AuthMiddleware` puts the tenant its token names in the ASGI scope's
``state`` (``scope["state"]["tenant"]``, which FastAPI shows as ``request.state.tenant``); the
session is the ``x-routerl-session`` header (:mod:`serving.sessions`). Both routing paths (FastAPI
and :class:`serving.middleware.LeanRoutes`) read them here, in one way.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Scope

from serving.sessions import SESSION_HEADER
from serving.tenants import Tenant

#: The scope ``state`` key of the request's tenant.
TENANT_STATE = "tenant"
_SESSION_HEADER_BYTES = SESSION_HEADER.encode("latin-1")


@dataclass(frozen=True)
class Caller:
    """The request's tenant (None: no ``--tenants``, or ``ROUTERL_API_TOKEN``) and session id (None: none)."""

    tenant: Tenant | None = None
    session: str | None = None

    @property
    def tenant_name(self) -> str:
        """The tenant's name, ``""`` without one."""
        return self.tenant.name if self.tenant is not None else ""

    def with_session(self, session: str | None) -> Caller:
        """This caller in ``session`` when it has none of its own yet (the proxy's ``user`` field)."""
        if self.session is not None or not session:
            return self
        return Caller(self.tenant, session)


def caller_of(scope: Scope) -> Caller:
    """The caller of the request in ``scope``: the tenant the auth middleware found, the session header."""
    state = scope.get("state") or {}
    session = None
    for name, value in scope["headers"]:
        if name == _SESSION_HEADER_BYTES:
            session = value.decode("latin-1").strip() or None
            break
    return Caller(state.get(TENANT_STATE), session)
