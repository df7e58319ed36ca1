"""The run's ``policy.pt`` (the exported agent, its featurizer and the metadata of docs/contracts.md §2) and,
for a text policy, ``learner.npz``: what ``python -m training.follow`` continues from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import Agent
from data.featurizer import TextFeaturizer
from data.routing_log import OBJECTIVE_UNITS
from data.tokenizer import Tokens
from policies.export import PolicyMetadata, build_embedding_policy, build_text_policy, save_policy
from policies.native_rules import NativeRuleSet
from policies.rules import canonical, check_models, read_rules
from training.config import RunConfig
from training.inputs import ExportedPolicy, RunInputs
from training.live_learner import LEARNER_FILE, save_learner


def featurizer_summary(config: RunConfig, featurizer: TextFeaturizer | None, dimension: int) -> dict[str, Any]:
    """What the policy's inputs are, for the report and the artifact's metadata."""
    if featurizer is None:
        return {"kind": "embedding", "dimension": dimension - 1, "bias": True}
    return {
        "kind": "tfidf-lsa",
        "terms": featurizer.n_terms,
        "dimension": featurizer.dimension,
        **asdict(config.featurizer),
    }


def checked_rules(config: RunConfig, models: Sequence[str]) -> list[dict[str, Any]]:
    """The configured rules file (docs/contracts.md §2.9) in canonical form, every model it names one of ``models``.

    Read once per run, right after the log, so that a rule naming an unknown model is a user error
    before anything is learned; the export compiles exactly this list.
    """
    if config.rules is None:
        return []
    rules = read_rules(config.rules)
    check_models(rules, models, config.rules)
    return canonical(rules)


def rule_mask(rules: Sequence[Mapping[str, Any]], models: Sequence[str], queries: Sequence[str]) -> np.ndarray | None:
    """(N, K) bool: the models the rule overrides allow each query, as the exported policy applies them
    (docs/contracts.md §2.9, the native engine's rule set); None without rules. The report measures the
    policy with them, as it will route."""
    if not rules:
        return None
    counts = dict(zip(queries, Tokens.of(queries).n_tokens.tolist(), strict=True))
    return NativeRuleSet(rules, models, counts.__getitem__).mask(queries)


def objectives_metadata(
    agent: Agent, cost_weight: float, cost_weight_range: list[float], grid_intensity: float
) -> list[dict[str, Any]]:
    """The metadata's ``objectives`` (docs/contracts.md §2.13): [] for a USD-only policy; else ``usd``, each
    objective the agent estimates, and ``carbon`` (at ``grid_intensity`` gCO2e/kWh) when energy is one.

    Each entry: ``name``, ``unit`` (a weight is quality given up per unit), ``default_weight`` and
    ``weight_range`` ([low, high]; high None: any finite weight >= 0 is valid).
    """
    estimates = agent.objective_map()
    if estimates is None:
        return []
    entries: list[dict[str, Any]] = [
        {"name": "usd", "unit": "USD", "default_weight": cost_weight, "weight_range": cost_weight_range}
    ]
    for name in estimates.names:
        entries.append(
            {"name": name, "unit": OBJECTIVE_UNITS[name], "default_weight": 0.0, "weight_range": [0.0, None]}
        )
    if "energy" in estimates.names and grid_intensity > 0:
        carbon = {"name": "carbon", "unit": "gCO2e", "default_weight": 0.0, "weight_range": [0.0, None]}
        entries.append(carbon | {"per_wh": grid_intensity / 1000.0})
    return entries


def export_policy(
    config: RunConfig, inputs: RunInputs, exported: ExportedPolicy, report: dict[str, Any], out: Path
) -> None:
    """Write ``policy.pt`` with the metadata of docs/contracts.md §2.5 (and, for text, ``learner.npz``).

    ``metrics`` are the report's held-out ones; ``training_data`` (the report's ``exported_policy``)
    says whether they are this policy's, or those of the policy evaluated before a refit on every
    query (``train.py --refit-all``).
    """
    agent, frontier, test_metrics = exported.agent, report["frontier"], report["test"]
    linear_map = agent.linear_map()
    conditioned_range = agent.cost_weight_range  # agents conditioned on the weight (PPO); None for the others
    weight_range = conditioned_range or [0.0, float(frontier["cost_weights"][-1])]
    metadata = PolicyMetadata(
        models=list(inputs.models),
        default_cost_weight=exported.cost_weight,
        cost_weight_range=weight_range,
        score_kind=agent.score_kind,
        agent=agent.name,
        input_kind=config.input,
        cost_mode=agent.cost_mode,
        featurizer=featurizer_summary(config, exported.featurizer, linear_map.shape[0]),
        data_fingerprint=inputs.fingerprint,
        metrics={key: value for key, value in test_metrics.items() if isinstance(value, float)}
        | {"aiq": frontier["aiq"]},
        training_data=report["exported_policy"],
        rules=inputs.rules,
        capacity=exported.capacity or {},
        # an embedding policy scores the USD trade-off only (its objectives are not exported)
        objectives=[]
        if exported.featurizer is None
        else objectives_metadata(agent, exported.cost_weight, weight_range, config.evaluation.grid_intensity),
    )
    clamp = conditioned_range is not None
    featurizer = exported.featurizer
    if featurizer is None:
        module = build_embedding_policy(linear_map, agent.head(), metadata, clamp_cost_weight=clamp)
    else:
        estimates = agent.objective_map() if metadata.objectives else None
        objective_map = None if estimates is None else estimates.matrix
        module = build_text_policy(featurizer, linear_map, agent.head(), metadata, clamp, objective_map)
        save_learner(out / LEARNER_FILE, featurizer, list(inputs.models), config.agent.linucb.ridge, agent)
    save_policy(module, metadata, out / "policy.pt")
