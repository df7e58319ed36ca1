"""PPO's few sensitive settings, chosen on the validation split within a time budget (issue 16).

:func:`tune_ppo` runs a **coordinate search** over :data:`PPO_GRID`: the given configuration is the
first candidate; then, axis by axis in the grid's order, each other value of that axis is tried
on the best configuration found when the axis starts. Every candidate is a fresh
:class:`~agents.ppo.PPORouter` trained for a shortened budget (at most ``steps`` episodes, whole
rollouts) with keep-best and early stopping on the validation split, and is scored by PPO's own
validation criterion (:meth:`~agents.ppo.PPORouter.validation_rule`: the share of the
random-to-oracle gap closed over a sweep of cost weights) at its kept state. The chosen
configuration is the best candidate's settings with the given ``total_steps``: the final run
trains for the full budget.

**Noise.** Validation splits of routing logs are small (tens of queries on RouteProfile), and a
candidate's score moves by a few hundredths with nothing but the noise of which queries were
held out. So a candidate replaces the best one only if it is better by more than
:data:`MARGIN` standard errors of the paired difference: the criterion is a mean over
validation queries of per-query shares (:func:`~agents.ppo.oracle_gap_shares`), and with d_n the
difference of query n's shares, the gain d̄ must exceed 2 · sd(d) / √N, a one-sided paired
z-test at about 2.5% per challenger (Hastie, Tibshirani & Friedman, "The Elements of
Statistical Learning", 2nd ed., 2009, §7.10, choose within one standard error; with four
challengers per search, one was too lenient: on RouteProfile it changed the settings in two
of five folds, both for the worse, and lost 0.011 AIQ). The given values therefore stay unless
the data clearly prefer others.

**Which settings.** Those that moved PPO's cross-validated AIQ (5 folds by query): on RouterBench
(BENCHMARKS.md, "Routing quality") ``learning_rate`` 3e-4 instead of 1e-3 lost 0.040 and a
128-wide network with ``weight_decay`` 0.01 lost 0.027, while ``ent_coef`` 0.01 (+0.002; −0.004
in a later run) and ``n_epochs`` 8 (+0.001) stayed within the noise (±0.013); on RouteProfile
(420 queries) every variant stayed within its noise (mean of 3 fold seeds: base 0.605,
``learning_rate`` 3e-4 0.610, ``weight_decay`` 0.01 0.609, ``hidden`` (64,) 0.604; seed-to-seed
spread ±0.01). So the grid holds the learning rate and the network's capacity and
regularisation, and leaves out the entropy coefficient, the epochs, ``clip_range`` and the
measures (a)-(e) of :mod:`agents.ppo`.

**Time.** A new candidate starts only while less than ``seconds`` have passed since the search
began (the clock is read once before each candidate), so the search may overrun by one
candidate's training; the order puts the given configuration first, and the axes that matter
most next, so a short budget still tries those. Which candidates fit depends on the machine's
speed; for a given set of candidates tried, the scores and the choice are deterministic for a
seed (``agent.ppo.seed``; PPO on the CPU with one thread repeats exactly).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from agents.base import FeaturizedSplit, TrainingTask
from agents.callbacks import KeepBest
from agents.ppo import PPOConfig, PPORouter
from training.config import RunConfig

#: Standard errors of the paired difference by which a candidate must beat the best so far.
MARGIN = 2.0
#: Episodes a candidate trains for, at most (rounded down to whole rollouts; the configured
#: ``total_steps`` if smaller). PPO's validation score has mostly levelled off by then.
TUNING_STEPS = 102_400


@dataclass(frozen=True)
class Axis:
    """One setting of :class:`~agents.ppo.PPOConfig` and the values the search tries for it."""

    name: str
    values: tuple[Any, ...]


#: The axes of the coordinate search, the one that mattered most first: 1 + 2 + 1 + 1 candidates.
PPO_GRID: tuple[Axis, ...] = (
    Axis("learning_rate", (3e-4, 1e-3, 3e-3)),
    Axis("hidden", ((64,), (256,))),
    Axis("weight_decay", (1e-3, 1e-2)),
)


@dataclass(frozen=True)
class Trial:
    """One candidate: its settings on the grid's axes, its validation score, how it compared, where it stopped."""

    settings: dict[str, Any]
    score: float  # the validation score of its kept state (the oracle gap closed)
    improvement: float | None  # paired mean gain over the best candidate before it (None: the first)
    standard_error: float | None  # the standard error of that paired mean
    accepted: bool  # whether it became the best candidate (the first always does)
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
    settings come back with the reason. The report holds the grid, every trial (:class:`Trial`),
    the number of candidates not reached, the seconds used and the choice.
    """
    base = config.agent.ppo
    start = clock()
    report: dict[str, Any] = {
        "objective": "validation oracle gap closed (agents.ppo.PPORouter.validation_rule), paired, two standard errors",
        "grid": {axis.name: [_plain(value) for value in axis.values] for axis in grid},
        "steps_per_candidate": _shortened(base, steps).total_steps,
        "seconds_budget": seconds,
    }
    reason = _unscorable(config, validation)
    if reason:
        return base, report | {"skipped": reason, "trials": [], "seconds_used": 0.0, "chosen": _settings(base, grid)}
    search = _CoordinateSearch(config, train, validation, grid, steps)
    for candidate in search.candidates():
        if clock() - start >= seconds:
            break
        search.attempt(candidate, clock)
    return search.chosen, report | {
        "trials": [asdict(trial) for trial in search.trials],
        "not_reached": _count(base, grid) - len(search.trials),
        "seconds_used": clock() - start,
        "chosen": _settings(search.chosen, grid),
    }


class _CoordinateSearch:
    """The search's state: the best candidate so far and its per-query validation shares, and the trials."""

    def __init__(
        self, config: RunConfig, train: FeaturizedSplit, validation: FeaturizedSplit, grid: Sequence[Axis], steps: int
    ) -> None:
        self.config, self.train, self.validation, self.grid, self.steps = config, train, validation, grid, steps
        self.chosen = config.agent.ppo
        self.best_shares: np.ndarray | None = None
        self.trials: list[Trial] = []

    def candidates(self) -> Iterator[PPOConfig]:
        """The given configuration, then per axis its other values on the best configuration when the axis starts."""
        yield self.chosen
        for axis in self.grid:
            incumbent = self.chosen
            for value in axis.values:
                if _plain(value) != _plain(getattr(incumbent, axis.name)):
                    yield replace(incumbent, **{axis.name: value})

    def attempt(self, candidate: PPOConfig, clock: Callable[[], float]) -> None:
        """Train and score ``candidate``: the new best if its paired gain exceeds :data:`MARGIN` standard errors."""
        began = clock()
        shares, best_step, steps_done = _trial(
            self.config, _shortened(candidate, self.steps), self.train, self.validation
        )
        gain: float | None = None
        error: float | None = None
        if self.best_shares is not None:
            gain, error = _paired(shares, self.best_shares)
        accepted = gain is None or (error is not None and gain > MARGIN * error)
        if accepted:
            self.chosen, self.best_shares = candidate, shares
        self.trials.append(
            Trial(
                _settings(candidate, self.grid),
                float(shares.mean()),
                gain,
                error,
                accepted,
                best_step,
                steps_done,
                clock() - began,
            )
        )


def _count(base: PPOConfig, grid: Sequence[Axis]) -> int:
    """How many candidates the whole search has: the first, and per axis its values but the incumbent's.

    The incumbent's value on an axis not yet searched is the first candidate's, so the count does
    not depend on which candidates won."""
    return 1 + sum(sum(_plain(value) != _plain(getattr(base, axis.name)) for value in axis.values) for axis in grid)


def _paired(shares: np.ndarray, best_shares: np.ndarray) -> tuple[float, float]:
    """The mean over validation queries of the gain d_n = share_n − best_n, and its standard error sd(d) / √N."""
    gain = shares - best_shares
    error = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else 0.0
    return float(gain.mean()), error


def _trial(
    config: RunConfig, candidate: PPOConfig, train: FeaturizedSplit, validation: FeaturizedSplit
) -> tuple[np.ndarray, int | None, int]:
    """Train one candidate with keep-best on ``validation``: per query its kept state's share of the score,
    the step of that state and the steps trained."""
    agent = PPORouter(train.log.n_models, train.features.shape[1], candidate, config.reward.cost_weight)
    keep_best = KeepBest(validation, config.agent.checkpoint_every)
    agent.train(TrainingTask(train, validation, reward=config.reward, learning="online", seed=config.seed), [keep_best])
    return agent.validation_shares(validation), keep_best.best_step, agent.steps_done


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
