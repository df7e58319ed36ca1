"""New rule overrides for an exported text policy, without retraining (``python -m policies rules``).

The learned parts of ``policy.pt`` (the scripted featurizer, the folded linear maps, the head with its
price table, the default cost weight and its range) are taken as they are from the loaded TorchScript
module, and the policy is scripted again around them with the rules of the new file (docs/contracts.md
§2.9): its ``scores`` are bit-identical, and only ``rule_mask`` and ``route`` (and the service's
decisions) change. The new file gets the metadata of the old one with the new ``rules``, a new
``created_at`` and, in ``training_data.rules_replaced``, when and from which file the rules were
replaced: its ``metrics`` are those the run measured with the rules it was trained with. The portable
twin is written beside it as on every export (§2.11).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path

from data.schema import DataError
from policies.arms import Arms
from policies.artifact import load_policy
from policies.export import PolicyMetadata, save_policy, script
from policies.policy_file import PolicyError
from policies.rules import canonical, check_models, read_rules
from policies.text_policy import TextRoutingPolicy

#: Metadata keys the new file writes anew rather than copies.
WRITTEN_ANEW = frozenset({"rules", "created_at", "routerl_version", "torch_version"})


def replace_rules(policy: Path, rules_file: Path, out: Path) -> Path:
    """Write ``out``: the text policy ``policy`` with the rule overrides of ``rules_file`` instead of its own.

    Raises:
        PolicyError: the policy is invalid or routes embeddings (rules match the query text); the rules
            file is malformed or names a model the policy lacks; ``out`` is ``policy`` itself (the
            evaluated file is kept) or cannot be written. Each in one line naming the file.
    """
    if out.resolve() == policy.resolve():
        raise PolicyError(f"{out}: --out must be another file than the policy (the evaluated policy is kept)")
    loaded = load_policy(policy)
    meta = loaded.metadata
    if meta.get("input_kind", "text") != "text":
        kind = meta["input_kind"]
        raise PolicyError(f"{policy}: rules match the query text, and an input_kind {kind!r} policy has none")
    try:
        rules = read_rules(rules_file)
        check_models(rules, loaded.models, str(rules_file))
    except DataError as exc:
        raise PolicyError(str(exc)) from None
    module = loaded.module
    arms = Arms(
        list(loaded.models),
        loaded.default_cost_weight,
        [float(value) for value in meta["cost_weight_range"]],
        bool(module.arms.clamp_weight),
        canonical(rules),
        # the objectives beside USD the maps' last columns estimate (§2.13); none in a file from before them
        objectives=list(getattr(module.arms, "objective_names", [])),
        objective_defaults=list(getattr(module.arms, "objective_defaults", [])),
        carbon_per_wh=float(getattr(module.arms, "carbon_per_wh", 0.0)),
    )
    rebuilt = script(TextRoutingPolicy(module.featurizer, module.text_map, module.dense_map, module.head, arms))
    kept = {field.name: meta[field.name] for field in fields(PolicyMetadata) if field.name in meta}
    kept = {key: value for key, value in kept.items() if key not in WRITTEN_ANEW}
    replaced = {
        "from": str(rules_file),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "policy_version": loaded.version,
        "note": "metrics are the run's, measured with the rules the policy was trained with",
    }
    kept["training_data"] = {**kept.get("training_data", {}), "rules_replaced": replaced}
    try:
        return save_policy(rebuilt, PolicyMetadata(**kept, rules=canonical(rules)), out)
    except OSError as exc:
        raise PolicyError(f"{out}: cannot write the policy ({exc.strerror or exc})") from None
