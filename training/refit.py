"""``train.py --refit-all``: after the held-out evaluation, the same configuration refit on every query.

The evaluation needs a policy that never saw the test split, so the report's metrics are those of
the policy trained on the training split. A user who has accepted those numbers usually wants
the final policy trained on all the data: on RouterBench, moving from 60% to 85% of the queries
for training raised hidden-test AIQ (BENCHMARKS.md, *Refit on all the data*). This is the
practice of refitting the selected model on the whole data set once the evaluation is done
(scikit-learn's ``GridSearchCV(refit=True)``; Hastie, Tibshirani & Friedman, *The Elements of
Statistical Learning*, §7.10), with the cost that the refit policy has no held-out estimate of
its own, which the report and the metadata say (:class:`training.inputs.ExportedPolicy`).

What is refit, with the run's configuration unchanged: the featurizer, on every query's text
(or the log's embeddings, as before); on a bandit-feedback log, the reward model and the table
of ``env.feedback`` over every logged round; the agent, of the same kind and hyperparameters.
Nothing is held out, so nothing is scored on validation: a step-wise learner learns for the
steps of the evaluated policy's exported state (its ``best_step``, which keep-best chose on
validation; PPO in whole rollouts, rounded down, at least one) and keeps its last state. The
exported default cost weight is the evaluation's (the configured weight, or the one
``--target-cost``/``--target-quality`` chose on validation), except that a ``reward.budget``
run exports the multiplier the refit learned itself. TensorBoard curves of the refit go to
``tb/refit``, its checkpoints to ``checkpoints/refit`` (``--resume`` with ``--refit-all``
continues them).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from agents.base import FeaturizedSplit
from data.routing_log import RoutingLog
from training.config import RunConfig
from training.features import estimated_table, featurize, fit_featurizer, fit_reward_model, learning_estimator
from training.inputs import ExportedPolicy, Learned
from training.learning import learn
from training.tensorboard import TensorBoardLogger

REFIT = "refit"  # the refit's folder under the run's tb/ and checkpoints/


def refit_all(
    config: RunConfig, log: RoutingLog, evaluated: Learned, cost_weight: float, out: Path, progress: bool
) -> ExportedPolicy:
    """The policy of ``config`` trained on every query of ``log``, to export instead of ``evaluated``.

    ``cost_weight`` is the evaluation's operating weight; ``out`` the run directory.
    """
    featurizer = fit_featurizer(config, log) if config.input == "text" else None
    everything = featurize(log, featurizer)
    if log.feedback == "bandit":
        model = fit_reward_model(config, everything)
        everything = estimated_table(config, everything, model, learning_estimator(config))
    nothing = FeaturizedSplit(everything.log.subset(np.arange(0)), everything.features[:0])  # no validation
    tensorboard = TensorBoardLogger(out / "tb" / REFIT)
    try:
        refit_config = with_steps(config, evaluated.training["best_step"])
        agent, training, learned_weight = learn(
            refit_config, everything, nothing, tensorboard, out / "checkpoints" / REFIT, progress
        )
    finally:
        tensorboard.close()
    weight = cost_weight if learned_weight is None else learned_weight
    return ExportedPolicy(agent, featurizer, weight, "all", training["best_step"])


def with_steps(config: RunConfig, steps: int) -> RunConfig:
    """``config`` with its step-wise learner set to learn ``steps`` episodes; a one-pass fit as it is.

    PPO trains in whole rollouts of ``n_envs × n_steps`` episodes (``agent.ppo.total_steps`` must
    be a multiple): ``steps`` is rounded down to one, and is at least one rollout.
    """
    agent = config.agent
    if agent.kind == "ppo":
        rollout = agent.ppo.n_envs * agent.ppo.n_steps
        ppo = replace(agent.ppo, total_steps=max(rollout, steps // rollout * rollout))
        return replace(config, agent=replace(agent, ppo=ppo))
    if agent.learning == "online":
        return replace(config, agent=replace(agent, online_steps=steps))
    return config
