"""The proxy's backends file (``--backends``, e.g. ``configs/backends.yaml``).

It maps each policy model to an OpenAI-compatible endpoint::

    backends:
      small-7b:
        base_url: http://127.0.0.1:8001/v1     # POST {base_url}/chat/completions
        model: meta-llama/Llama-3.1-8B-Instruct   # the backend's own model name
        api_key_env: SMALL_7B_API_KEY          # optional: env var holding its API key
        timeout_s: 60                          # optional: per request (default 60)

Keys are read from the environment once, at start-up; a named variable that is unset is an
error. The file holds only the variable names, never keys, and keys are never logged or shown
in a ``repr``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError


class BackendSpec(BaseModel):
    """One backend as written in the file."""

    model_config = ConfigDict(extra="forbid")

    base_url: HttpUrl
    model: str = Field(min_length=1)
    api_key_env: str | None = Field(default=None, min_length=1)
    timeout_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)


class BackendsFile(BaseModel):
    """The whole file: ``backends: {policy model name: backend}``."""

    model_config = ConfigDict(extra="forbid")

    backends: dict[str, BackendSpec] = Field(min_length=1)


@dataclass(frozen=True)
class Backend:
    """A backend ready to call: where, which model name, and the resolved key."""

    url: str
    model: str
    timeout_s: float
    api_key: str | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        """Request headers for this backend (``Authorization`` when it has a key)."""
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def load_backends(path: Path) -> dict[str, Backend]:
    """Read and check ``path``; return ``{policy model name: Backend}`` with keys resolved.

    Raises:
        ValueError: unreadable file, invalid YAML or schema, or an unset key variable; one line
            that names the file.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"--backends {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"--backends {path}: not valid YAML ({' '.join(str(exc).split())})") from None
    try:
        parsed = BackendsFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "file"
        raise ValueError(f"--backends {path}: {where}: {first['msg']}") from None
    backends = {}
    for name, spec in parsed.backends.items():
        key = None
        if spec.api_key_env is not None:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise ValueError(
                    f"--backends {path}: backend {name!r} needs the environment variable "
                    f"{spec.api_key_env}, which is not set"
                )
        url = str(spec.base_url).rstrip("/") + "/chat/completions"
        backends[name] = Backend(url=url, model=spec.model, timeout_s=spec.timeout_s, api_key=key)
    return backends
