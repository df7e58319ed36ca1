"""Every objective side by side: quality against USD, latency, energy and carbon (``report.json`` ``objectives``).

The report's other sections trade quality against USD. This one measures the same decisions on
every cost a log carries, each per query:

* **usd**: ``cost`` (always there);
* **latency**: ``latency_ms``, as its median and 95th percentile over the queries and its mean
  (the frontier's axis: a mean is what mixing two operating points moves linearly);
* **energy**: ``energy_wh``, logged, or estimated from the model table (:mod:`data.energy`, marked
  ``estimated``, good to its ``uncertainty_factor``);
* **carbon**: gCO2e = energy_wh / 1000 × ``evaluation.grid_intensity`` (gCO2e per kWh).

An objective is available when every outcome of the evaluated log has it (a full-information
log); otherwise it is left out and ``objectives`` says why.

What is reported, all on the evaluated log:

* ``routers``: at the operating weight, the policy, each baseline and the per-query oracle of
  that weight; ``single_models``: each model alone;
* ``frontiers``: per objective, the hull of the policy's cost-weight sweep seen on that
  objective's axis (the same choices as the USD frontier: the policy takes a USD weight today,
  so these frontiers show where its USD trade-off lands on the other costs), the single models'
  hull (the zero router), the quality oracle (per query the best model, the cheapest on that
  objective among ties) and the AIQ of both hulls over the single models' span on that axis;
* ``reach``: for each share of the reference model's quality (``evaluation.quality_targets``, the
  best single model by default), the least mean cost on each objective at which the policy's hull
  and the zero router's reach it (:func:`evaluation.frontier.cost_to_reach`), beside the
  reference model's own. Each objective's least cost is its own: the mixtures reaching the
  target cheapest in USD and in energy may differ.

Each objective is evaluated by the very code of the USD frontier, applied to the log with that
objective's per-call values as its ``cost`` (:func:`objective_view`): hulls, AIQ and the cost to
reach a quality have one implementation (:mod:`evaluation.frontier`, :mod:`evaluation.sweep`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from data.energy import EnergyTable, energy_status
from data.routing_log import RoutingLog
from evaluation.evaluate import Evaluation, EvaluationPlan, best_single_model, zero_router
from evaluation.frontier import Frontier, cost_to_reach
from evaluation.metrics import best_quality_actions, oracle_actions
from evaluation.sweep import AIQRange, WeightSweep

#: The objectives in report order, with the unit of one call's value.
UNITS = {"usd": "USD", "latency": "ms", "energy": "Wh", "carbon": "gCO2e"}
#: The quantiles of latency reported per router (the mean is the frontier's axis).
LATENCY_QUANTILES = {"latency_ms_p50": 50.0, "latency_ms_p95": 95.0}
#: Per-query means of the routers' rows, by objective.
MEAN_KEYS = {"usd": "usd", "latency": "latency_ms", "energy": "energy_wh", "carbon": "gco2e"}


@dataclass(frozen=True)
class Objectives:
    """The per-call values (N, K) of every available objective of a log, and why the others are not."""

    costs: dict[str, np.ndarray]
    unavailable: dict[str, str]

    @classmethod
    def of(cls, log: RoutingLog, grid_intensity: float) -> Objectives:
        """USD always; latency and energy (and with it carbon) when every outcome of ``log`` has them."""
        costs: dict[str, np.ndarray] = {"usd": log.cost}
        unavailable: dict[str, str] = {}
        for name, values, column in (("latency", log.latency_ms, "latency_ms"), ("energy", log.energy_wh, "energy_wh")):
            reason = _missing(log, values, column)
            if reason is None:
                assert values is not None
                costs[name] = values
            else:
                unavailable[name] = reason
        if "energy" in costs:
            costs["carbon"] = costs["energy"] / 1000.0 * grid_intensity
        else:
            unavailable["carbon"] = "no energy (carbon = energy × grid intensity)"
        return cls(costs, unavailable)


def _missing(log: RoutingLog, values: np.ndarray | None, column: str) -> str | None:
    """Why ``values`` cannot make an objective on ``log`` (None: every outcome has one)."""
    if values is None:
        return f"the log has no {column}"
    lacking = ~np.isfinite(values).all(axis=0)
    if lacking.any():
        models = ", ".join(model for model, lacks in zip(log.models, lacking) if lacks)
        return f"{column} is unknown for some outcomes of {models}"
    return None


def objective_view(log: RoutingLog, cost: np.ndarray) -> RoutingLog:
    """``log`` with ``cost`` (N, K) as its cost: the USD frontier's code then measures that objective."""
    return replace(log, cost=cost)


def objectives_report(
    log: RoutingLog, evaluation: Evaluation, plan: EvaluationPlan, energy: EnergyTable
) -> dict[str, Any]:
    """The ``objectives`` section of ``report.json`` (module docstring) for an evaluation of ``log``.

    ``evaluation`` must have an operating point (its weight and choices) and ``energy`` is the table
    the log's estimates came from (for the words that say where each model's energy comes from).
    """
    if log.feedback != "full":
        return {"skipped": "bandit feedback: the latency and energy of models that were not chosen are unknown"}
    weight, actions = evaluation.cost_weight, evaluation.actions
    if weight is None or actions is None:
        raise ValueError("the objectives section needs an evaluation at an operating weight")
    config = plan.config
    objectives = Objectives.of(log, config.grid_intensity)
    chosen = {"policy": actions, **{name: decide(weight) for name, decide in (plan.baselines or {}).items()}}
    chosen["oracle"] = oracle_actions(log, weight)
    reference = config.reference_model or best_single_model(log)
    frontiers = {
        name: objective_frontier(objective_view(log, cost), evaluation.sweep) for name, cost in objectives.costs.items()
    }
    return {
        "objectives": _sources(log, objectives, energy),
        "grid_intensity_gco2e_per_kwh": config.grid_intensity,
        "energy_uncertainty_factor": energy.uncertainty_factor,
        "energy_per_model": energy_status(log, energy),
        "routers": {name: router_row(log, objectives, chosen_actions) for name, chosen_actions in chosen.items()},
        "single_models": {
            model: router_row(log, objectives, np.full(log.n_queries, index)) for index, model in enumerate(log.models)
        },
        "frontiers": {name: frontier.report for name, frontier in frontiers.items()},
        "reach": reach_table(log, objectives, frontiers, reference, config.quality_targets),
    }


def _sources(log: RoutingLog, objectives: Objectives, energy: EnergyTable) -> dict[str, dict[str, str]]:
    """Per objective: its unit per query and where its values come from (or why it is unavailable)."""
    statuses = set(energy_status(log, energy).values()) if "energy" in objectives.costs else set()
    energy_source = (
        "estimated" if statuses == {"estimated"} else "logged" if statuses == {"logged"} else "logged and estimated"
    )
    source = {
        "usd": "logged",
        "latency": "logged",
        "energy": energy_source,
        "carbon": f"{energy_source} energy × grid intensity",
    }
    return {
        name: {"unit": f"{unit} per query", "source": source[name]}
        if name in objectives.costs
        else {"unit": f"{unit} per query", "source": f"unavailable: {objectives.unavailable[name]}"}
        for name, unit in UNITS.items()
    }


def router_row(log: RoutingLog, objectives: Objectives, actions: np.ndarray) -> dict[str, float]:
    """Mean quality and, per available objective, the mean per query of ``actions`` (latency also p50, p95)."""
    rows = np.arange(log.n_queries)
    row = {"quality": float(log.quality[rows, actions].mean())}
    for name, cost in objectives.costs.items():
        values = cost[rows, actions]
        row[MEAN_KEYS[name]] = float(values.mean())
        if name == "latency":
            for key, quantile in LATENCY_QUANTILES.items():
                row[key] = float(np.percentile(values, quantile))
    return row


@dataclass(frozen=True)
class ObjectiveFrontier:
    """One objective's hulls (the policy's and the zero router's) and their part of the report."""

    hull: Frontier
    zero_router: Frontier
    report: dict[str, Any]


def objective_frontier(view: RoutingLog, sweep: WeightSweep) -> ObjectiveFrontier:
    """The policy's hull, the zero router's and the quality oracle on one objective (``view``'s cost), with AIQs.

    The policy's points are its swept choices (``sweep.actions``) with ``view``'s outcomes.
    """
    hull = WeightSweep.from_actions(view, sweep.weights, sweep.actions).frontier()
    zero, aiq_range = zero_router(view), AIQRange.of(view)
    oracle = best_quality_actions(view)
    rows = np.arange(view.n_queries)
    mean_cost, mean_quality = view.cost.mean(axis=0), view.quality.mean(axis=0)
    return ObjectiveFrontier(
        hull,
        zero,
        {
            "aiq": aiq_range.aiq(hull),
            "zero_router_aiq": aiq_range.aiq(zero),
            "cost_range": list(aiq_range.cost_range),
            "hull": hull.to_json(),
            "zero_router_hull": zero.to_json(),
            "single_models": {
                m: {"cost": float(c), "quality": float(q)} for m, c, q in zip(view.models, mean_cost, mean_quality)
            },
            "oracle": {
                "cost": float(view.cost[rows, oracle].mean()),
                "quality": float(view.quality.max(axis=1).mean()),
            },
        },
    )


def reach_table(
    log: RoutingLog,
    objectives: Objectives,
    frontiers: Mapping[str, ObjectiveFrontier],
    reference: str,
    targets: tuple[float, ...],
) -> dict[str, Any]:
    """ "For x% of the reference model's quality, how much money, time and energy": least mean cost per objective.

    Per target share: the policy's hull and the zero router's least cost on each objective (None:
    never reached), and the reference model's own mean cost on each.
    """
    if reference not in log.models:
        raise ValueError(f"reference model {reference!r} is not among the log's models {list(log.models)}")
    column = log.models.index(reference)
    ref_quality = float(log.quality[:, column].mean())
    reach: dict[str, Any] = {
        "reference_model": reference,
        "reference_quality": ref_quality,
        "reference": {name: float(cost[:, column].mean()) for name, cost in objectives.costs.items()},
        "targets": {},
    }
    for share in targets:
        target = share * ref_quality
        reach["targets"][f"{round(share * 100)}%"] = {
            "target_quality": target,
            "policy": {name: cost_to_reach(frontier.hull, target) for name, frontier in frontiers.items()},
            "zero_router": {name: cost_to_reach(frontier.zero_router, target) for name, frontier in frontiers.items()},
        }
    return reach


def tensorboard_scalars(section: Mapping[str, Any]) -> dict[str, float]:
    """The section's numbers for TensorBoard: ``objectives/policy/<metric>``, ``objectives/aiq/<objective>``,
    ``objectives/reach_<share>/<objective>`` (the policy's least cost; left out where not reached)."""
    if "skipped" in section:
        return {}
    scalars = {f"objectives/policy/{key}": value for key, value in section["routers"]["policy"].items()}
    scalars |= {f"objectives/aiq/{name}": frontier["aiq"] for name, frontier in section["frontiers"].items()}
    for share, target in section["reach"]["targets"].items():
        label = share.rstrip("%")
        scalars |= {
            f"objectives/reach_{label}/{name}": cost for name, cost in target["policy"].items() if cost is not None
        }
    return scalars
