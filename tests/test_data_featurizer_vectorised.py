"""The vectorised featurizer computes exactly the per-text definition of its docstring.

``TextFeaturizer`` tokenizes all texts at once (pyarrow over their UTF-8 bytes) and counts with
scipy. The reference below is the definition written text by text: the tokenization of
:mod:`data.tokenizer` as one regular expression over its delimiter bytes, then vocabulary, idf,
tf-idf rows and token counts, which must be bit-identical, on edge cases, synthetic logs (several
blocks) and RouterBench.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import pairwise

import numpy as np
import pytest
import scipy.sparse as sp
from test_featurizer_parity import PROBES, TRAIN

import data.featurizer as featurizer_module
from data.featurizer import FeaturizerConfig, TextFeaturizer
from data.loading import load_log
from data.synth import SynthConfig, generate
from data.tokenizer import DELIMITERS

_TOKEN = re.compile(b"[^" + re.escape(DELIMITERS) + b"]+")


def tokenize(text: str) -> list[bytes]:
    """The tokens of ``text``: maximal runs of non-delimiter UTF-8 bytes, ASCII letters lowercased."""
    return _TOKEN.findall(text.encode("utf-8").lower())


def with_bigrams(tokens: list[bytes]) -> list[bytes]:
    """The terms of a token list: unigrams then bigrams (``b"left right"``)."""
    return tokens + [left + b" " + right for left, right in pairwise(tokens)]


def reference_vocabulary(texts: list[str], min_df: int, max_features: int) -> tuple[dict[bytes, int], np.ndarray]:
    """Terms by document frequency (ties by bytes), text by text."""
    frequency: Counter[bytes] = Counter()
    for text in texts:
        frequency.update(set(with_bigrams(tokenize(text))))
    kept = sorted(((df, term) for term, df in frequency.items() if df >= min_df), key=lambda x: (-x[0], x[1]))
    kept = kept[:max_features]
    return {term: i for i, (_, term) in enumerate(kept)}, np.array([df for df, _ in kept], dtype=np.float64)


def reference_tfidf(fitted: TextFeaturizer, texts: list[str]) -> tuple[sp.csr_matrix, np.ndarray]:
    """Sublinear tf × idf, L2 rows, from per-text (row × V + column) keys summed in sorted order."""
    rows: list[int] = []
    cols: list[int] = []
    lengths = np.zeros(len(texts))
    for row, text in enumerate(texts):
        tokens = tokenize(text)
        lengths[row] = len(tokens)
        ids = [i for i in map(fitted.vocabulary.get, with_bigrams(tokens)) if i is not None]
        rows.extend([row] * len(ids))
        cols.extend(ids)
    width = max(fitted.n_terms, 1)
    keys, counts = np.unique(
        np.asarray(rows, dtype=np.int64) * width + np.asarray(cols, dtype=np.int64), return_counts=True
    )
    row_of, col_of = keys // width, keys % width
    values = (1.0 + np.log(counts)) * fitted.idf[col_of]
    values = values / np.sqrt(np.bincount(row_of, weights=values**2, minlength=len(texts)))[row_of]
    return sp.csr_matrix((values, (row_of, col_of)), shape=(len(texts), fitted.n_terms)), lengths


def assert_definition(train: list[str], probes: list[str], config: FeaturizerConfig) -> None:
    fitted = TextFeaturizer(config).fit(train)
    sample = train
    if len(train) > config.fit_sample:
        chosen = np.sort(np.random.default_rng(config.seed).choice(len(train), size=config.fit_sample, replace=False))
        sample = [train[i] for i in chosen.tolist()]
    vocabulary, frequency = reference_vocabulary(sample, config.min_df, config.max_features)
    assert list(fitted.vocabulary.items()) == list(vocabulary.items())
    np.testing.assert_array_equal(fitted.idf, np.log((1.0 + len(sample)) / (1.0 + frequency)) + 1.0)
    matrix, lengths = fitted.analyze(probes)
    expected, expected_lengths = reference_tfidf(fitted, probes)
    np.testing.assert_array_equal(matrix.indptr, expected.indptr)
    np.testing.assert_array_equal(matrix.indices, expected.indices)
    np.testing.assert_array_equal(matrix.data, expected.data)
    np.testing.assert_array_equal(lengths, expected_lengths)
    dense = fitted.transform(probes)
    np.testing.assert_array_equal(
        dense[:, : fitted.projection.shape[1]], np.asarray(expected @ fitted.projection, dtype=np.float32)
    )


def test_edge_cases_match_the_definition() -> None:
    assert_definition(TRAIN + PROBES[3:7], PROBES + TRAIN + ["", "x"], FeaturizerConfig(min_df=1, components=4))
    assert_definition(TRAIN, ["", "   "], FeaturizerConfig(min_df=5, components=4))  # an empty vocabulary
    assert_definition(TRAIN, [], FeaturizerConfig(min_df=1, components=4))


def test_synthetic_texts_across_blocks_match_the_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(featurizer_module, "_BATCH", 700)  # several blocks per call
    texts = list(generate(SynthConfig(queries=3000, words_per_query=30)).queries)
    assert_definition(texts[:2000], texts, FeaturizerConfig())
    assert_definition(texts, texts[:500], FeaturizerConfig(min_df=1, max_features=300, fit_sample=1000, components=6))


def test_routerbench_prompts_match_the_definition(routerbench) -> None:
    queries = load_log(routerbench).log.queries
    assert_definition(queries[:1500], queries, FeaturizerConfig(components=8))
