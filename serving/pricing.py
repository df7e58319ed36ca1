"""Prices in the service (``serve.py --prices FILE``, ``PUT /admin/prices``): routing follows them at once.

A policy trained on a log with token counts (``cost_mode`` "tokens", docs/contracts.md §2)
predicts tokens per model and prices them with a table it carries; the service replaces that
table (``ServingPolicy.set_prices``) when it starts with ``--prices``, when ``PUT /admin/prices``
sends a new one, and again on every policy it reloads, so the next request is scored at the new
prices: no retraining, no reload. A policy trained on USD costs (``cost_mode`` "usd") cannot
re-price its estimates; for it the table only prices the proxy's token usage.

The table has the format of docs/contracts.md §1.5 (``models: {name: {input, output}}``, USD per
one million tokens; JSON for the admin route). Every model it names must be one the service routes
to (the policy's or ``--explore-new-models``'); a model it does not name keeps its price. It also
prices each proxied answer's token usage, the actual cost that corrects the live budget
(:mod:`serving.budget`). Why a parser here and not :class:`data.prices.PriceTable`: the service
never imports the training-side packages (``tests/test_layering.py``).

With ``--workers N`` the worker that answers ``PUT /admin/prices`` writes the table to the
supervisor's state folder and bumps a generation counter in shared memory; every worker compares
that counter with its own before each request and reads the new table when it moved.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.policy import ServingPolicy
from serving.shared_memory import SharedMemory

#: USD per one million (input, output) tokens.
Price = tuple[float, float]
_COUNTER = struct.Struct("<q")


class _ModelPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # a price given as text is a mistake, not a number

    input: float = Field(ge=0, allow_inf_nan=False)
    output: float = Field(ge=0, allow_inf_nan=False)


class PriceDocument(BaseModel):
    """A price table as written (§1.5): ``{"models": {name: {"input": USD, "output": USD}}}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    models: dict[str, _ModelPrice] = Field(min_length=1)

    def table(self, known_models: Collection[str], source: str) -> dict[str, Price]:
        """The prices by model; ValueError naming ``source`` and the models the service does not route to."""
        unknown = [name for name in self.models if name not in known_models]
        if unknown:
            raise ValueError(f"{source}: unknown model(s) {unknown}; the service routes to {sorted(known_models)}")
        return {name: (price.input, price.output) for name, price in self.models.items()}


def read_price_file(path: Path, known_models: Collection[str]) -> dict[str, Price]:
    """The table of the YAML file ``path`` (``--prices``); ValueError in one line naming the file."""
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(raw, dict) and "models" not in raw:
            raw = {"models": raw}  # the bare form {name: {input, output}} (§1.5)
        return PriceDocument.model_validate(raw).table(known_models, f"--prices {path}")
    except OSError as exc:
        raise ValueError(f"--prices {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"--prices {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"--prices {path}: {where}: {first['msg']}") from None


class Pricing:
    """The service's price table, applied to each policy and kept in step across the workers."""

    def __init__(self, table: Mapping[str, Price], memory: SharedMemory, shared_file: Path | None) -> None:
        """Start from ``table`` (``--prices``; empty: the policy's own); share changes through
        ``memory`` and ``shared_file`` (the state folder of ``--workers``, or None)."""
        self.table = dict(table)
        self.shared_file = shared_file
        self.generation = memory.region(1).offset
        self.memory = memory
        self._seen = self._generation()

    def _generation(self) -> int:
        """How many tables were sent to any worker so far (an 8-byte counter in shared memory)."""
        return int(_COUNTER.unpack_from(self.memory.buffer, self.generation)[0])

    def apply(self, policy: ServingPolicy) -> bool:
        """Price ``policy`` with the table (the models it knows); False when its cost mode is "usd"."""
        if policy.cost_mode != "tokens":
            return False
        if self.table:
            merged = {**policy.prices_table(), **{k: v for k, v in self.table.items() if k in policy.models}}
            policy.set_prices(merged)
        return True

    def replace(self, table: Mapping[str, Price], policy: ServingPolicy) -> bool:
        """Take ``table`` (merged over the current one), apply it to ``policy`` and tell the other workers."""
        self.table.update(table)
        if self.shared_file is not None:
            temporary = self.shared_file.with_name(self.shared_file.name + ".tmp")
            temporary.write_text(json.dumps(self.table), encoding="utf-8")
            with self.memory.lock():
                os.replace(temporary, self.shared_file)  # whole, under the lock: one writer at a time
                self._seen = self._generation() + 1
                _COUNTER.pack_into(self.memory.buffer, self.generation, self._seen)
        return self.apply(policy)

    def follow(self, policy: ServingPolicy) -> None:
        """Before a request: take the table another worker wrote, if the counter moved."""
        if self.shared_file is None or self._generation() == self._seen:
            return
        self._seen = self._generation()
        self.table = {name: (float(a), float(b)) for name, (a, b) in json.loads(self.shared_file.read_text()).items()}
        self.apply(policy)

    def usage_cost(self, model: str, prompt_tokens: int, completion_tokens: int, policy: ServingPolicy) -> float | None:
        """USD of one answer's token usage at the table's price (or the policy's); None if unpriced."""
        price = self.table.get(model)
        if price is None and policy.cost_mode == "tokens" and model in policy.models:
            price = policy.prices_table()[model]
        if price is None:
            return None
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
