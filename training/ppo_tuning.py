"""PPO's few sensitive settings, chosen on the validation split within a time budget (issue 16).

:func:`tune_ppo` runs a **coordinate search** over :data:`PPO_GRID`: the given configuration is the
first candidate; then, axis by axis in the grid's order, each other value of that axis is tried
with the best values found so far on the axes before it, and the axis keeps its best value. Every
candidate is a fresh :class:`~agents.ppo.PPORouter` trained for a shortened budget (at most
``steps`` episodes, whole rollouts) with keep-best and early stopping on the validation split,
and is scored by PPO's own validation rule (:meth:`~agents.ppo.PPORouter.validation_rule`, the
share of the random-to-oracle gap closed over a sweep of cost weights) at its kept state. The
chosen configuration is the best candidate's settings with the given ``total_steps``: the final
run trains for the full budget. Ties keep the earlier candidate, so the given values win unless
another is strictly better.

**Which settings.** The axes are those that moved PPO's cross-validated AIQ on RouterBench and
RouteProfile (BENCHMARKS.md, "PPO's settings"); ``n_epochs``, ``clip_range`` and the measures
(a)-(e) of :mod:`agents.ppo` moved it by less than the noise and are not tuned.

**Time.** A new candidate starts only while less than ``seconds`` have passed since the search
began (the clock is read once before each candidate), so the search may overrun by one
candidate's training; the order puts the given configuration first, and the axes that matter
most next, so a short budget still tries those. Which candidates fit depends on the machine's
speed; for a given set of candidates tried, the scores and the choice are deterministic for a
seed (``agent.ppo.seed``; PPO on the CPU with one thread repeats exactly).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from agents.base import FeaturizedSplit, TrainingTask
from agents.callbacks import KeepBest
from agents.ppo import PPOConfig, PPORouter
from training.config import RunConfig

#: Episodes a candidate trains for, at most (rounded down to whole rollouts; the configured
#: ``total_steps`` if smaller). PPO's validation score has mostly levelled off by then.
TUNING_STEPS = 102_400


@dataclass(frozen=True)
class Axis:
    """One setting of :class:`~agents.ppo.PPOConfig` and the values the search tries for it."""

    name: str
    values: tuple[Any, ...]


#: The axes of the coordinate search, the one that matters most first.
PPO_GRID: tuple[Axis, ...] = (
    Axis("learning_rate", (3e-4, 1e-3, 3e-3)),
    Axis("ent_coef", (0.003, 0.01, 0.03)),
    Axis("hidden", ((64,), (256,))),
    Axis("weight_decay", (1e-3, 1e-2)),
)


@dataclass(frozen=True)
class Trial:
    """One candidate: its settings on the grid's axes, its validation score, where it stopped, how long."""

    settings: dict[str, Any]
    score: float
    best_step: int | None
    steps: int
    seconds: float


def tune_ppo(
    config: RunConfig,
    train: FeaturizedSplit,
    validation: FeaturizedSplit,
    seconds: float,
    grid: Sequence[Axis] = PPO_GRID,
    steps: int = TUNING_STEPS,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[PPOConfig, dict[str, Any]]:
    """The best of the coordinate search's candidates (module docstring) and a report of the search.

    ``config.agent.ppo`` is the first candidate and the fallback; ``config.reward`` the reward.
    Under a reward budget, or without validation queries, nothing can be scored: the given
    settings come back with the reason. The report holds the grid, every trial (settings,
    score, best step, steps, seconds), the candidates not reached, the seconds used and the choice.
    """
    base = config.agent.ppo
    start = clock()
    report: dict[str, Any] = {
        "objective": "validation oracle gap closed (agents.ppo.PPORouter.validation_rule)",
        "grid": {axis.name: [_plain(value) for value in axis.values] for axis in grid},
        "steps_per_candidate": _shortened(base, steps).total_steps,
        "seconds_budget": seconds,
    }
    reason = _unscorable(config, validation)
    if reason:
        return base, report | {"skipped": reason, "trials": [], "seconds_used": 0.0, "chosen": _settings(base, grid)}
    trials: list[Trial] = []
    not_reached = 0

    def scored(candidate: PPOConfig) -> float | None:
        """The candidate's score, or None when the time is spent (it is then not reached)."""
        nonlocal not_reached
        began = clock()
        if began - start >= seconds:
            not_reached += 1
            return None
        score, best_step, steps_done = _trial(config, _shortened(candidate, steps), train, validation)
        trials.append(Trial(_settings(candidate, grid), score, best_step, steps_done, clock() - began))
        return score

    chosen, best_score = base, scored(base)
    for axis in grid:
        incumbent = chosen
        for value in axis.values:
            if _plain(value) == _plain(getattr(incumbent, axis.name)):
                continue
            candidate = replace(incumbent, **{axis.name: value})
            score = scored(candidate)
            if score is not None and (best_score is None or score > best_score):
                chosen, best_score = candidate, score
    return chosen, report | {
        "trials": [asdict(trial) for trial in trials],
        "not_reached": not_reached,
        "seconds_used": clock() - start,
        "chosen": _settings(chosen, grid),
    }


def _trial(config: RunConfig, candidate: PPOConfig, train: FeaturizedSplit,
           validation: FeaturizedSplit) -> tuple[float, int | None, int]:
    """Train one candidate with keep-best on ``validation``: the kept state's score, its step, the steps trained."""
    agent = PPORouter(train.log.n_models, train.features.shape[1], candidate, config.reward.cost_weight)
    keep_best = KeepBest(validation, config.agent.checkpoint_every)
    agent.train(TrainingTask(train, validation, reward=config.reward, learning="online", seed=config.seed), [keep_best])
    return float(keep_best.best_score), keep_best.best_step, agent.steps_done


def _shortened(candidate: PPOConfig, steps: int) -> PPOConfig:
    """``candidate`` trained for at most ``steps`` episodes, in whole rollouts (at least one)."""
    rollout = candidate.n_envs * candidate.n_steps
    return replace(candidate, total_steps=max(rollout, min(candidate.total_steps, steps) // rollout * rollout))


def _unscorable(config: RunConfig, validation: FeaturizedSplit) -> str:
    """Why no candidate can be scored ("" when they can)."""
    if config.reward.budget is not None:
        return "reward.budget: PPO keeps its last parameters under a budget, so nothing is scored on validation"
    if validation.log.n_queries == 0:
        return "no validation queries to score the candidates on"
    return ""


def _settings(candidate: PPOConfig, grid: Sequence[Axis]) -> dict[str, Any]:
    """The candidate's values on the grid's axes."""
    return {axis.name: _plain(getattr(candidate, axis.name)) for axis in grid}


def _plain(value: Any) -> Any:
    """A setting as JSON has it (a tuple of layer sizes as a list)."""
    return list(value) if isinstance(value, tuple) else value
