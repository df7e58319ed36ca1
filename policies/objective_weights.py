"""Weights per objective (docs/contracts.md §2.13): one reading of them, for TorchScript and the native engine.

A policy that estimates costs beside USD (latency in seconds, energy in Wh: its ``names``) scores
quality − w_usd · usd − Σ_j w_j · cost_j at a weight vector given as a mapping, each weight finite and
>= 0 (quality given up per unit). An objective the mapping leaves out keeps its default (USD the
policy's default cost weight, the others ``defaults``); ``carbon`` (gCO2e), for a policy with energy
and a grid intensity, adds w_carbon · ``carbon_per_wh`` to energy's weight, since carbon = energy ×
intensity. Unknown names and invalid weights are a ValueError naming them.

Both functions are plain Python that TorchScript compiles (no torch, no global constants), so the
exported module (:class:`policies.arms.Arms`) and the torch-free native engine
(:mod:`policies.native`) read weights with the same code.
"""

import math

#: The objective every policy has: USD per query, weighted by the cost weight (the code below spells it
#: out: TorchScript reads no global constant).
USD = "usd"
#: The objective derived from energy: gCO2e = Wh × ``carbon_per_wh``.
CARBON = "carbon"


def objective_names(names: list[str], carbon_per_wh: float) -> list[str]:
    """The objectives a weight may be given for: ``usd``, the estimated ``names``, and ``carbon`` with energy."""
    every = ["usd"]
    every.extend(names)  # not [*names]: TorchScript cannot size a starred list
    if "energy" in names and carbon_per_wh > 0.0:
        every.append("carbon")
    return every


def read_weights(
    weights: dict[str, float], usd_default: float, names: list[str], defaults: list[float], carbon_per_wh: float
) -> tuple[float, list[float]]:
    """(the USD weight, the weights of ``names`` in their order) of the mapping ``weights`` (module docstring)."""
    usd = usd_default
    extra = [float(value) for value in defaults]
    carbon = 0.0
    allowed = objective_names(names, carbon_per_wh)
    for name, value in weights.items():
        if name not in allowed:
            raise ValueError("unknown objective " + name + ": this policy takes weights for " + ", ".join(allowed))
        if math.isnan(value) or math.isinf(value) or value < 0.0:
            raise ValueError("the weight of " + name + " must be finite and >= 0 (quality given up per unit)")
        if name == "usd":
            usd = value
        elif name == "carbon":
            carbon = value
        else:
            extra[names.index(name)] = value
    if carbon > 0.0:
        energy = names.index("energy")
        extra[energy] = extra[energy] + carbon * carbon_per_wh
    return usd, extra
