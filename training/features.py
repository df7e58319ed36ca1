"""A run's queries as features, and a bandit-feedback log as the estimated tables its learners see.

One implementation for the two times a run featurizes: the splits of the held-out evaluation
(:mod:`training.run`) and every query at once for ``train.py --refit-all`` (:mod:`training.refit`).
"""

from __future__ import annotations

import numpy as np

from agents.base import FeaturizedSplit
from data.featurizer import TextFeaturizer
from data.routing_log import RoutingLog
from data.schema import DataError
from data.splits import hash_unit
from envs.estimators import PredictedOutcomes, RewardModel, TableEstimator, counterfactual_log, logged_outcomes
from training.config import RunConfig


def fit_featurizer(config: RunConfig, train: RoutingLog) -> TextFeaturizer:
    """The featurizer of ``train``'s texts; beyond ``fit_sample`` of them, those first by query-id hash.

    The hash (:func:`data.splits.hash_unit` with the run's seed) is the ``split`` value that
    ``train.py --ray`` keeps per query, so the distributed fit samples exactly these texts.
    """
    keys = hash_unit(train.query_ids, config.seed) if train.n_queries > config.featurizer.fit_sample else None
    return TextFeaturizer(config.featurizer).fit(train.queries, sample_keys=keys)


def featurize(part: RoutingLog, featurizer: TextFeaturizer | None) -> FeaturizedSplit:
    """``part`` with its text features, or its own embeddings and a bias column (``input: embedding``)."""
    if featurizer is not None:
        return FeaturizedSplit(part, featurizer.transform(part.queries))
    if part.embeddings is None:
        raise DataError("input: embedding needs an 'embedding' column on every row of the log")
    return FeaturizedSplit(part, np.hstack([part.embeddings, np.ones((part.n_queries, 1), dtype=np.float32)]))


def fit_reward_model(config: RunConfig, part: FeaturizedSplit) -> RewardModel:
    """m̂: a per-arm ridge regression (``env.reward_model``) on ``part``'s logged rounds."""
    actions, _, quality, cost = logged_outcomes(part.log)
    model = RewardModel(part.log.n_models, config.env.reward_model)
    model.fit(part.features, actions, quality, cost)
    return model


def estimated_table(
    config: RunConfig, part: FeaturizedSplit, model: RewardModel, estimator: TableEstimator
) -> FeaturizedSplit:
    """``part`` as a table of ``estimator``'s outcomes from m̂ (:func:`envs.estimators.counterfactual_log`)."""
    if part.log.n_queries == 0:
        return part
    estimated = counterfactual_log(part.log, model.predict(part.features), estimator, config.env.max_weight)
    return FeaturizedSplit(estimated, part.features)


def learning_estimator(config: RunConfig) -> TableEstimator:
    """The estimator of the table a learner learns from: ``env.feedback`` (DM when left at "full").

    DM has the lowest variance for learning; the evaluation always uses DR.
    """
    return "dm" if config.env.feedback == "full" else config.env.feedback


def counterfactual_splits(
    config: RunConfig, train_set: FeaturizedSplit, validation_set: FeaturizedSplit, test_set: FeaturizedSplit
) -> tuple[FeaturizedSplit, FeaturizedSplit, PredictedOutcomes]:
    """A bandit-feedback log's training and validation splits as estimated outcome tables, and m̂ on its test split.

    m̂ is fitted on the training split's logged rounds (:func:`fit_reward_model`). The training
    split becomes the table of :func:`learning_estimator`; validation the DR table, whose mean
    over a deterministic policy's cells is that policy's DR estimate, unbiased when the
    propensities are right. The test split is left to :func:`evaluation.evaluate.evaluate`,
    which estimates it by DR and by every OPE estimator.
    """
    model = fit_reward_model(config, train_set)
    return (
        estimated_table(config, train_set, model, learning_estimator(config)),
        estimated_table(config, validation_set, model, "dr"),
        model.predict(test_set.features),
    )
