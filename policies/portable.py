"""The portable policy file: the exported policy's parameters in safetensors, with a JSON header (torch-free).

Every export writes ``policy.safetensors`` beside ``policy.pt`` (docs/contracts.md §2.11): the same
policy as plain arrays (no code, no pickle: safetensors holds only named tensors, read with bounds
checked) and a JSON header that says how to compute with them. It outlives TorchScript, loads
without torch, and is what the native engine (:mod:`policies.native`) and the exported numeric core
(:mod:`policies.exported_program`) are built from. :mod:`policies.portable_writer` writes it.

The header is the safetensors ``__metadata__`` entry :data:`HEADER_KEY`, one JSON object:

``format`` / ``format_version``
    :data:`FORMAT` and an integer; a reader refuses a version it does not know (:data:`FORMAT_VERSION`).
``policy_version`` / ``torchscript_sha256``
    the twin ``policy.pt`` this file was written with: its version (12 hex) and full sha256.
``input_kind``
    ``"text"`` (tensors ``featurizer.*``, ``text_map``, ``dense_map``) or ``"embedding"`` (``feature_map``).
``featurizer``
    ``{"tokenizer": "routerl-bytes-1", "delimiters": [byte, ...], "length_scale": float, "terms": V}``.
``head``
    ``{"kind": ..., plus the head's scalar parameters}``; its tensors are ``head.<name>``.
``arms``
    ``{"models", "default_cost_weight", "cost_weight_range", "clamp_cost_weight"}``.
``metadata``
    the artifact's metadata (docs/contracts.md §2), rules included.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policies.policy_file import PolicyError, read_policy_bytes

#: The header's ``format`` value, and the key of the safetensors metadata that holds the header.
FORMAT = "routerl.portable-policy"
HEADER_KEY = "routerl"
#: The format version this code writes and reads; a file with another one is refused.
FORMAT_VERSION = 1
#: The portable file's suffix: ``runs/x/policy.pt`` has its twin at ``runs/x/policy.safetensors``.
SUFFIX = ".safetensors"
#: The tokenizer of docs/contracts.md §2.4 (:mod:`data.tokenizer`), by name.
TOKENIZER = "routerl-bytes-1"
#: What ends each term in ``featurizer.terms``: a delimiter, so never part of a term.
TERM_END = b"\n"

#: What begins the kind of a head in "tokens" mode: its cost part is estimated prompt and completion
#: tokens, priced by its ``price_table`` (docs/contracts.md §2.10), where its "usd" twin estimates USD.
TOKEN_PREFIX = "token_"

#: Head kinds and the scalar parameters (header) and tensors (``head.<name>``) each needs.
HEAD_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "utility": (("n_models",), ()),
    "token_utility": (("n_models",), ("price_table",)),
    "logistic_utility": (("n_models",), ()),
    "token_logistic_utility": (("n_models",), ("price_table",)),
    "hidden_layer_utility": (("hidden", "relu"), ("second", "second_bias")),
    "token_hidden_layer_utility": (("hidden", "relu", "n_models"), ("price_table", "second", "second_bias")),
    "nearest_neighbour": (("k",), ("train_unit", "quality", "cost")),
    "token_nearest_neighbour": (
        ("k", "n_models"), ("price_table", "train_unit", "quality", "prompt_tokens", "completion_tokens")
    ),
    "mlp_logit": (("low", "high", "activation", "layers"), ("weight_column", "first_bias", "mean_cost")),
}

#: Tensors of each input kind, beside the head's.
INPUT_TENSORS: dict[str, tuple[str, ...]] = {
    "text": ("featurizer.terms", "featurizer.idf", "text_map", "dense_map"),
    "embedding": ("feature_map",),
}


def twin_path(path: str | Path) -> Path:
    """The portable file of a policy file: ``policy.pt`` → ``policy.safetensors`` (itself if it is one)."""
    return Path(path).with_suffix(SUFFIX)


@dataclass(frozen=True)
class PortablePolicy:
    """A portable policy file's header and tensors, checked against the format.

    Attributes:
        path: the file it was read from.
        header: the JSON header (module docstring).
        tensors: name → array (read-only views of the file's bytes).
    """

    path: Path
    header: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(repr=False)

    @property
    def metadata(self) -> dict[str, Any]:
        """The artifact's metadata (docs/contracts.md §2)."""
        return dict(self.header["metadata"])

    @property
    def head_kind(self) -> str:
        """The head's ``kind`` (a key of :data:`HEAD_KINDS`)."""
        return str(self.header["head"]["kind"])

    def head_tensor(self, name: str) -> np.ndarray:
        """The head's tensor ``name`` (``head.<name>`` in the file)."""
        return self.tensors[f"head.{name}"]

    def terms(self) -> list[bytes]:
        """The vocabulary's terms (UTF-8 bytes) in index order: ``featurizer.terms`` split at its newlines.

        A newline is a delimiter (§2.4), so it never occurs inside a term: one ``split`` in C.
        """
        return self.tensors["featurizer.terms"].tobytes().split(TERM_END)[:-1]


def split_file(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and tensors of a safetensors file's bytes; PolicyError if it is not one of ours."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if len(data) < 8:
        raise PolicyError("not a safetensors file (shorter than its 8-byte header length)")
    (size,) = struct.unpack("<Q", data[:8])
    try:
        if size > len(data) - 8:
            raise ValueError(f"its header length {size} runs past the end of the file")
        outer = json.loads(data[8 : 8 + size])  # a JSON nested too deep raises RecursionError, refused below
        raw = outer.get("__metadata__", {}).get(HEADER_KEY)
        if not isinstance(raw, str):
            raise ValueError(f"it has no {HEADER_KEY!r} header: not a routerl portable policy")
        header = json.loads(raw)
        tensors = load(data)
    except (ValueError, AttributeError, RecursionError, SafetensorError) as exc:
        raise PolicyError(f"not a routerl portable policy ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    if not isinstance(header, dict):
        raise PolicyError("its routerl header is not a JSON object")
    return header, tensors


def check_header(header: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """Refuse a file whose format, version, kinds or tensors this reader does not know; PolicyError."""
    if header.get("format") != FORMAT:
        raise PolicyError(f"its header's format is {header.get('format')!r}, not {FORMAT!r}")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise PolicyError(
            f"format_version {version!r} is not one this routerl reads ({FORMAT_VERSION}): "
            "export the policy again with this version, or upgrade routerl"
        )
    for key in ("policy_version", "torchscript_sha256", "input_kind", "head", "arms", "metadata"):
        if key not in header:
            raise PolicyError(f"its header lacks {key!r}")
    for key in ("arms", "metadata"):
        if not isinstance(header[key], dict):
            raise PolicyError(f"its header's {key!r} is not a JSON object")
    kind = header["input_kind"]
    if kind not in INPUT_TENSORS:
        raise PolicyError(f"input_kind {kind!r} is not one of {', '.join(INPUT_TENSORS)}")
    head = header["head"]
    if not isinstance(head, dict) or head.get("kind") not in HEAD_KINDS:
        raise PolicyError(f"head kind {head.get('kind') if isinstance(head, dict) else head!r} is unknown")
    scalars, names = HEAD_KINDS[head["kind"]]
    missing = [name for name in scalars if name not in head]
    if missing:
        raise PolicyError(f"the {head['kind']} head lacks {', '.join(missing)}")
    _check_head_scalars(head, len(tensors))
    layers = [f"head.layers.{i}.{part}" for i in range(head.get("layers", 0)) for part in ("weight", "bias")]
    needed = [*INPUT_TENSORS[kind], *(f"head.{name}" for name in names), *layers]
    absent = [name for name in needed if name not in tensors]
    if absent:
        raise PolicyError(f"it lacks the tensor(s) {', '.join(absent)}")
    if kind == "text":
        _check_featurizer(header.get("featurizer"), tensors)


def _is_int(value: Any, low: int, high: int) -> bool:
    """Whether ``value`` is an int (not a bool) in [low, high]."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_head_scalars(head: dict[str, Any], n_tensors: int) -> None:
    """The head's scalars have the types and ranges of their kind (checked before any is used)."""
    counts = {name: head[name] for name in ("n_models", "hidden", "k") if name in head}
    if not all(_is_int(value, 1, 1 << 31) for value in counts.values()):
        raise PolicyError(f"the {head['kind']} head's sizes must be positive integers, got {counts}")
    if "layers" in head and not _is_int(head["layers"], 0, n_tensors):
        raise PolicyError(f"the {head['kind']} head's layers must be an integer of at most its tensors' count")
    if "relu" in head and not isinstance(head["relu"], bool):
        raise PolicyError(f"the {head['kind']} head's relu must be true or false")
    if head["kind"] == "mlp_logit":
        low, high = head["low"], head["high"]
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
        if not numbers or not 0 < low <= high or head["activation"] not in ("tanh", "relu"):
            raise PolicyError("the mlp_logit head needs 0 < low <= high (finite) and an activation tanh or relu")


def _check_featurizer(featurizer: Any, tensors: dict[str, np.ndarray]) -> None:
    """The text featurizer's header and the shapes of its tensors agree."""
    if not isinstance(featurizer, dict) or featurizer.get("tokenizer") != TOKENIZER:
        raise PolicyError(f"its featurizer is not the tokenizer {TOKENIZER!r} this routerl knows")
    delimiters = featurizer.get("delimiters")
    if not isinstance(delimiters, list) or not all(_is_int(byte, 0, 127) for byte in delimiters):
        raise PolicyError("its featurizer's delimiters must be a list of ASCII byte values (0-127)")
    if TERM_END[0] not in delimiters:
        raise PolicyError("its featurizer's delimiters lack the newline that ends each term")
    scale = featurizer.get("length_scale")
    if not isinstance(scale, int | float) or isinstance(scale, bool) or not math.isfinite(scale) or scale <= 0:
        raise PolicyError(f"its featurizer's length_scale must be a finite number > 0, got {scale!r}")
    terms = tensors["featurizer.terms"].tobytes().count(TERM_END)
    idf = tensors["featurizer.idf"].shape
    if featurizer.get("terms") != terms or idf != (terms,):
        raise PolicyError(
            f"its featurizer says {featurizer.get('terms')!r} terms; featurizer.terms holds {terms}, "
            f"featurizer.idf has shape {idf}"
        )
    if tensors["text_map"].shape[0] != terms or tensors["dense_map"].shape[1:] != tensors["text_map"].shape[1:]:
        raise PolicyError("its text_map and dense_map do not fit the vocabulary and each other")


def read_portable(path: str | Path) -> PortablePolicy:
    """Read and check a portable policy file (:func:`policies.policy_file.read_policy_bytes`'s care).

    Raises:
        PolicyError: one line naming the file: missing, unreadable, not a portable policy, or a
            format version this routerl does not read.
    """
    path = Path(path)
    data = read_policy_bytes(path)
    try:
        header, tensors = split_file(data)
        check_header(header, tensors)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:  # a value of the wrong kind
        raise PolicyError(f"{path}: not a valid portable policy ({type(exc).__name__}: {exc})") from None
    return PortablePolicy(path, header, tensors)
