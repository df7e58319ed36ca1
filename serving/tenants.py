"""Tenants (``serve.py --tenants FILE``): who calls the service, what each may use and spend.

A tenants file maps each API token to a tenant::

    tenants:
      search:
        token_env: ROUTERL_TOKEN_SEARCH    # the token is read from this variable (or `token: "..."`)
        models: [small-7b, medium-34b]     # the models it may be routed to (default: every model)
        cost_weight: 250                   # its default cost weight (default: the policy's)
        budget: 0.0004                     # its own live budget, USD per query (default: none)
      research:
        token: "r-7f3c..."

A request's bearer token names its tenant (:class:`serving.auth.AuthMiddleware`); a token that is
no tenant's (nor ``ROUTERL_API_TOKEN``'s, which stays the token of every model with no tenant name)
is refused as without tenants (403). A tenant is routed only among its ``models``: a request whose
``allowed_models`` names another is answered 422 naming the model. Decisions are counted per tenant
(``routerl_tenant_decisions_total{tenant, model}``) and the decision log's records carry
``tenant``. A tenant with a ``budget`` has its own live budget (:mod:`serving.budget`); every other
request shares ``--budget``, if any.

The file is checked whole at start (the service never half-loads it): YAML, known keys only, a
non-empty unique token per tenant, known models (those of the policy or of
``--explore-new-models``), a weight >= 0 and a budget > 0. A problem is one line naming the file
and the tenant, and ``serve.py`` exits with status 2.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class TenantsError(ValueError):
    """The tenants file cannot be used; the message is one line naming the file and the tenant."""


class _TenantEntry(BaseModel):
    """One tenant as written in the file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    token: str | None = None
    token_env: str | None = None
    models: list[str] | None = Field(default=None, min_length=1)
    cost_weight: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    budget: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_token_source(self) -> _TenantEntry:
        if (self.token is None) == (self.token_env is None):
            raise ValueError("give exactly one of token and token_env")
        return self


class _TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    tenants: dict[str, _TenantEntry] = Field(min_length=1)


@dataclass(frozen=True)
class Tenant:
    """A caller of the service: its name, models (None: every model), default weight and budget."""

    name: str
    models: tuple[str, ...] | None = None
    cost_weight: float | None = None
    budget: float | None = None


def _first_problem(error: ValidationError) -> str:
    """``tenant 'x': field: problem`` for pydantic's first error."""
    first = error.errors()[0]
    where = [str(part) for part in first["loc"]]
    if len(where) >= 2 and where[0] == "tenants":
        field = ".".join(where[2:])
        return f"tenant {where[1]!r}: {field + ': ' if field else ''}{first['msg']}"
    return f"{'.'.join(where) or 'the file'}: {first['msg']}"


def _token(name: str, entry: _TenantEntry, environ: Mapping[str, str]) -> str:
    """The tenant's token, from the file or its environment variable."""
    token = entry.token if entry.token is not None else environ.get(entry.token_env or "", "")
    if not token.strip():
        source = "token" if entry.token is not None else f"the variable {entry.token_env} (token_env)"
        raise ValueError(f"tenant {name!r}: {source} is empty or unset")
    return token


def load_tenants(
    path: Path, known_models: Collection[str], environ: Mapping[str, str] | None = None
) -> dict[str, Tenant]:
    """The tenants of ``path`` by token; every model they name must be in ``known_models``.

    Raises:
        TenantsError: the file is missing, not YAML, or one tenant is invalid (one line).
    """
    environ = os.environ if environ is None else environ
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        parsed = _TenantsFile.model_validate(raw)
        tenants: dict[str, Tenant] = {}
        for name, entry in parsed.tenants.items():
            token = _token(name, entry, environ)
            if token in tenants:
                raise ValueError(f"tenant {name!r}: its token is also tenant {tenants[token].name!r}'s")
            unknown = [model for model in entry.models or () if model not in known_models]
            if unknown:
                raise ValueError(
                    f"tenant {name!r}: unknown model(s) {unknown}; the policy's models are {sorted(known_models)}"
                )
            models = tuple(dict.fromkeys(entry.models)) if entry.models else None
            tenants[token] = Tenant(name, models, entry.cost_weight, entry.budget)
    except OSError as exc:
        raise TenantsError(f"--tenants {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise TenantsError(f"--tenants {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except ValidationError as exc:
        raise TenantsError(f"--tenants {path}: {_first_problem(exc)}") from None
    except ValueError as exc:
        raise TenantsError(f"--tenants {path}: {exc}") from None
    return tenants
