"""Price tables: USD per 1M input and output tokens per model, to compute ``cost`` from tokens.

A table prices the rows of a log that have tokens but no cost (docs/contracts.md §1.5) and, when
every outcome of a log has token counts, the token mode of a run (:func:`token_mode_prices`): the
agent then estimates tokens, and the exported policy prices them with a table it carries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from data.routing_log import RoutingLog
from data.schema import DataError, read_yaml

#: ``data.cost_mode``: token mode where the log allows it (auto), never (usd), or required (tokens).
CostMode = Literal["auto", "usd", "tokens"]

#: The table used when none is given (``--prices``): ``configs/prices.yaml`` of this checkout.
DEFAULT_PRICES = Path(__file__).resolve().parent.parent / "configs" / "prices.yaml"


@dataclass(frozen=True)
class Price:
    """USD per one million prompt (input) and completion (output) tokens."""

    input_per_million: float
    output_per_million: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one call: (prompt × input + completion × output) / 1e6."""
        return (prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million) / 1e6


@dataclass(frozen=True)
class PriceTable:
    """Prices by model name, read from YAML: ``models: {name: {input: USD, output: USD}}``, or that mapping alone."""

    prices: dict[str, Price]

    def get(self, model: str) -> Price | None:
        """The model's price, or None when the table does not list it."""
        return self.prices.get(model)

    @classmethod
    def load_or_default(cls, path: str | Path | None) -> PriceTable:
        """The table at ``path``, or the default ``configs/prices.yaml`` when no path is given."""
        return cls.load(path or DEFAULT_PRICES)

    @classmethod
    def load(cls, path: str | Path) -> PriceTable:
        """Read a price table; a malformed file is one :class:`DataError` naming the file and entry."""
        path = Path(path)
        document = read_yaml(path, "price table")
        if isinstance(document, dict) and "models" not in document:
            document = {"models": document}  # the bare form {name: {input, output}} (RouteProfile's prices.yaml)
        if not isinstance(document, dict) or not isinstance(document.get("models"), dict) or not document["models"]:
            raise DataError(f"{path}: a price table needs a mapping 'models: {{name: {{input, output}}}}'")
        prices: dict[str, Price] = {}
        for name, entry in document["models"].items():
            try:
                price = Price(float(entry["input"]), float(entry["output"]))
            except (TypeError, KeyError, ValueError):
                raise DataError(
                    f"{path}: model {name!r}: needs numeric 'input' and 'output' (USD per 1M tokens)"
                ) from None
            if not all(math.isfinite(v) and v >= 0 for v in (price.input_per_million, price.output_per_million)):
                raise DataError(f"{path}: model {name!r}: prices must be finite numbers >= 0")
            prices[str(name)] = price
        return cls(prices)


def token_mode_prices(log: RoutingLog, table: PriceTable, requested: CostMode) -> np.ndarray | None:
    """The (K, 2) prices of ``log.models`` (USD per 1M input, output tokens) if the run is in token mode, else None.

    Token mode needs a full-information log whose every accepted outcome has ``prompt_tokens`` and
    ``completion_tokens``, and a price table that prices every model. ``auto`` is token mode
    exactly then; ``usd`` never; ``tokens`` requires it, and a log or table that does not allow
    it is a :class:`DataError` naming the first query and model without token counts, or the
    models without a price.
    """
    if requested == "usd":
        return None
    reason = _token_mode_refusal(log, table)
    if reason is not None:
        if requested == "tokens":
            raise DataError(f"data.cost_mode=tokens: {reason}")
        return None
    prices = [table.prices[model] for model in log.models]
    return np.array([[price.input_per_million, price.output_per_million] for price in prices], dtype=np.float64)


def _token_mode_refusal(log: RoutingLog, table: PriceTable) -> str | None:
    """Why ``log`` and ``table`` cannot make a token-mode run, or None when they can."""
    if log.feedback != "full":
        return "token mode needs a full-information log (this one has bandit feedback)"
    prompt, completion = log.prompt_tokens, log.completion_tokens
    if prompt is None or completion is None:
        return "no accepted row of the log has prompt_tokens and completion_tokens"
    lacking = ~(np.isfinite(prompt) & np.isfinite(completion))
    if lacking.any():
        row, model = (int(i) for i in np.argwhere(lacking)[0])
        return (f"query_id {log.query_ids[row]!r}, model {log.models[model]!r} has no prompt_tokens and "
                "completion_tokens")  # fmt: skip
    unpriced = [model for model in log.models if table.get(model) is None]
    if unpriced:
        return f"the price table does not price model(s) {', '.join(unpriced)}"
    return None
