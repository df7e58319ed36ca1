"""The live dashboard of the service: ``GET /ui`` and what its page reads (docs/contracts.md §4.11).

- ``GET /ui``: the page (``serving/pages/dashboard.html``); its script polls ``GET /ui/data`` every
  two seconds and redraws the charts in place, without reloading the page.
- ``GET /ui/static/{name}``: the page's script and style, and plotly.js, the charting library,
  served from the ``plotly`` package installed with routerl: nothing is fetched from outside.
- ``GET /ui/data``: the dashboard's numbers, one JSON document (:mod:`serving.dashboard`).
- ``POST /ui/try``: the "try it" box: a ``/route`` body in, every model's score and the greedy
  decision at the body's cost weight (any, even under a live budget) out, without logging,
  counting or charging anything.
- ``POST /ui/login``: the token form of the sign-in page (below).

Tokens: the same rules as every other route (:mod:`serving.auth`). A browser cannot send an
``Authorization`` header when it opens a page, so under ``/ui`` the token may also come in the
``routerl_token`` cookie: without a token, ``GET /ui`` answers its 401 with a sign-in page whose form
posts the token to ``/ui/login``, which sets that cookie (``HttpOnly``, ``SameSite=Strict``, path
``/ui``) and sends the browser back to ``/ui``, where the token is checked like a bearer token. A
wrong token gets the sign-in page again, with 403. ``SameSite=Strict`` keeps other sites'
pages from sending the cookie, and ``POST /ui/try`` takes only JSON bodies.
"""

from __future__ import annotations

import html
import importlib.util
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from serving.caller import caller_of
from serving.dashboard import Dashboard
from serving.decisions import best, ranking
from serving.errors import ApiError, SafeJSONResponse
from serving.middleware import require_json
from serving.objectives import requested_usd, scored_weights
from serving.router import Router
from serving.schemas import RouteRequest

#: The pages' folder (package data).
PAGES = Path(__file__).resolve().parent / "pages"
#: The cookie that carries the token under ``/ui``.
TOKEN_COOKIE = "routerl_token"
#: Largest sign-in form body read (a token is far shorter).
MAX_LOGIN_BYTES = 4096
#: The page's own files, by the name it asks for.
PAGE_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


def plotly_js() -> Path:
    """plotly.min.js as the ``plotly`` package ships it (no CDN: the service serves it)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the plotly package is not installed: pip install plotly (a routerl dependency)")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


def login_page(status: int, message: str) -> HTMLResponse:
    """The sign-in page: ``message`` and a form that posts the API token to ``/ui/login`` (its style
    inline: the page's files need the token)."""
    body = _login_template().replace("{{message}}", html.escape(message))
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


@cache
def _login_template() -> str:
    """The sign-in page with the dashboard's style inlined, read once."""
    style = (PAGES / "dashboard.css").read_text(encoding="utf-8")
    return (PAGES / "login.html").read_text(encoding="utf-8").replace("{{style}}", style)


async def login(request: Request) -> Response:
    """Take the sign-in form's token into the ``routerl_token`` cookie and go back to ``/ui``."""
    body = await request.body()
    if len(body) > MAX_LOGIN_BYTES:
        return login_page(413, "That token is too long.")
    token = parse_qs(body.decode("utf-8", errors="replace")).get("token", [""])[0].strip()
    if not token:
        return login_page(401, "Enter the service's API token.")
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(TOKEN_COOKIE, quote(token, safe=""), httponly=True, samesite="strict", path="/ui")
    return response


def try_query(router: Router, body: RouteRequest, request: Request) -> dict[str, Any]:
    """Every model's score for one query and the greedy choice at the body's cost weight (without
    one, the weight the service would route this caller at: the tenant's, the budget's or the
    policy's), within the caller's models and the policy's rules; nothing is logged, counted or
    charged, so a weight under the live budget's is shown as asked."""
    caller = caller_of(request.scope)
    current = router.current()
    router.check_length([body.query])
    allowed = router.allowed(current, body.allowed_models, caller)
    cost_weight = requested_usd(body.cost_weight, body.weights)
    if cost_weight is None:
        cost_weight, _ = router.cost_weight(current, None, caller)
    weights = scored_weights(current, cost_weight, body.weights)
    scored = router.score(current, [body.query], weights, with_costs=False)
    if scored is None:
        raise ApiError(503, "the policy failed to score this query (the service would use --fallback-model)")
    scores = scored.scores[0]
    (ruled,) = router.ruled(current, [body.query], allowed)
    scorable = [index for index in ruled if index < len(scores)]
    models = router.models(current)
    return {
        "model": models[best(scores, scorable)] if scorable else models[ruled[0]],
        "cost_weight": cost_weight,
        **({"weights": weights} if isinstance(weights, dict) else {}),
        "scores": dict(zip(current.models, scores, strict=True)),
        "score_kind": current.score_kind,
        "ranking": [models[index] for index in ranking(scores, ruled)],
        "allowed": [models[index] for index in ruled],
        "policy": current.info,
    }


def add_ui_routes(app: FastAPI, dashboard: Dashboard, router: Router) -> None:
    """Declare the dashboard's routes on ``app`` (module docstring)."""

    @app.get("/ui", response_class=HTMLResponse)
    async def page() -> Response:
        """The dashboard page."""
        return FileResponse(PAGES / "dashboard.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/ui/static/{name}")
    async def static(name: str) -> Response:
        """The page's script and style, and plotly.js (cached for a day)."""
        headers = {"Cache-Control": "max-age=86400"}
        if name == "plotly.min.js":
            return FileResponse(plotly_js(), media_type="text/javascript", headers=headers)
        if name not in PAGE_FILES:
            raise ApiError(404, f"no such file: /ui/static/{name[:100]}")
        return FileResponse(PAGES / name, media_type=PAGE_FILES[name], headers=headers)

    @app.get("/ui/data")
    async def data() -> SafeJSONResponse:
        """The dashboard's numbers (:mod:`serving.dashboard`)."""
        return SafeJSONResponse(dashboard.document(), headers={"Cache-Control": "no-store"})

    @app.post("/ui/try", dependencies=[Depends(require_json)])
    async def try_it(body: RouteRequest, request: Request) -> SafeJSONResponse:
        """Every model's score and the greedy decision for one query; nothing logged or counted."""
        return SafeJSONResponse(try_query(router, body, request))

    app.add_api_route("/ui/login", login, methods=["POST"], include_in_schema=False)
