"""Fitting on term counts (``TermCounts``, tokenized once) gives the numbers fitting on the texts gives, bit for bit.

Cross-validation (training/tuning.py) counts the queries once and fits on each fold's rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_featurizer_parity import PROBES, TRAIN

from data.featurizer import FeaturizerConfig, TermCounts, TextFeaturizer
from data.loading import load_log
from data.synth import SynthConfig, generate


def assert_same_fit(texts: list[str], fit_rows: np.ndarray, config: FeaturizerConfig) -> None:
    """A fit on the counts of ``fit_rows`` equals one on their texts: vocabulary, idf, projection, every feature."""
    counts = TermCounts.of(texts)
    held_rows = np.setdiff1d(np.arange(len(texts)), fit_rows)
    fitted_texts = [texts[i] for i in fit_rows.tolist()]
    expected = TextFeaturizer(config)
    expected_fit = expected.fit_transform(fitted_texts)
    counted = TextFeaturizer(config)
    np.testing.assert_array_equal(counted.fit_transform_counted(counts.rows(fit_rows)), expected_fit)
    assert list(counted.vocabulary.items()) == list(expected.vocabulary.items())
    np.testing.assert_array_equal(counted.idf, expected.idf)
    np.testing.assert_array_equal(counted.projection, expected.projection)
    assert counted.length_scale == expected.length_scale
    held_texts = [texts[i] for i in held_rows.tolist()]
    np.testing.assert_array_equal(counted.transform_counted(counts.rows(held_rows)), expected.transform(held_texts))


def test_counted_edge_cases_fit_as_their_texts() -> None:
    texts = TRAIN + PROBES + ["", "x"]
    assert_same_fit(texts, np.arange(0, len(texts), 2), FeaturizerConfig(min_df=1, components=4))
    assert_same_fit(texts, np.arange(len(TRAIN)), FeaturizerConfig(min_df=5, components=4))  # an empty vocabulary


@pytest.mark.parametrize("min_df", [1, 2, 3])
def test_counted_fold_rows_fit_as_their_texts(min_df: int) -> None:
    texts = list(generate(SynthConfig(queries=1200, words_per_query=30)).queries)
    fold = np.arange(len(texts)) % 5
    config = FeaturizerConfig(min_df=min_df, max_features=800, components=8, whiten=min_df != 2)
    assert_same_fit(texts, np.flatnonzero(fold != 3), config)


def test_more_counted_texts_than_fit_sample_fit_as_their_texts() -> None:
    texts = list(generate(SynthConfig(queries=600, words_per_query=20)).queries)
    config = FeaturizerConfig(min_df=1, components=4, fit_sample=200)
    counted = TextFeaturizer(config).fit_transform_counted(TermCounts.of(texts))
    np.testing.assert_array_equal(counted, TextFeaturizer(config).fit(texts).transform(texts))


def test_counts_of_other_texts_transform_as_those_texts() -> None:
    fitted = TextFeaturizer(FeaturizerConfig(min_df=1, components=4))
    fitted.fit_transform_counted(TermCounts.of(TRAIN))
    np.testing.assert_array_equal(fitted.transform_counted(TermCounts.of(PROBES)), fitted.transform(PROBES))


def test_counted_routerbench_folds_fit_as_their_texts(routerbench) -> None:
    queries = load_log(routerbench).log.queries[:1500]
    assert_same_fit(queries, np.flatnonzero(np.arange(len(queries)) % 5 != 0), FeaturizerConfig(components=16))
