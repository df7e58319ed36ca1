"""The portable twin of a TorchScript policy, as bytes (:mod:`policies.portable`, docs/contracts.md §2.11).

Everything is read from the scripted module itself (its buffers and attributes), so that the twin
holds exactly what ``policy.pt`` computes with, and so that a ``policy.pt`` written by an older
routerl gets its twin too: on disk (:func:`policies.export.write_twin`, ``python -m policies
portable``) or in memory (:func:`policies.native.load_native_policy`). Needs torch only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save

from policies.policy_file import VERSION_CHARS
from policies.portable import FORMAT, FORMAT_VERSION, HEAD_KINDS, HEADER_KEY, TERM_END, TOKENIZER

#: The TorchScript class of each head (``original_name``) → its portable ``kind``.
HEAD_CLASSES = {
    "UtilityHead": "utility",
    "TokenUtilityHead": "token_utility",
    "LogisticUtilityHead": "logistic_utility",
    "TokenLogisticUtilityHead": "token_logistic_utility",
    "HiddenLayerUtilityHead": "hidden_layer_utility",
    "TokenHiddenLayerUtilityHead": "token_hidden_layer_utility",
    "NearestNeighbourHead": "nearest_neighbour",
    "TokenNearestNeighbourHead": "token_nearest_neighbour",
    "MlpLogitHead": "mlp_logit",
}


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A contiguous numpy copy of a module's tensor."""
    return np.ascontiguousarray(tensor.detach().cpu().numpy())


def _head(module: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The head's header entry (kind and scalars) and its tensors (every buffer and parameter)."""
    name = module.head.original_name
    if name not in HEAD_CLASSES:
        raise ValueError(f"a {name} head has no portable form (known: {', '.join(HEAD_CLASSES)})")
    kind = HEAD_CLASSES[name]
    entry: dict[str, Any] = {"kind": kind}
    for scalar in HEAD_KINDS[kind][0]:
        entry[scalar] = len(module.head.layers) if scalar == "layers" else getattr(module.head, scalar)
    tensors = {f"head.{key}": _array(value) for key, value in module.head.state_dict().items()}
    return entry, tensors


def _text_part(module: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The featurizer's header entry, its vocabulary, idf and the two linear maps."""
    featurizer = module.featurizer
    ordered = sorted(featurizer.vocabulary.items(), key=lambda item: item[1])
    terms = [term.encode("utf-8") for term, _ in ordered]
    delimiters = sorted(ord(character) for character in featurizer.delimiters)
    entry = {
        "tokenizer": TOKENIZER,
        "delimiters": delimiters,
        "length_scale": float(featurizer.length_scale),
        "terms": len(terms),
    }
    tensors = {
        "featurizer.terms": np.frombuffer(b"".join(term + TERM_END for term in terms), dtype=np.uint8).copy(),
        "featurizer.idf": _array(featurizer.idf),
        "text_map": _array(module.text_map),
        "dense_map": _array(module.dense_map),
    }
    return entry, tensors


def portable_bytes(module: Any, metadata: dict[str, Any], torchscript: bytes) -> bytes:
    """The portable file of the scripted policy ``module`` (its metadata; ``torchscript``: its ``policy.pt`` bytes)."""
    arms = module.arms
    head, tensors = _head(module)
    sha = hashlib.sha256(torchscript).hexdigest()
    header: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "policy_version": sha[:VERSION_CHARS],
        "torchscript_sha256": sha,
        "input_kind": metadata.get("input_kind", "text"),
        "head": head,
        "arms": {
            "models": list(arms.model_names),
            "default_cost_weight": float(arms.default_weight),
            "cost_weight_range": [float(arms.weight_low), float(arms.weight_high)],
            "clamp_cost_weight": bool(arms.clamp_weight),
            # the costs beside USD the last J·K columns of the maps estimate (docs/contracts.md §2.13)
            "objectives": list(arms.objective_names),
            "objective_defaults": [float(value) for value in arms.objective_defaults],
            "carbon_per_wh": float(arms.carbon_per_wh),
        },
        "metadata": metadata,
    }
    if header["input_kind"] == "text":
        header["featurizer"], text = _text_part(module)
        tensors.update(text)
    else:
        tensors["feature_map"] = _array(module.feature_map)
    return bytes(save(tensors, metadata={HEADER_KEY: json.dumps(header, sort_keys=True)}))
