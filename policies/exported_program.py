"""The policy's numeric core as a ``torch.export`` program: bags of term weights in, scores and costs out.

The TorchScript policy (:mod:`policies.text_policy`) is string work (tokenization, the rules)
around a small tensor computation. This module builds that tensor part, from the portable file
(:mod:`policies.portable`), as a module whose ``forward`` takes tensors only, exports it with
``torch.export.export`` and saves it as ``policy.pt2`` (docs/contracts.md §2.12), for users on
the paths that replace TorchScript (``torch.export.load``, AOTInductor, ExecuTorch):

    z = embedding_bag(text_map, columns, offsets, per_sample_weights=values) + extras @ dense_map
    w' = clamp(w, low, high) when the policy clamps its weight (PPO), else w
    utility heads:  (quality, cost) = head.scores_costs(z, 0),   scores = quality − w' · cost
    mlp_logit:      (scores, cost)  = head.scores_costs(z + f(w') u, 0),  f(w) = log1p(w/low) / log1p(high/low)

The heads are those of :mod:`policies.heads`, rebuilt with the file's tensors (bit for bit). Every
utility head is quality(z) − w · cost(z), so its part at w = 0 is (quality, cost) and the weight is
applied as a tensor; the actor of :class:`~policies.heads.MlpLogitHead` takes w through f(w)·u only,
added to its first layer's text part, so that z + f(w)·u at w = 0 is the actor at w.

Left out (string work, or not the program's; docs/contracts.md §2.12 says why): the tokenization
(:meth:`~policies.native_featurizer.NativeFeaturizer.bags` computes the inputs), the rules, the
argmax and model names (``route``), a new price table (the program prices with the file's) and
embedding policies. The weight check (finite, >= 0) is in the program, as ``torch._assert_async``
(a ``RuntimeError`` at the call).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.fx.experimental._config as shape_config

from data.outputs import replacing
from policies.heads import (
    CostHead,
    HiddenLayerUtilityHead,
    LogisticUtilityHead,
    MlpLogitHead,
    NearestNeighbourHead,
    TokenHiddenLayerUtilityHead,
    TokenLogisticUtilityHead,
    TokenNearestNeighbourHead,
    TokenUtilityHead,
    UtilityHead,
)
from policies.policy_file import PolicyError
from policies.portable import HEAD_KINDS, PortablePolicy

#: The exported program's suffix: ``runs/x/policy.pt`` has it at ``runs/x/policy.pt2``.
PROGRAM_SUFFIX = ".pt2"

#: The message of the weight check inside the program (the TorchScript policy's, docs/contracts.md §2.2).
WEIGHT_REFUSED = "cost_weight must be finite and >= 0 (quality given up per USD per query)"


def program_path(path: str | Path) -> Path:
    """The exported program beside a policy file: ``policy.pt`` or ``policy.safetensors`` → ``policy.pt2``."""
    return Path(path).with_suffix(PROGRAM_SUFFIX)


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A writable torch copy of one of the portable file's (read-only) arrays."""
    return torch.from_numpy(np.array(array))


def _shaped_head(portable: PortablePolicy) -> CostHead:
    """A head of the file's kind, of the right shapes (its tensors are loaded afterwards, :func:`build_head`)."""
    header = portable.header["head"]
    kind = portable.head_kind
    if kind == "mlp_logit":
        return _mlp_logit_head(portable)
    tensors = {name: _tensor(portable.head_tensor(name)) for name in HEAD_KINDS[kind][1]}
    if kind == "utility":
        return UtilityHead(int(header["n_models"]))
    if kind == "token_utility":
        return TokenUtilityHead(tensors["price_table"])
    if kind == "logistic_utility":
        return LogisticUtilityHead(int(header["n_models"]))
    if kind == "token_logistic_utility":
        return TokenLogisticUtilityHead(tensors["price_table"])
    if kind == "hidden_layer_utility":
        return HiddenLayerUtilityHead(tensors["second"], tensors["second_bias"], bool(header["relu"]))
    if kind == "token_hidden_layer_utility":
        second, bias, relu = tensors["second"], tensors["second_bias"], bool(header["relu"])
        return TokenHiddenLayerUtilityHead(second, bias, relu, tensors["price_table"])
    if kind == "nearest_neighbour":
        return NearestNeighbourHead(tensors["train_unit"], tensors["quality"], tensors["cost"], int(header["k"]))
    if kind == "token_nearest_neighbour":
        tokens = torch.stack([tensors["prompt_tokens"], tensors["completion_tokens"]], dim=2)
        train, quality, prices = tensors["train_unit"], tensors["quality"], tensors["price_table"]
        return TokenNearestNeighbourHead(train, quality, tokens, int(header["k"]), prices)
    raise PolicyError(f"its {kind} head has no exported form")


def _mlp_logit_head(portable: PortablePolicy) -> MlpLogitHead:
    """The actor's head of the file's shapes."""
    header = portable.header["head"]
    layers = []
    for index in range(int(header["layers"])):
        out_features, in_features = portable.head_tensor(f"layers.{index}.weight").shape
        layers.append(torch.nn.Linear(in_features, out_features, dtype=torch.float64))
    return MlpLogitHead(
        _tensor(portable.head_tensor("weight_column")),
        _tensor(portable.head_tensor("first_bias")),
        layers,
        str(header["activation"]),
        float(header["low"]),
        float(header["high"]),
        _tensor(portable.head_tensor("mean_cost")),
    )


def build_head(portable: PortablePolicy) -> CostHead:
    """The :mod:`policies.heads` head the portable file describes, holding exactly the file's tensors.

    Every ``head.<name>`` tensor of the file is loaded with ``load_state_dict(strict=True)``, so a
    head holds the bits the TorchScript policy computes with (a constructor's own arithmetic, such
    as the nearest-neighbour head's normalisation, is overwritten) and a tensor too many or too
    few is refused (PolicyError).
    """
    head = _shaped_head(portable)
    prefix = "head."
    state = {name[len(prefix) :]: _tensor(array) for name, array in portable.tensors.items() if name.startswith(prefix)}
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PolicyError(f"its head's tensors do not fit a {portable.head_kind} head ({exc})") from None
    return head


class NumericCore(torch.nn.Module):
    """The tensor part of a text policy: (columns, offsets, values, extras, cost_weight) → (scores, costs).

    Inputs (N queries, T bag entries): ``columns`` (T,) int64 vocabulary indices, ``offsets``
    (N + 1,) int64 where query i's entries start (the last one is T), ``values`` (T,) float64
    their L2-normalised tf-idf, ``extras`` (N, 3) float64 [n / length_scale, ln(1 + n), 1] and
    ``cost_weight`` a 0-d float64 tensor. Outputs: (N, K) float64 scores and predicted USD costs.
    """

    text_map: torch.Tensor
    dense_map: torch.Tensor

    def __init__(self, portable: PortablePolicy) -> None:
        super().__init__()
        if portable.header["input_kind"] != "text":
            raise PolicyError("its input_kind is not 'text': the exported program covers text policies only")
        arms = portable.header["arms"]
        self.head = build_head(portable)
        self.register_buffer("text_map", _tensor(portable.tensors["text_map"]).to(torch.float64))
        self.register_buffer("dense_map", _tensor(portable.tensors["dense_map"]).to(torch.float64))
        # the head's columns of z: a policy's estimates of the costs beside USD (§2.13) are not the program's
        self.head_width = self.text_map.shape[1] - len(arms.get("objectives", [])) * len(arms["models"])
        self.weight_range: tuple[float, float] | None = (
            (float(arms["cost_weight_range"][0]), float(arms["cost_weight_range"][1]))
            if arms["clamp_cost_weight"]
            else None
        )

    def forward(
        self,
        columns: torch.Tensor,
        offsets: torch.Tensor,
        values: torch.Tensor,
        extras: torch.Tensor,
        cost_weight: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, costs), both (N, K) float64 (class docstring)."""
        torch._assert_async(torch.logical_and(torch.isfinite(cost_weight), cost_weight >= 0.0), WEIGHT_REFUSED)
        weight = cost_weight.clamp(*self.weight_range) if self.weight_range is not None else cost_weight
        # embedding_bag(weight, indices, offsets, scale_grad_by_freq, mode 0 = sum, sparse, per_sample_weights,
        # include_last_offset): the TorchScript policy's sum, with the (N + 1,) offsets
        text = torch.embedding_bag(self.text_map, columns, offsets, False, 0, False, values, True)[0]
        z = torch.addmm(text, extras, self.dense_map)[:, : self.head_width]
        if isinstance(self.head, MlpLogitHead):
            low, high = self.head.low, self.head.high
            feature = torch.log1p(weight.clamp(0.0, high) / low) / math.log1p(high / low)
            return self.head.scores_costs(z + feature * self.head.weight_column, 0.0)
        quality, cost = self.head.scores_costs(z, 0.0)
        return quality - weight * cost, cost


def _example_inputs(n_terms: int) -> tuple[torch.Tensor, ...]:
    """Inputs to trace with: two queries of 1 and 2 entries (sizes above 1, so none is taken for a constant)."""
    columns = torch.tensor([0, min(1, n_terms - 1), 0], dtype=torch.int64)
    offsets = torch.tensor([0, 1, 3], dtype=torch.int64)
    values = torch.tensor([1.0, 0.6, 0.8], dtype=torch.float64)
    extras = torch.tensor([[0.5, math.log(2.0), 1.0], [1.0, math.log(3.0), 1.0]], dtype=torch.float64)
    return columns, offsets, values, extras, torch.tensor(1.0, dtype=torch.float64)


def export_program(portable: PortablePolicy) -> torch.export.ExportedProgram:
    """``torch.export.export`` of the portable policy's :class:`NumericCore`, N and T dynamic (0 included).

    Sizes 0 and 1 (one query, an empty batch, a batch without a known term) would otherwise be
    specialised away by export (its "0/1 specialisation"); ``backed_size_oblivious`` lets the
    sizes range over [0, ∞), the option torch's export tutorial gives for exactly this.

    Raises:
        PolicyError: one line naming the file: not a text policy, or a head whose tensors do not fit its kind.
    """
    try:
        core = NumericCore(portable).eval()
    except PolicyError as exc:
        raise PolicyError(f"{portable.path}: {exc}") from None
    queries = torch.export.Dim("queries", min=0)
    entries = torch.export.Dim("entries", min=0)
    shapes = {
        "columns": {0: entries},
        "offsets": {0: queries + 1},
        "values": {0: entries},
        "extras": {0: queries},
        "cost_weight": None,
    }
    inputs = _example_inputs(int(portable.tensors["text_map"].shape[0]))
    # patch() is added to the config module at run time (torch's install_config_module): mypy cannot see it
    with shape_config.patch(backed_size_oblivious=True), torch.no_grad():  # type: ignore[attr-defined]
        program = torch.export.export(core, inputs, dynamic_shapes=shapes)
    # A head may keep views of its buffers (the token head's price columns); export lifts them as constants
    # sharing the buffer's storage, which torch.export.save warns about: each is saved as its own copy.
    for name, value in program.constants.items():
        if isinstance(value, torch.Tensor):
            program.constants[name] = value.clone()
    return program


def write_program(portable: PortablePolicy, target: Path | None = None) -> Path:
    """Export the portable policy and ``torch.export.save`` it atomically (default: ``policy.pt2`` beside it)."""
    target = target or program_path(portable.path)
    program = export_program(portable)
    with replacing(target) as temporary:
        torch.export.save(program, str(temporary))
    return target
