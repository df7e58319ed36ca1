"""Bearer-token guard of the service (ASGI middleware).

- ``/healthz`` is always open (liveness probes carry no secrets).
- ``/admin/...`` needs ``ROUTERL_ADMIN_TOKEN``; without one configured, admin routes are
  refused (403) so that nobody can reload policies on an unprotected service. ``SIGHUP`` still
  reloads.
- Every other path (unknown ones too, so that probing reveals nothing) needs
  ``ROUTERL_API_TOKEN`` when it is set.

- With ``--tenants`` (:mod:`serving.tenants`) the tokens of the tenants file are API tokens too,
  and the request's tenant is put in the scope (:mod:`serving.caller`); ``ROUTERL_API_TOKEN``, if
  set, stays a token without a tenant.

- Under ``/ui`` (the dashboard, :mod:`serving.ui`) the token may also come in the ``routerl_token``
  cookie, which the sign-in form (``POST /ui/login``, open) sets; ``GET /ui`` answers a missing or
  wrong token with the sign-in page instead of a JSON error, with the same status.

A missing ``Authorization: Bearer ...`` header is answered 401, a wrong token 403. Tokens are
compared in constant time and never logged.
"""

from __future__ import annotations

import secrets
from urllib.parse import unquote

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.caller import TENANT_STATE
from serving.errors import error_response
from serving.tenants import Tenant
from serving.ui import TOKEN_COOKIE, login_page

OPEN_PATHS = frozenset({"/healthz", "/ui/login"})
ADMIN_PREFIX = "/admin/"
#: The dashboard's paths: the token may come in :data:`serving.ui.TOKEN_COOKIE` there.
UI_PREFIX = "/ui"


def _bearer(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or under ``/ui`` of the
    ``routerl_token`` cookie, or None."""
    headers = Headers(scope=scope)
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    path = scope["path"]
    if (path == UI_PREFIX or path.startswith(UI_PREFIX + "/")) and "cookie" in headers:
        cookie = unquote(cookie_parser(headers["cookie"]).get(TOKEN_COOKIE, "")).strip()
        return cookie or None
    return None


#: The header of a 401: the token goes in a bearer header.
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _refusal(scope: Scope, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The error response of a refused request: the JSON error, or for ``GET /ui`` (a browser
    opening the dashboard) the sign-in page with the same status."""
    if scope["path"] == UI_PREFIX and scope["method"] == "GET":
        return login_page(status, message)
    return error_response(status, message, headers=headers)


class AuthMiddleware:
    """Answer 401/403 unless the request carries the token its path needs."""

    def __init__(
        self, app: ASGIApp, api_token: str | None, admin_token: str | None, tenants: dict[str, Tenant] | None = None
    ) -> None:
        """Guard ``app`` with the given tokens (None = that guard is off; admin: refused) and the
        tenants' (by token)."""
        self.app = app
        self.api_token = api_token
        self.admin_token = admin_token
        self.tenants = [(token.encode(), tenant) for token, tenant in (tenants or {}).items()]

    def _tenant(self, token: str) -> Tenant | None:
        """The tenant whose token is ``token`` (each compared in constant time), or None."""
        found = None
        for known, tenant in self.tenants:
            if secrets.compare_digest(token.encode(), known):
                found = tenant
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the token, then hand the request on."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        admin = scope["path"].startswith(ADMIN_PREFIX)
        expected = self.admin_token if admin else self.api_token
        if self.tenants and not admin:
            await self._check_tenant(scope, receive, send)
            return
        if expected is None and not admin:
            await self.app(scope, receive, send)
            return
        response: Response
        if expected is None:
            response = error_response(403, "admin routes are disabled: set ROUTERL_ADMIN_TOKEN")
        else:
            token = _bearer(scope)
            kind = "admin" if admin else "API"
            if token is None:
                response = _refusal(
                    scope,
                    401,
                    f"missing bearer token: send 'Authorization: Bearer <{kind} token>'",
                    CHALLENGE,
                )
            elif not secrets.compare_digest(token.encode(), expected.encode()):
                response = _refusal(scope, 403, f"wrong {kind} token")
            else:
                await self.app(scope, receive, send)
                return
        await response(scope, receive, send)

    async def _check_tenant(self, scope: Scope, receive: Receive, send: Send) -> None:
        """With tenants: the token must be a tenant's (its tenant goes in the scope) or the API token."""
        token = _bearer(scope)
        if token is None:
            response = _refusal(scope, 401, "missing bearer token: send 'Authorization: Bearer <API token>'", CHALLENGE)
            await response(scope, receive, send)
            return
        tenant = self._tenant(token)
        if tenant is None and not (
            self.api_token is not None and secrets.compare_digest(token.encode(), self.api_token.encode())
        ):
            await _refusal(scope, 403, "wrong API token")(scope, receive, send)
            return
        scope.setdefault("state", {})[TENANT_STATE] = tenant
        await self.app(scope, receive, send)
