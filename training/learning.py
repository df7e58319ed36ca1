"""How a run learns: the configured agent trained on the training split, with the run's callbacks.

Every kind goes the same way: a fresh agent from the registry, restored from the run's
checkpoint if there is one (``--resume``), then :meth:`~agents.base.Agent.train` with the
callbacks TensorBoard, keep-best on validation (with early stopping where the learner has
patience) and checkpoints. A learner that learns in one pass calls none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import Agent, FeaturizedSplit, TrainingTask
from agents.callbacks import Callback, KeepBest
from agents.registry import token_mode_kinds
from data.prices import PriceTable, token_mode_prices
from data.schema import DataError
from training.checkpoints import CheckpointCallback
from training.config import RunConfig
from training.factory import make_agent
from training.tensorboard import TensorBoardCallback, TensorBoardLogger


def learn(
    config: RunConfig,
    train_set: FeaturizedSplit,
    validation_set: FeaturizedSplit,
    tensorboard: TensorBoardLogger,
    checkpoint_folder: Path,
    progress: bool,
    callbacks: Sequence[Callback] = (),
) -> tuple[Agent, dict[str, Any], float | None]:
    """Train the configured agent on the training split, continuing from ``checkpoint_folder``'s checkpoint if any.

    Returns the agent, what its training did (``steps`` learned, from the agent's state;
    ``best_step``, the step whose state is exported; ``resumed_from``, the checkpoint's step;
    ``stopped_early``), and the cost weight it learned (the averaged budget multiplier λ̄ when
    the reward has a budget and the agent learns by interaction; None otherwise). ``callbacks``
    are called after the run's own (``train.py --refit-all`` stops its refit with one).
    """
    agent = make_agent(config.agent.kind, config, train_set.log.n_models, train_set.features.shape[1])
    validation = validation_set if validation_set.log.n_queries else None
    every = config.agent.checkpoint_every
    keep_best = KeepBest(validation, every)
    checkpoints = CheckpointCallback(checkpoint_folder, every, {"keep_best": keep_best})
    resumed_from = checkpoints.resume(agent)
    assert config.agent.learning is not None  # resolved to the kind's own by AgentConfig
    task = TrainingTask(
        train=train_set,
        validation=validation,
        reward=config.reward,
        learning=config.agent.learning,
        online_steps=config.agent.online_steps,
        seed=config.seed,
        progress=progress,
        prices=_token_prices(config, agent, train_set),
    )
    agent.train(task, [TensorBoardCallback(tensorboard), keep_best, checkpoints, *callbacks])
    training = {
        "steps": agent.steps_done,
        "best_step": agent.steps_done if keep_best.best_step is None else keep_best.best_step,
        "resumed_from": resumed_from,
        "stopped_early": agent.stopped_early,
    }
    return agent, training, agent.learned_cost_weight


def _token_prices(config: RunConfig, agent: Agent, train_set: FeaturizedSplit) -> np.ndarray | None:
    """The (K, 2) prices of a token-mode run (docs/contracts.md §2.10), or None: the agent learns USD costs.

    ``data.cost_mode`` auto is token mode when the training split allows it
    (:func:`data.prices.token_mode_prices`) and the agent can estimate tokens the way it learns
    (:attr:`agents.base.Agent.token_mode`); ``tokens`` makes either lack an error.
    """
    mode = config.data.cost_mode
    prices = token_mode_prices(train_set.log, PriceTable.load_or_default(config.data.prices), mode)
    if prices is None or config.agent.learning in agent.token_mode:
        return prices
    if mode == "tokens":
        raise DataError(
            f"data.cost_mode=tokens: agent.kind={config.agent.kind} with agent.learning={config.agent.learning} "
            f"estimates USD costs only (token mode: {token_mode_kinds()})"
        )
    return None
