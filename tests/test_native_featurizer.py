"""The native engine's featurizer (policies/native_featurizer.py): one text, a micro-batch and a large batch.

One text (``hidden_one``), a service's micro-batch of up to 63 texts (``hidden_few``) and a large
batch (the vectorised path) compute the same z, within float64 rounding; alone or in micro-batches,
every query scores and routes as the TorchScript artifact does (docs/contracts.md §2.11). Texts
without a known term, with repeated terms, longer than the tf and extras tables, and a hand-made
file whose idf are 0 are among the inputs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from test_featurizer_parity import PROBES, TRAIN

from data.featurizer import FeaturizerConfig, TextFeaturizer
from data.loading import load_log
from policies.artifact import LoadedPolicy, load_policy
from policies.export import PolicyMetadata, build_text_policy, save_policy
from policies.heads import TokenUtilityHead
from policies.native import NativePolicy, load_native_policy
from policies.native_featurizer import EXTRA_ROWS, NativeFeaturizer
from policies.portable import read_portable, twin_path

K = 4
#: A text none of whose terms the policy knows (its featurizer is fitted without it).
UNKNOWN = "zzqx vvbn qqwj"
#: Texts that take every branch: no known term, all counts 1, repeated terms, beyond the extras table
#: (EXTRA_ROWS tokens) and beyond the tf table (4,096 tokens; PROBES has 20,000).
EDGES = [
    UNKNOWN,
    "capital",
    "capital capital capital of of france",
    " ".join(["write a python function"] * (EXTRA_ROWS // 4 + 3)),
    "the " * 5000,
]


@pytest.fixture(scope="module")
def queries() -> list[str]:
    demo = list(dict.fromkeys(load_log(ROOT / "data" / "demo" / "demo.jsonl").log.queries))
    return PROBES + TRAIN + EDGES + demo[:150]


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory, queries: list[str]) -> Path:
    """A token-priced utility policy over a featurizer fitted on the inputs but :data:`UNKNOWN`."""
    featurizer = TextFeaturizer(FeaturizerConfig(components=6)).fit([text for text in queries if text != UNKNOWN])
    rng = np.random.default_rng(3)
    metadata = PolicyMetadata(
        models=[f"model-{i}" for i in range(K)],
        default_cost_weight=300.0,
        cost_weight_range=[0.0, 3000.0],
        score_kind="utility",
        agent="token_utility",
        featurizer={},
        data_fingerprint="f" * 16,
        cost_mode="tokens",
    )
    head = TokenUtilityHead(torch.from_numpy(rng.uniform(0.1, 20.0, size=(K, 2))))
    module = build_text_policy(featurizer, rng.normal(size=(featurizer.dimension, 3 * K)), head, metadata)
    return save_policy(module, metadata, tmp_path_factory.mktemp("native-featurizer") / "policy.pt")


def _assert_scores_as_torchscript(torchscript: LoadedPolicy, native: NativePolicy, batch: list[str]) -> None:
    """Same routes; scores and costs within float32 rounding (1e-6 relative, or absolute below 1)."""
    assert native.route(batch, 300.0) == torchscript.module.route(batch, 300.0)
    expected = torchscript.score_costs(batch, 300.0).numpy().astype(np.float64)
    got = native.score_costs(batch, 300.0).astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(expected).max()))


def test_each_query_alone_and_in_micro_batches_scores_as_torchscript(policy: Path, queries: list[str]) -> None:
    torchscript, native = load_policy(policy), load_native_policy(policy)
    for query in queries:
        _assert_scores_as_torchscript(torchscript, native, [query])
    for size in (2, 7, 63):
        for start in range(0, len(queries), size):
            _assert_scores_as_torchscript(torchscript, native, queries[start : start + size])


def test_one_text_a_micro_batch_and_a_large_batch_give_the_same_hidden_map(policy: Path, queries: list[str]) -> None:
    featurizer = NativeFeaturizer(read_portable(twin_path(policy)))
    vectorised = featurizer.hidden(queries)  # >= VECTORISED_FROM texts
    assert len(queries) >= 64
    alone = np.vstack([featurizer.hidden_one(query) for query in queries])
    batched = np.vstack([featurizer.hidden_few(queries[start : start + 5]) for start in range(0, len(queries), 5)])
    scale = np.abs(vectorised).max()
    np.testing.assert_allclose(alone, vectorised, rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(batched, vectorised, rtol=0, atol=1e-13 * scale)


def test_texts_without_known_terms_or_with_idf_zero_keep_only_their_extras(policy: Path) -> None:
    portable = read_portable(twin_path(policy))
    zero_idf = {**portable.tensors, "featurizer.idf": np.zeros_like(portable.tensors["featurizer.idf"])}
    texts = ["capital of france", UNKNOWN, "write write a python function"]
    for tensors, known in ((portable.tensors, [UNKNOWN]), (zero_idf, texts)):
        featurizer = NativeFeaturizer(dataclasses.replace(portable, tensors=tensors))
        extras_only = featurizer.extras([len(featurizer.tokens(text)) for text in known]) @ featurizer.dense_map
        np.testing.assert_allclose(np.vstack([featurizer.hidden_one(text) for text in known]), extras_only, rtol=1e-15)
        np.testing.assert_allclose(featurizer.hidden_few(known), extras_only, rtol=1e-15)
