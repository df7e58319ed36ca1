"""The featurizer's ``whiten`` and ``components: 0`` options, and ``fit_transform``."""

from __future__ import annotations

import numpy as np
import pytest

from data.featurizer import N_DENSE_EXTRAS, FeaturizerConfig, TextFeaturizer

TEXTS = [f"question {i} about topic {i % 7} and detail {i % 5} word{i % 11}" for i in range(60)]


@pytest.mark.parametrize("fit_sample", [100, 20])
def test_fit_transform_equals_fit_then_transform(fit_sample: int) -> None:
    config = FeaturizerConfig(min_df=1, components=4, fit_sample=fit_sample)
    together = TextFeaturizer(config).fit_transform(TEXTS)
    apart = TextFeaturizer(config).fit(TEXTS).transform(TEXTS)
    np.testing.assert_array_equal(together, apart)


def test_whitened_components_have_unit_rms_and_unwhitened_keep_their_spread() -> None:
    whitened = TextFeaturizer(FeaturizerConfig(min_df=1, components=4)).fit_transform(TEXTS)[:, :4]
    featurizer = TextFeaturizer(FeaturizerConfig(min_df=1, components=4, whiten=False))
    plain = featurizer.fit_transform(TEXTS)[:, :4]
    np.testing.assert_allclose(np.sqrt((whitened**2).mean(axis=0)), 1.0, rtol=1e-5)
    rms = np.sqrt((plain**2).mean(axis=0))
    np.testing.assert_allclose(rms, featurizer.component_rms / featurizer.component_rms[0], rtol=1e-5)
    assert rms[0] == pytest.approx(1.0, rel=1e-5) and np.all(np.diff(rms) <= 1e-6)  # descending spread
    np.testing.assert_allclose(plain, whitened * rms, rtol=1e-4, atol=1e-6)  # the same directions


def test_no_components_leaves_only_the_length_features_and_the_bias() -> None:
    features = TextFeaturizer(FeaturizerConfig(min_df=1, components=0)).fit_transform(TEXTS)
    assert features.shape == (len(TEXTS), N_DENSE_EXTRAS)
    np.testing.assert_array_equal(features[:, -1], 1.0)


def test_more_components_than_the_texts_span_gives_as_many_as_they_do() -> None:
    texts = ["alpha beta", "alpha beta", "gamma delta", "gamma delta", "epsilon zeta"]  # 5 texts, 3 directions
    featurizer = TextFeaturizer(FeaturizerConfig(min_df=1, components=64))
    features = featurizer.fit_transform(texts)
    assert featurizer.projection.shape[1] == 3 and features.shape[1] == featurizer.dimension
    np.testing.assert_array_equal(features, featurizer.transform(texts))
