"""The exported cascade: text and answers in, the next step out, in one TorchScript module (docs/contracts.md §7.4).

A cascade decides after generation (docs/architecture.md §6): call a model, look at its answer,
return it or call another. :class:`CascadePolicy` holds everything that decision needs, so that a
process that never imported routerl can run it: the query featurizer
(:class:`~policies.scripted_featurizer.ScriptedFeaturizer`, as the routing policy's), the response
featurizer (:class:`~policies.response_features.ResponseFeaturizer`, the code that computed the
training features), the actor (its first layer with the observation standardisation folded in, then
:class:`~policies.heads.MlpLogitHead`), the models and the cascade's limit of calls.

The step API, one decision at a time (greedy: the most probable valid action):

* ``first(query, cost_weight) -> model``: the model to call first;
* ``next(query, called, responses, cost_weight) -> (action, model)``: given the models called so
  far (in any order) and their answers, ``("call", model)`` or ``("return", model)``;
* ``step(query, called, responses, cost_weight) -> (action, model, probability)``: the same, with
  the probability the actor's masked softmax gives the chosen action (for the decision log).

The actor's logits over the 2K actions (call model k, return model j's answer) are

    head(tfidf(q) @ text_map + extras(q) @ dense_map + s @ state_map, w)

where s is the cascade's state as the environment builds it (docs/contracts.md §7.3): the called
mask, K slots of the response features (slot k: model k's answer once called) and, for each called
model, the share of the other called models whose final answer equals its own. Invalid actions (a
model called twice, a call beyond ``max_calls``, a return of a model not called) are masked out.

:func:`save_cascade_policy` writes the module with its metadata (``kind`` "cascade"): the file is not
a routing policy (it has no ``scores``/``route``), so the routing loaders refuse it; a service loads
it with :func:`policies.cascade_artifact.load_cascade`.
"""

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.featurizer import N_DENSE_EXTRAS, TextFeaturizer
from data.outputs import replacing
from policies.arms import Arms, ArmsPolicy
from policies.artifact import METADATA_FILE, quiet_jit
from policies.cascade_artifact import CASCADE_KIND
from policies.export import PolicyMetadata, script
from policies.response_features import FEATURE_NAMES, ResponseFeaturizer
from policies.scripted_featurizer import ScriptedFeaturizer


class CascadePolicy(ArmsPolicy):
    """Query and response featurizers, the folded actor and the models: the step API of the module docstring."""

    text_map: torch.Tensor
    dense_map: torch.Tensor
    state_map: torch.Tensor
    max_calls: int
    n_models: int

    def __init__(
        self,
        featurizer: ScriptedFeaturizer,
        text_map: torch.Tensor,
        dense_map: torch.Tensor,
        state_map: torch.Tensor,
        head: torch.nn.Module,
        arms: Arms,
        max_calls: int,
    ) -> None:
        super().__init__(head, arms)
        self.featurizer = featurizer
        self.responses = ResponseFeaturizer()
        self.register_buffer("text_map", text_map.to(torch.float64))
        self.register_buffer("dense_map", dense_map.to(torch.float64))
        self.register_buffer("state_map", state_map.to(torch.float64))
        self.max_calls = max_calls
        self.n_models = len(arms.model_names)

    def _query(self, query: str) -> torch.Tensor:
        """(1, m): the query's share of the first layer, tf-idf @ text_map + extras @ dense_map (as routing's)."""
        cols, offsets, values, extras = self.featurizer.shared_bags([query])
        # embedding_bag(weight, indices, offsets, scale_grad_by_freq, mode 0 = sum, sparse, per_sample_weights)
        text = torch.embedding_bag(self.text_map, cols, offsets, False, 0, False, values)[0]
        return torch.addmm(text, extras, self.dense_map)

    def _called(self, called: list[str], responses: list[str]) -> list[int]:
        """The indices of the ``called`` models, checked: known, distinct, one answer each, at most ``max_calls``."""
        if len(called) != len(responses):
            raise ValueError("called and responses must have the same length: one answer per model called")
        if len(called) > self.max_calls:
            raise ValueError("more models called than the cascade's max_calls")
        names = self.arms.model_names
        index: list[int] = []
        for name in called:
            if name not in names:
                raise ValueError("called names a model the cascade does not know: " + name)
            position = names.index(name)
            if position in index:
                raise ValueError("called names a model twice: " + name)
            index.append(position)
        return index

    def _state(self, index: list[int], responses: list[str]) -> torch.Tensor:
        """(1, K + K F + K) float64: called mask, response slots and agreement shares (docs/contracts.md §7.3)."""
        k = self.n_models
        mask = torch.zeros(k, dtype=torch.float32)
        slots = torch.zeros(k, self.responses.n_features, dtype=torch.float32)
        agree = torch.zeros(k, dtype=torch.float32)
        if len(index) > 0:
            rows = torch.tensor(index, dtype=torch.int64)
            mask[rows] = 1.0
            slots[rows] = self.responses(responses)
            answers = self.responses.answers(responses)
            others = float(max(len(index) - 1, 1))
            for a in range(len(index)):
                same = 0
                for b in range(len(index)):
                    if a != b and answers[a] != "" and answers[a] == answers[b]:
                        same += 1
                agree[index[a]] = float(same) / others  # a double rounded to float32, as the environment's
        return torch.cat((mask, slots.reshape(-1), agree)).to(torch.float64).unsqueeze(0)

    @torch.jit.export
    def step(self, query: str, called: list[str], responses: list[str], cost_weight: float) -> tuple[str, str, float]:
        """("call" or "return", model, probability of that action): the greedy next step (module docstring)."""
        weight = self.arms.weight(cost_weight)
        index = self._called(called, responses)
        hidden = self._query(query) + torch.mm(self._state(index, responses), self.state_map)
        logits = self.head(hidden, weight)[0]
        k = self.n_models
        calling = torch.ones(k, dtype=torch.bool)
        returning = torch.zeros(k, dtype=torch.bool)
        for position in index:
            calling[position] = False
            returning[position] = True
        if len(index) >= self.max_calls:
            calling = torch.zeros(k, dtype=torch.bool)
        masked = logits.masked_fill(torch.logical_not(torch.cat((calling, returning))), float("-inf"))
        action = int(torch.argmax(masked))  # ties to the lower index, as the agent's argmax
        probability = float(torch.softmax(masked, 0)[action])
        if action < k:
            return "call", self.arms.model_names[action], probability
        return "return", self.arms.model_names[action - k], probability

    @torch.jit.export
    def first(self, query: str, cost_weight: float) -> str:
        """The model to call first."""
        return self.step(query, [], [], cost_weight)[1]

    @torch.jit.export
    def next(self, query: str, called: list[str], responses: list[str], cost_weight: float) -> tuple[str, str]:
        """("call", model) or ("return", model), given the models called so far and their answers."""
        action, model, _ = self.step(query, called, responses, cost_weight)
        return action, model

    def forward(self, query: str, called: list[str], responses: list[str], cost_weight: float) -> tuple[str, str]:
        """:meth:`next`."""
        return self.next(query, called, responses, cost_weight)


def build_cascade_policy(
    featurizer: TextFeaturizer,
    linear_map: np.ndarray,
    head: torch.nn.Module,
    metadata: PolicyMetadata,
    max_calls: int,
) -> torch.jit.ScriptModule:
    """Script the cascade of an actor whose first layer is ``linear_map`` (d + S, m) and the rest ``head``.

    The first d = ``featurizer.dimension`` rows multiply the query features (the projection is folded
    in: text_map = projection @ rows of the components, as :func:`policies.export.build_text_policy`
    does); the other S = K + K F + K rows multiply the cascade's state (docs/contracts.md §7.3).
    """
    k, d = len(metadata.models), featurizer.dimension
    state = k * (len(FEATURE_NAMES) + 2)
    if linear_map.shape[0] != d + state:
        raise ValueError(f"linear map has {linear_map.shape[0]} rows, the cascade needs {d} + {state}")
    if not 1 <= max_calls <= k:
        raise ValueError(f"max_calls must be in [1, {k}], got {max_calls}")
    components = d - N_DENSE_EXTRAS
    policy = CascadePolicy(
        featurizer=ScriptedFeaturizer.from_featurizer(featurizer),
        text_map=torch.from_numpy(np.ascontiguousarray(featurizer.projection @ linear_map[:components])),
        dense_map=torch.from_numpy(np.ascontiguousarray(linear_map[components:d], dtype=np.float64)),
        state_map=torch.from_numpy(np.ascontiguousarray(linear_map[d:], dtype=np.float64)),
        head=head,
        arms=Arms(metadata.models, metadata.default_cost_weight, metadata.cost_weight_range, False),
        max_calls=max_calls,
    )
    return script(policy)


def cascade_metadata(metadata: PolicyMetadata, max_calls: int) -> dict[str, Any]:
    """The metadata JSON of a cascade file: the policy's keys (docs/contracts.md §2), ``kind`` and ``cascade``."""
    return {
        **asdict(metadata),
        "kind": CASCADE_KIND,
        "cascade": {
            "max_calls": max_calls,
            "response_features": list(FEATURE_NAMES),
            "actions": "call model k for k < K; return model j's answer for K + j",
            "step_api": ["first(query, cost_weight)", "next(query, called, responses, cost_weight)",
                         "step(query, called, responses, cost_weight)"],
        },
    }


def save_cascade_policy(module: torch.jit.ScriptModule, metadata: dict[str, Any], path: str | Path) -> Path:
    """Write the scripted cascade and its metadata (:func:`cascade_metadata`) atomically: old or new, whole.

    No portable twin (docs/contracts.md §2.11): the native engine routes before generation only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as temporary, quiet_jit():
        torch.jit.save(module, str(temporary), _extra_files={METADATA_FILE: json.dumps(metadata, sort_keys=True)})
    return path
