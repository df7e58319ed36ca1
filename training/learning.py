"""How a run learns: the configured agent fitted on the training split (one pass, online, or PPO)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np

from agents.base import Agent
from agents.linucb import LinUCB
from agents.ppo import PPORouter
from data.schema import DataError
from envs.routing_env import RoutingEnv
from training.checkpoints import Checkpoint, Checkpointer
from training.config import RunConfig
from training.factory import make_agent
from training.inputs import FeaturizedSplit
from training.tensorboard import TensorBoardLogger


def learn(
    config: RunConfig,
    train_set: FeaturizedSplit,
    validation_set: FeaturizedSplit,
    tensorboard: TensorBoardLogger,
    out: Path,
    progress: bool,
) -> tuple[Agent, dict[str, Any], float | None]:
    """Fit the configured agent on the training split.

    Returns the agent, what its training did (``steps``, and ``best_step``: the step whose state
    is exported), and the cost weight it learned (the averaged budget multiplier λ̄ when the
    reward has a budget and learning is online or by PPO; None otherwise).
    """
    log = train_set.log
    if config.agent.kind == "ppo":
        ppo, training = _learn_ppo(config, train_set, validation_set, tensorboard, out)
        return ppo, training, None if ppo.budget is None else ppo.cost_weight
    agent = make_agent(config.agent.kind, config, log.n_models, train_set.features.shape[1])
    if not isinstance(agent, LinUCB):  # the supervised peers learn in one fit
        agent.fit(train_set.features, log.quality, log.cost)
        return agent, {"steps": log.n_queries, "best_step": log.n_queries}, None
    if config.agent.learning == "fit":
        if config.reward.budget is not None:
            raise DataError("a budget reward needs agent.learning=online (the multiplier is learned online)")
        agent.fit(train_set.features, log.quality, log.cost)
        return agent, {"steps": log.n_queries, "best_step": log.n_queries}, None
    env = RoutingEnv(log, train_set.features, config.reward)
    return (
        agent,
        _learn_online(config, agent, env, validation_set, tensorboard, out, progress),
        env.default_cost_weight,
    )


def _learn_ppo(
    config: RunConfig,
    train_set: FeaturizedSplit,
    validation_set: FeaturizedSplit,
    tensorboard: TensorBoardLogger,
    out: Path,
) -> tuple[PPORouter, dict[str, Any]]:
    """Preference-conditioned PPO, checkpointed every ``agent.checkpoint_every`` steps.

    A checkpoint in the run directory (``--resume``) is restored first; PPO then trains only the
    remaining steps. Validation early stopping keeps the best parameters, which are exported.
    """
    log = train_set.log
    agent = cast(PPORouter, make_agent("ppo", config, log.n_models, train_set.features.shape[1]))
    checkpoint = out / "checkpoints" / "ppo.zip"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    resumed_from = None
    if checkpoint.exists():
        agent.load(checkpoint)
        resumed_from = agent.steps_done
    saved_at = agent.steps_done

    def on_rollout(step: int, scalars: dict[str, float]) -> None:
        nonlocal saved_at
        tensorboard.log_scalars(scalars, step)
        if step - saved_at >= config.agent.checkpoint_every:
            agent.save(checkpoint)
            saved_at = step

    validation = validation_set if validation_set.log.n_queries else None
    agent.fit(
        train_set.features,
        log.quality,
        log.cost,
        val_features=None if validation is None else validation.features,
        val_quality=None if validation is None else validation.log.quality,
        val_cost=None if validation is None else validation.log.cost,
        callback=on_rollout,
    )
    agent.save(checkpoint)
    return agent, {
        "steps": agent.steps_done,
        "best_step": agent.best_step,
        "resumed_from": resumed_from,
        "stopped_early": agent.stopped_early,
    }


def _learn_online(
    config: RunConfig,
    agent: LinUCB,
    env: RoutingEnv,
    validation_set: FeaturizedSplit,
    tensorboard: TensorBoardLogger,
    out: Path,
    progress: bool,
) -> dict[str, Any]:
    """LinUCB learning by interaction, checkpointed every ``agent.checkpoint_every`` steps.

    If the run directory holds checkpoints (``--resume``), learning continues from the newest
    with the remaining steps only. At each checkpoint the greedy policy's validation reward is
    measured; the best state is the one exported (``best_step`` in the report).
    """
    total = config.agent.online_steps
    checkpoints = Checkpointer(out / "checkpoints", config.agent.checkpoint_every)
    latest = checkpoints.latest()
    start, seed_or_none = 0, cast("int | None", config.seed)
    if latest is not None:
        agent.load_state_dict(latest.arrays)
        env.reset(seed=config.seed)  # builds the task; then the saved generator and multiplier replace it
        generator = np.random.default_rng()
        generator.bit_generator.state = latest.meta["env_generator"]
        env.np_random = generator
        if latest.meta.get("multiplier") is not None and env.task.multiplier is not None:
            env.task.multiplier.load_state_dict(latest.meta["multiplier"])
        start, seed_or_none = latest.step, None

    def validation_reward() -> float:
        if validation_set.log.n_queries == 0:
            return float(start)  # no validation split: the newest state counts as the best
        weight = env.default_cost_weight if env.default_cost_weight is not None else config.reward.cost_weight
        actions = agent.predict(validation_set.features, weight)
        rows = np.arange(validation_set.log.n_queries)
        return float(validation_set.log.reward(weight)[rows, actions].mean())

    def on_step(step: int, reward: float, info: dict[str, Any]) -> None:
        tensorboard.on_step(step, reward, info)
        if checkpoints.due(step) or step == total:
            multiplier = env.task.multiplier
            meta = {
                "step": step,
                "score": validation_reward() if validation_set.log.n_queries else step,
                "env_generator": env.np_random.bit_generator.state,
                "multiplier": None if multiplier is None else multiplier.state_dict(),
            }
            checkpoints.save(Checkpoint({k: v.copy() for k, v in agent.state_dict().items()}, meta))

    if total > start:
        agent.learn(env, total - start, seed=seed_or_none, progress=progress, callback=on_step, start_step=start)
    best = checkpoints.best()
    if best is not None:
        agent.load_state_dict(best.arrays)
    return {"steps": total, "best_step": total if best is None else best.step, "resumed_from": start or None}
