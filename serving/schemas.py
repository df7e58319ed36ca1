"""Request and response bodies of the router service's JSON routes (docs/contracts.md §4).

The request models are strict (no coercion, no extra keys) so that a wrong type is a 422, not a
guess. Both the FastAPI routes (:mod:`serving.app`) and the fast path
(:class:`serving.middleware.LeanRoutes`) validate with these same models, so a request is
accepted or refused the same way on either path. The chat proxy's body lives in
:mod:`serving.proxy`.

Decisions worth knowing:
- An empty query ``""`` is valid for the policy (docs/contracts.md §2) but the service answers
  it 422: routing nothing is always a client bug.
- ``cost_weight`` absent or ``null`` means the policy's ``default_cost_weight()``; otherwise it
  must be a JSON number (not a string or a boolean), finite and >= 0.
- ``allowed_models`` restricts the choice to those models (duplicates are harmless).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _check_utf8(text: str, what: str) -> str:
    """Raise ``ValueError`` when ``text`` cannot be encoded as UTF-8 (a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (it contains a lone surrogate)") from None
    return text


def _check_query(value: str) -> str:
    """Reject the empty query and text that is not valid Unicode."""
    if value == "":
        raise ValueError("query is empty; send the text to route")
    return _check_utf8(value, "query")


class RoutingOptions(BaseModel):
    """Fields shared by ``/route`` and ``/route/batch``. Strict: no coercion, no extra keys."""

    model_config = ConfigDict(extra="forbid", strict=True)

    cost_weight: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        default=None,
        description="Quality given up to save one USD per query; default: the policy's own.",
    )
    allowed_models: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Choose only among these models (names from the policy's models()).",
    )

    @field_validator("allowed_models")
    @classmethod
    def _names_are_text(cls, value: list[str] | None) -> list[str] | None:
        """Reject model names that are not valid Unicode."""
        for name in value or []:
            _check_utf8(name, "a model name in allowed_models")
        return value


class RouteRequest(RoutingOptions):
    """Body of ``POST /route``."""

    query: str = Field(description="The text to route; must not be empty.")

    _query = field_validator("query")(_check_query)


class BatchRequest(RoutingOptions):
    """Body of ``POST /route/batch``."""

    queries: list[str] = Field(min_length=1, description="Texts to route; none may be empty.")

    @field_validator("queries")
    @classmethod
    def _queries_are_valid(cls, value: list[str]) -> list[str]:
        """Check every query like ``/route`` checks its one."""
        for query in value:
            _check_query(query)
        return value


class FeedbackRequest(BaseModel):
    """Body of ``POST /feedback``: the outcome of an earlier decision."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query_id: str = Field(min_length=1, max_length=200)
    quality: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    cost: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None


class ReloadRequest(BaseModel):
    """Optional body of ``POST /admin/reload``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    policy: str | None = Field(default=None, min_length=1, description="Path of the new policy.")


class PolicyInfo(BaseModel):
    """Which policy answered: file hash prefix and training-data fingerprint."""

    version: str
    fingerprint: str


class RouteResponse(BaseModel):
    """Body of a successful ``POST /route``."""

    query_id: str
    model: str
    scores: dict[str, float]
    score_kind: str
    policy: PolicyInfo


class BatchResponse(BaseModel):
    """Body of a successful ``POST /route/batch``."""

    query_ids: list[str]
    models: list[str]
    policy: PolicyInfo


class HealthResponse(BaseModel):
    """Body of ``GET /healthz``."""

    status: str
    policy: PolicyInfo


class ReloadResponse(BaseModel):
    """Body of a successful ``POST /admin/reload``."""

    status: str
    policy: PolicyInfo
    previous: PolicyInfo
