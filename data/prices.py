"""Price tables: USD per 1M input and output tokens per model, to compute ``cost`` from tokens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from data.schema import DataError

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
    """Prices by model name, read from YAML: ``models: {name: {input: USD, output: USD}}``."""

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
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise DataError(f"{path}: cannot read price table: {error}") from None
        if not isinstance(document, dict) or not isinstance(document.get("models"), dict):
            raise DataError(f"{path}: a price table needs a mapping 'models: {{name: {{input, output}}}}'")
        prices: dict[str, Price] = {}
        for name, entry in document["models"].items():
            try:
                price = Price(float(entry["input"]), float(entry["output"]))
            except (TypeError, KeyError, ValueError):
                raise DataError(
                    f"{path}: model {name!r}: needs numeric 'input' and 'output' (USD per 1M tokens)"
                ) from None
            if price.input_per_million < 0 or price.output_per_million < 0:
                raise DataError(f"{path}: model {name!r}: prices must be >= 0")
            prices[str(name)] = price
        return cls(prices)
