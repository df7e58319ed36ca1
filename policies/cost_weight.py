"""The cost-weight check every exported policy applies (CONTRACTS.md §2), as a TorchScript function."""

import math

import torch


@torch.jit.script
def checked_cost_weight(cost_weight: float, clamp: bool, low: float, high: float) -> float:
    """Refuse a weight that is not finite and >= 0; clamp it into [low, high] when ``clamp``.

    A policy conditioned on the weight (PPO) clamps it into its ``cost_weight_range``.
    """
    if math.isnan(cost_weight) or math.isinf(cost_weight) or cost_weight < 0.0:
        raise ValueError("cost_weight must be finite and >= 0 (quality given up per USD per query)")
    if clamp:
        return min(max(cost_weight, low), high)
    return cost_weight
