"""Which training texts fit the featurizer when there are more than ``fit_sample`` of them."""

from __future__ import annotations

import numpy as np
import pytest

from data.featurizer import FeaturizerConfig, TextFeaturizer

TEXTS = [f"question {i} about topic {i % 7} and detail {i % 5}" for i in range(40)]
CONFIG = FeaturizerConfig(min_df=1, components=3, fit_sample=10)


def test_sample_keys_choose_the_smallest_in_text_order() -> None:
    keys = np.random.default_rng(5).random(len(TEXTS))
    sampled = TextFeaturizer(CONFIG).fit(TEXTS, sample_keys=keys)
    chosen = np.sort(np.argsort(keys)[: CONFIG.fit_sample])
    direct = TextFeaturizer(CONFIG).fit([TEXTS[i] for i in chosen])
    assert sampled.vocabulary == direct.vocabulary
    np.testing.assert_array_equal(sampled.projection, direct.projection)
    everything = TextFeaturizer(FeaturizerConfig(min_df=1, components=3, fit_sample=100)).fit(TEXTS)
    assert sampled.vocabulary != everything.vocabulary


def test_ties_go_to_the_earlier_text() -> None:
    keys = np.zeros(len(TEXTS))
    first_ten = TextFeaturizer(CONFIG).fit(TEXTS[: CONFIG.fit_sample])
    assert TextFeaturizer(CONFIG).fit(TEXTS, sample_keys=keys).vocabulary == first_ten.vocabulary


def test_without_keys_the_sample_is_seeded() -> None:
    first, second = TextFeaturizer(CONFIG).fit(TEXTS), TextFeaturizer(CONFIG).fit(TEXTS)
    np.testing.assert_array_equal(first.projection, second.projection)


def test_a_key_per_text_is_required() -> None:
    with pytest.raises(ValueError, match="3 sample keys for 40 texts"):
        TextFeaturizer(CONFIG).fit(TEXTS, sample_keys=np.zeros(3))
