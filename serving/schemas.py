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
- ``weights`` gives a weight per objective (docs/contracts.md §2.13: ``usd``, ``latency``,
  ``energy``, ``carbon``, as the policy's ``objectives()`` lists); ``usd`` in it and
  ``cost_weight`` beside it is a 422 (one USD weight per request). An objective the policy does
  not estimate is a 422 naming those it does (:mod:`serving.router`).
- ``allowed_models`` restricts the choice to those models (duplicates are harmless).
- Text that is not valid Unicode (a lone surrogate, sent as a ``\\ud800`` escape or as raw
  bytes) and non-finite numbers (``NaN``, ``1e400``) are refused at the door, 422, because
  nothing downstream (the policy, the decision log, a proxied backend) can carry them on as
  strict JSON: :func:`_check_utf8` for single fields, :func:`check_strict_json` for free-form
  JSON such as the proxy's forwarded fields.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _check_utf8(text: str, what: str) -> str:
    """Raise ``ValueError`` when ``text`` cannot be encoded as UTF-8 (a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (it contains a lone surrogate)") from None
    return text


def check_strict_json(value: Any) -> None:
    """Raise ``ValueError`` naming the first string or key that is not valid Unicode, or number that
    is not finite, in the parsed JSON ``value`` (in document order).

    Walks with an explicit stack, so that a document nested as deep as the JSON parser allowed
    cannot exhaust Python's recursion limit here.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        where = _shown_path(path)
        if isinstance(item, str):
            _check_utf8(item, where)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{where} is not a finite number (got {item})")
        elif isinstance(item, dict):
            for key in item:
                _check_utf8(str(key), f"a key of {where}")
            stack.extend(reversed([(f"{path}.{key}" if path else str(key), child) for key, child in item.items()]))
        elif isinstance(item, list):
            stack.extend(reversed([(f"{path}[{index}]", child) for index, child in enumerate(item)]))


def _shown_path(path: str, limit: int = 100) -> str:
    """A field path for a message: ``"the body"`` for the root, shortened to ``limit`` characters."""
    if not path:
        return "the body"
    return path if len(path) <= limit else path[: limit - 1] + "…"


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
    weights: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = Field(
        default=None,
        min_length=1,
        description="A weight per objective (usd, latency, energy, carbon: the policy's objectives()); "
        "quality given up per unit; omitted objectives keep their defaults.",
    )
    allowed_models: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Choose only among these models (names from the policy's models()).",
    )

    @model_validator(mode="after")
    def _one_usd_weight(self) -> RoutingOptions:
        """Refuse a USD weight given twice (``cost_weight`` and ``weights.usd``)."""
        if self.cost_weight is not None and self.weights is not None and "usd" in self.weights:
            raise ValueError("give the USD weight once: cost_weight or weights.usd, not both")
        return self

    @field_validator("weights")
    @classmethod
    def _objectives_are_text(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        """Reject objective names that are not valid Unicode."""
        for name in value or {}:
            _check_utf8(name, "an objective name in weights")
        return value

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
    """Body of ``POST /feedback``: the outcome of an earlier decision.

    ``cost`` is also bounded by ``--max-feedback-cost`` (:meth:`serving.router.Router.feedback`):
    a limit set by the operator, not part of the schema.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    query_id: str = Field(min_length=1, max_length=200)
    quality: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    cost: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None

    @field_validator("query_id")
    @classmethod
    def _id_is_text(cls, value: str) -> str:
        """Reject an id that is not valid Unicode (the decision log could not write it)."""
        return _check_utf8(value, "query_id")


class ReloadRequest(BaseModel):
    """Optional body of ``POST /admin/reload``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    policy: str | None = Field(default=None, min_length=1, max_length=4096, description="Path of the new policy.")

    @field_validator("policy")
    @classmethod
    def _path_is_text(cls, value: str | None) -> str | None:
        """Reject a path that no file can have: a NUL byte, or text that is not valid Unicode."""
        if value is not None and "\x00" in value:
            raise ValueError("a file path cannot contain a NUL byte")
        return value if value is None else _check_utf8(value, "policy")


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
    engine: str


class ReloadResponse(BaseModel):
    """Body of a successful ``POST /admin/reload``."""

    status: str
    policy: PolicyInfo
    previous: PolicyInfo
