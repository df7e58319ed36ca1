"""Energy per call: the logged ``energy_wh`` column, and an estimate from a model table where it is missing.

A log may give each outcome's energy in watt-hours (``energy_wh``, docs/contracts.md §1.2). Where
it does not, :func:`with_energy_estimates` fills the cell from the table of
``configs/energy.yaml`` (:class:`EnergyTable`), when the table lists the model and the row has
both token counts, and marks it as estimated (``RoutingLog.energy_estimated``). The estimate
counts the floating-point work of a dense forward pass, 2 FLOP per active parameter per token
(Kaplan et al. 2020, "Scaling Laws for Neural Language Models", §2.1), and divides it by what the
hardware delivers per joule in each phase of serving:

    energy_wh = 2 · P_active · (prompt_tokens / F_prefill + completion_tokens / F_decode) / 3600
    F_phase   = peak_flop_per_second · utilization_phase / (power_watts · power_share · pue)   [FLOP/J]

with P_active the parameters used per token (all of them for a dense model, those of the routed
experts for a mixture of experts such as Mixtral). The hardware values are those of Epoch AI
(2025), "How much energy does ChatGPT use?" (one H100 of a DGX H100 node: 989 TFLOP/s BF16,
1,275 W per GPU, 70% of it drawn on average, PUE 1.2, 10% utilization while decoding), which
gives ~0.3 Wh for 500 completion tokens of a model with 100B active parameters. Prompt tokens
are processed in parallel (compute-bound prefill, taken at 40% utilization), completion tokens
one per sequence and pass (memory-bound decode): a completion token costs four prompt tokens.
The linear form in prompt and completion tokens per model is the workload model that Wilkins,
Keshav and Mortier (2024, "Offline Energy-Optimal LLM Serving: Workload-Based Energy Models for
LLM Inference on Heterogeneous Systems") fitted to measurements.

**Uncertainty.** Measurements of one model span an order of magnitude with batch size, hardware,
precision and serving software: Samsi et al. (2023, "From Words to Watts: Benchmarking the
Energy Costs of Large Language Model Inference") measured LLaMA 7B–65B on V100 and A100 GPUs
above this estimate, and Luccioni, Jernite and Strubell (2024, "Power Hungry Processing: Watts
Driving the Cost of AI Deployment?") found text generation's energy per query to vary by orders
of magnitude between models and tasks. The table states a factor (``uncertainty_factor``, 3 by
default): the true value is taken to lie within [estimate / 3, estimate × 3]. Attention's
context-length terms, idle capacity and the network are not counted.

Where the table cannot help, nothing is invented: a model it does not list, or a row without
token counts (RouterBench's wide logs have none: estimating tokens from text length is not
done), keeps NaN, and the report says energy is unavailable and why (:func:`energy_status`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from pydantic import ConfigDict, PositiveFloat, ValidationError, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from data.routing_log import RoutingLog
from data.schema import DataError, read_yaml

#: The table used when none is given (``data.energy``): ``configs/energy.yaml`` of this checkout.
DEFAULT_ENERGY = Path(__file__).resolve().parent.parent / "configs" / "energy.yaml"
#: Joules in one watt-hour.
JOULES_PER_WH = 3600.0
_STRICT = ConfigDict(extra="forbid")


@pydantic_dataclass(frozen=True, config=_STRICT)
class Hardware:
    """What the serving hardware delivers per joule while prefilling and while decoding."""

    peak_flop_per_second: PositiveFloat  # per accelerator, at the serving precision
    power_watts: PositiveFloat  # rated power per accelerator, its share of the node included
    power_share: PositiveFloat  # average draw as a share of the rating
    pue: PositiveFloat  # data-centre power usage effectiveness (>= 1)
    prefill_utilization: PositiveFloat  # share of the peak reached on prompt tokens
    decode_utilization: PositiveFloat  # share of the peak reached on completion tokens

    def flop_per_joule(self, utilization: float) -> float:
        """F = peak · utilization / (power · power_share · pue): useful FLOP per joule drawn from the grid."""
        return self.peak_flop_per_second * utilization / (self.power_watts * self.power_share * self.pue)


@pydantic_dataclass(frozen=True, config=_STRICT)
class ModelSize:
    """A model's parameters in billions; ``active_parameters`` per token (a mixture of experts), else all."""

    parameters: PositiveFloat
    active_parameters: PositiveFloat | None = None

    @model_validator(mode="after")
    def _active_within_total(self) -> ModelSize:
        if self.active_parameters is not None and self.active_parameters > self.parameters:
            raise ValueError(f"active_parameters {self.active_parameters} exceed parameters {self.parameters}")
        return self

    @property
    def active(self) -> float:
        """Parameters used per token, in billions."""
        return self.parameters if self.active_parameters is None else self.active_parameters


@pydantic_dataclass(frozen=True, config=_STRICT)
class EnergyTable:
    """The energy model of ``configs/energy.yaml``: hardware, uncertainty, and the models' sizes."""

    hardware: Hardware
    models: dict[str, ModelSize]
    uncertainty_factor: float = 3.0

    @model_validator(mode="after")
    def _factor_at_least_one(self) -> EnergyTable:
        if not self.uncertainty_factor >= 1.0:
            raise ValueError(f"uncertainty_factor must be >= 1, got {self.uncertainty_factor}")
        return self

    @classmethod
    def load_or_default(cls, path: str | Path | None) -> EnergyTable:
        """The table at ``path``, or the default ``configs/energy.yaml`` when no path is given."""
        return cls.load(path or DEFAULT_ENERGY)

    @classmethod
    def load(cls, path: str | Path) -> EnergyTable:
        """Read a table; a malformed one is one :class:`DataError` naming the file and the fields."""
        path = Path(path)
        document = read_yaml(path, "energy table")
        if not isinstance(document, dict):
            raise DataError(f"{path}: an energy table needs the mappings 'hardware' and 'models'")
        try:
            return cls(**document)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
            raise DataError(f"{path}: invalid energy table: {problems}") from None
        except TypeError as error:
            raise DataError(f"{path}: invalid energy table: {error}") from None

    def energy_wh(self, model: str, prompt_tokens: np.ndarray, completion_tokens: np.ndarray) -> np.ndarray | None:
        """Estimated Wh of calls of ``model`` (module docstring), elementwise; None when the table lacks it."""
        size = self.models.get(model)
        if size is None:
            return None
        flop_per_token = 2.0 * size.active * 1e9
        hardware = self.hardware
        joules = flop_per_token * (
            np.asarray(prompt_tokens, dtype=np.float64) / hardware.flop_per_joule(hardware.prefill_utilization)
            + np.asarray(completion_tokens, dtype=np.float64) / hardware.flop_per_joule(hardware.decode_utilization)
        )
        return joules / JOULES_PER_WH


def with_energy_estimates(log: RoutingLog, table: EnergyTable) -> RoutingLog:
    """``log`` with every missing ``energy_wh`` cell that ``table`` can estimate filled, and marked estimated.

    A cell is estimated when its energy was not logged, the table lists its model and the row has
    both token counts; other missing cells stay NaN. Logged values are kept as they are. A log
    with neither logged energy nor anything to estimate is returned unchanged (no energy columns).
    """
    shape = (log.n_queries, log.n_models)
    energy = np.full(shape, np.nan) if log.energy_wh is None else log.energy_wh.copy()
    # cells a previous call estimated stay marked (logged ones are never estimated): the call is idempotent
    estimated = np.zeros(shape, dtype=bool) if log.energy_estimated is None else log.energy_estimated.copy()
    if log.prompt_tokens is not None and log.completion_tokens is not None:
        for column, model in enumerate(log.models):
            missing = np.isnan(energy[:, column])
            missing &= np.isfinite(log.prompt_tokens[:, column]) & np.isfinite(log.completion_tokens[:, column])
            values = table.energy_wh(model, log.prompt_tokens[missing, column], log.completion_tokens[missing, column])
            if values is not None:
                energy[missing, column] = values
                estimated[missing, column] = True
    if log.energy_wh is None and not estimated.any():  # (then energy_estimated was None too)
        return log
    return replace(log, energy_wh=energy, energy_estimated=estimated)


def energy_status(log: RoutingLog, table: EnergyTable) -> dict[str, str]:
    """Per model, where its energy comes from on ``log``: the words the report shows.

    ``logged``; ``estimated`` (every cell from the table); ``logged and estimated``; or
    ``unavailable: ...`` with the reason: the model is not in the energy table, or rows lack
    token counts (the table needs them), or, on bandit feedback, only the logged model's is known.
    """
    status: dict[str, str] = {}
    for column, model in enumerate(log.models):
        known = np.zeros(log.n_queries, dtype=bool) if log.energy_wh is None else np.isfinite(log.energy_wh[:, column])
        estimated = (
            np.zeros(log.n_queries, dtype=bool) if log.energy_estimated is None else log.energy_estimated[:, column]
        )
        if not known.all():
            status[model] = f"unavailable: {_why_unavailable(log, table, model)}"
        elif estimated.all():
            status[model] = "estimated"
        else:
            status[model] = "logged and estimated" if estimated.any() else "logged"
    return status


def _why_unavailable(log: RoutingLog, table: EnergyTable, model: str) -> str:
    if log.feedback == "bandit":
        return "bandit feedback logs only the chosen model's outcome"
    if model not in table.models:
        return "not in the energy table and not logged"
    return "not logged, and rows without prompt_tokens and completion_tokens cannot be estimated"
