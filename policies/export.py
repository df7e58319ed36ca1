"""Export an agent's decision rule as one self-contained TorchScript file.

The file is ``torch.jit.save``'d with a ``metadata.json`` extra file holding at least the keys of
docs/contracts.md §2. It loads with ``torch.jit.load`` in a process that never imported routerl, and
from C++ (``torch::jit::load``). Reading it back and checking it is :mod:`policies.artifact`'s
job (torch only), so that the service never imports this module's training-side dependencies.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.featurizer import N_DENSE_EXTRAS, TextFeaturizer
from data.outputs import replacing
from policies.arms import Arms
from policies.artifact import METADATA_FILE, quiet_jit
from policies.embedding_policy import EmbeddingRoutingPolicy
from policies.faults import fault_point
from policies.objective_weights import CARBON, USD
from policies.portable import twin_path
from policies.portable_writer import portable_bytes
from policies.scripted_featurizer import ScriptedFeaturizer
from policies.text_policy import TextRoutingPolicy

ROUTERL_VERSION = "0.1.0"


@dataclass(frozen=True)
class PolicyMetadata:
    """What a service and a reader of the artifact need to know about it (docs/contracts.md §2)."""

    models: list[str]
    default_cost_weight: float
    cost_weight_range: list[float]
    score_kind: str
    agent: str
    featurizer: dict[str, Any]
    data_fingerprint: str
    metrics: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)  # what it was trained on (docs/contracts.md §2.5)
    input_kind: str = "text"
    rules: list[dict[str, Any]] = field(default_factory=list)  # rule overrides, canonical (docs/contracts.md §2.9)
    cost_mode: str = "usd"  # "tokens": the head prices predicted tokens with a replaceable table (§2.10)
    capacity: dict[str, Any] = field(default_factory=dict)  # {model: {max_share, multiplier}} (policies.capacity)
    # the objectives a weight may be given for (§2.13): name, unit, default weight, valid range; [] USD only
    objectives: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    routerl_version: str = ROUTERL_VERSION
    torch_version: str = torch.__version__


def script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script`` without its deprecation warning."""
    with quiet_jit():
        return torch.jit.script(module)


def objective_arms(objectives: list[dict[str, Any]]) -> dict[str, Any]:
    """:class:`Arms`' keyword arguments for the metadata's ``objectives`` (§2.13): the estimated ones
    (neither ``usd`` nor ``carbon``), their default weights, and carbon's gCO2e per Wh."""
    estimated = [entry for entry in objectives if entry["name"] not in (USD, CARBON)]
    carbon = [float(entry["per_wh"]) for entry in objectives if entry["name"] == CARBON]
    return {
        "objectives": [entry["name"] for entry in estimated],
        "objective_defaults": [float(entry["default_weight"]) for entry in estimated],
        "carbon_per_wh": carbon[0] if carbon else 0.0,
    }


def build_text_policy(
    featurizer: TextFeaturizer,
    linear_map: np.ndarray,
    head: torch.nn.Module,
    metadata: PolicyMetadata,
    clamp_cost_weight: bool = False,
    objective_map: np.ndarray | None = None,
) -> torch.jit.ScriptModule:
    """Fold the featurizer's projection into the agent's (d, m) linear map and script the policy.

    The first rows of ``linear_map`` multiply the featurizer's projected components, so
    text_map = projection @ linear_map[:components] (V, m); the last rows multiply its dense
    extras (length, log length, bias) and are kept as they are. ``objective_map`` (d, J·K): the
    estimates of the metadata's objectives beside USD (§2.13), appended to the linear map's columns.
    """
    if objective_map is not None:
        linear_map = np.hstack([linear_map, objective_map])
    if linear_map.shape[0] != featurizer.dimension:
        raise ValueError(f"linear map has {linear_map.shape[0]} rows, featurizer gives {featurizer.dimension}")
    components = linear_map.shape[0] - N_DENSE_EXTRAS
    text_map = featurizer.projection @ linear_map[:components]
    policy = TextRoutingPolicy(
        featurizer=ScriptedFeaturizer.from_featurizer(featurizer),
        text_map=torch.from_numpy(np.ascontiguousarray(text_map, dtype=np.float64)),
        dense_map=torch.from_numpy(np.ascontiguousarray(linear_map[components:], dtype=np.float64)),
        head=head,
        arms=Arms(
            metadata.models,
            metadata.default_cost_weight,
            metadata.cost_weight_range,
            clamp_cost_weight,
            metadata.rules,
            **objective_arms(metadata.objectives),
        ),
    )
    return script(policy)


def build_embedding_policy(
    linear_map: np.ndarray, head: torch.nn.Module, metadata: PolicyMetadata, clamp_cost_weight: bool = False
) -> torch.jit.ScriptModule:
    """Script an ``input_kind`` "embedding" policy: features are the embedding and a bias column."""
    policy = EmbeddingRoutingPolicy(
        feature_map=torch.from_numpy(np.ascontiguousarray(linear_map, dtype=np.float64)),
        head=head,
        arms=Arms(metadata.models, metadata.default_cost_weight, metadata.cost_weight_range, clamp_cost_weight),
    )
    return script(policy)


def write_twin(module: Any, metadata: dict[str, Any], torchscript: Path, target: Path | None = None) -> Path:
    """Write the portable twin of the policy file ``torchscript`` (its scripted ``module`` and metadata)
    atomically, by default beside it (:func:`policies.portable.twin_path`)."""
    target = target or twin_path(torchscript)
    data = portable_bytes(module, metadata, torchscript.read_bytes())
    with replacing(target) as temporary:
        temporary.write_bytes(data)
    return target


def save_policy(module: torch.jit.ScriptModule, metadata: PolicyMetadata, path: str | Path) -> Path:
    """Write the policy and its portable twin (§2.11) atomically (:func:`data.outputs.replacing`): old or new, whole.

    The twin (``policy.safetensors``) is renamed into place just before ``policy.pt``; it records
    ``policy.pt``'s sha256, so a reader that finds the new twin beside the old ``policy.pt`` (a kill
    between the two renames, or a reload in that instant) sees the mismatch and refuses the pair.

    A service reloading ``path`` meanwhile reads one or the other too, never half a file. The
    fault points ``policy-written`` (complete in the temporary file) and ``policy-renamed``
    (:mod:`policies.faults`) let tests kill the process on either side of the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {METADATA_FILE: json.dumps(asdict(metadata), sort_keys=True)}
    with replacing(path) as temporary:
        with quiet_jit():
            torch.jit.save(module, str(temporary), _extra_files=extra)
        fault_point("policy-written")
        write_twin(module, asdict(metadata), temporary, twin_path(path))
    fault_point("policy-renamed")
    return path
