"""The price methods every exported policy has (docs/contracts.md §2.10), in TorchScript.

A policy's price table lives in its head (:mod:`policies.heads`): a head whose costs are token
estimates (``cost_mode`` "tokens") prices them with the table it carries, and replacing that table
changes every later ``scores``, ``route``, ``costs`` and ``scores_costs`` at once, with no retraining
and no reload. A head that estimates USD directly (``cost_mode`` "usd") has none: ``prices()`` is
empty and ``set_prices`` refuses.
"""

import torch

from policies.arms import ArmsPolicy
from policies.heads import CostHead


class PricedPolicy(ArmsPolicy):
    """:class:`~policies.arms.ArmsPolicy` with the head's price table exposed."""

    head: CostHead  # every head of policies.heads: scores_costs, costs, prices, set_prices

    @torch.jit.export
    def prices(self) -> torch.Tensor:
        """(K, 2) float64 USD per one million (input, output) tokens per model; (0, 2) in "usd" mode."""
        return self.head.prices()

    @torch.jit.export
    def set_prices(self, prices: torch.Tensor) -> None:
        """Replace the price table (K, 2): finite and >= 0, else ValueError; refused in "usd" mode."""
        self.head.set_prices(prices)
