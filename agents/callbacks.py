"""Callbacks every step-wise learner calls, in the style of stable-baselines3's ``BaseCallback``.

A learner that learns step by step (LinUCB online, PPO) calls, on the :class:`CallbackList` of
what its caller passed:

* ``on_training_start(learner)`` once, before the first step (also when nothing is left to do);
* ``on_step(step, outcomes)`` after every environment step (one episode for LinUCB, one batch
  of ``n_envs`` for PPO), ``step`` being the episodes played so far; False stops training
  (the learner then sets ``stopped_early``);
* ``on_rollout_end(step, scalars)`` whenever its state is whole and may be saved: every step
  learned from is in it (after every LinUCB update; after every PPO rollout's update), with the
  learner's own diagnostics (PPO's losses);
* ``on_training_end(learner)`` once, after the last step.

Callbacks share a ``record`` of the latest scalars (SB3's ``logger.record``): keep-best writes its
last validation score there, TensorBoard logs it. What a callback must carry over a resume is its
:meth:`Callback.state_dict`; the checkpoint holds it beside the learner's state, in one file.

Here: :class:`KeepBest`, keep-best on validation with early stopping. TensorBoard logging and
checkpoints write files, so they live with the run (``training.tensorboard``,
``training.checkpoints``), as subclasses of :class:`Callback`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agents.base import Agent, FeaturizedSplit, State, ValidationRule


@dataclass(frozen=True)
class Outcomes:
    """What the episodes of one environment step gave: (n,) arrays, n = episodes in the step."""

    reward: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    regret: np.ndarray


class Callback:
    """One hook per moment of training; every hook does nothing unless overridden."""

    def __init__(self) -> None:
        self.record: dict[str, float] = {}  # replaced by the list's, shared with the other callbacks

    def on_training_start(self, learner: Agent) -> None:
        """Before the first step."""

    def on_step(self, step: int, outcomes: Outcomes) -> bool:
        """After an environment step; False stops training."""
        return True

    def on_rollout_end(self, step: int, scalars: dict[str, float]) -> None:
        """The learner's state is whole (may be saved); ``scalars`` are its diagnostics."""

    def on_training_end(self, learner: Agent) -> None:
        """After the last step."""

    def state_dict(self) -> State:
        """What this callback carries over a resume (nothing by default)."""
        return {}

    def load_state_dict(self, state: State) -> None:
        """Continue from :meth:`state_dict`."""


class CallbackList(Callback):
    """Calls every callback in order; like SB3's, every callback sees every step."""

    def __init__(self, callbacks: Sequence[Callback] = ()) -> None:
        super().__init__()
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            callback.record = self.record

    def on_training_start(self, learner: Agent) -> None:
        """Every callback's ``on_training_start``."""
        for callback in self.callbacks:
            callback.on_training_start(learner)

    def on_step(self, step: int, outcomes: Outcomes) -> bool:
        """Every callback's ``on_step``; False if any of them says stop."""
        keep_going = True
        for callback in self.callbacks:
            keep_going = callback.on_step(step, outcomes) and keep_going
        return keep_going

    def on_rollout_end(self, step: int, scalars: dict[str, float]) -> None:
        """Every callback's ``on_rollout_end``."""
        for callback in self.callbacks:
            callback.on_rollout_end(step, scalars)

    def on_training_end(self, learner: Agent) -> None:
        """Every callback's ``on_training_end``."""
        for callback in self.callbacks:
            callback.on_training_end(learner)


class KeepBest(Callback):
    """Keep-best on validation, with early stopping: the state exported is the best one scored.

    The learner's :meth:`~agents.base.Agent.validation_rule` says how to score it, how often
    (``every``, else this callback's ``every``: the checkpoint interval) and how patiently. Every
    ``every`` steps the current state is scored; a score above the best so far makes it the best
    (:meth:`~agents.base.Agent.parameters` copied), and after ``patience`` evaluations without
    improvement training stops. At the end the final state is scored if it was not yet (unless
    training stopped early), and the best is restored into the learner. Without a criterion the
    newest state is the best. ``best_step`` is the step the restored state comes from.
    """

    def __init__(self, validation: FeaturizedSplit | None, every: int) -> None:
        if every < 1:
            raise ValueError(f"evaluation interval must be >= 1, got {every}")
        super().__init__()
        self.validation = validation
        self.default_every = every
        self.rule = ValidationRule()
        self.learner: Agent | None = None
        self.best_score = -np.inf
        self.best_step: int | None = None
        self.best_parameters: State | None = None
        self.evaluated_step: int | None = None  # the step of the last state scored
        self.next_evaluation: int | None = None

    @property
    def every(self) -> int:
        """Steps between evaluations."""
        return self.rule.every or self.default_every

    def on_training_start(self, learner: Agent) -> None:
        """Take the learner's rule; the first evaluation is ``every`` steps from here (unless resumed)."""
        self.learner = learner
        self.rule = learner.validation_rule(self.validation)
        if self.next_evaluation is None:
            self.next_evaluation = learner.steps_done + self.every

    def on_step(self, step: int, outcomes: Outcomes) -> bool:
        """Score the state when an evaluation is due; False when patience has run out."""
        if self.rule.score is None or self.next_evaluation is None or step < self.next_evaluation:
            return True
        self.next_evaluation += self.every
        if self._evaluate(step):
            return True
        patience = self.rule.patience
        return not (patience and step - (self.best_step or 0) >= patience * self.every)

    def on_training_end(self, learner: Agent) -> None:
        """Score the final state if it is new, then restore the best state into the learner."""
        step = learner.steps_done
        if self.rule.score is not None and not learner.stopped_early and self.evaluated_step != step:
            self._evaluate(step)
        if self.rule.score is None or self.best_parameters is None:  # no criterion, or no score above -inf
            self._remember(learner, self.best_score, step)
        assert self.best_parameters is not None
        learner.load_parameters(self.best_parameters)

    def _evaluate(self, step: int) -> bool:
        """Score the current state at ``step``; True if it is the best so far (and is kept)."""
        assert self.rule.score is not None and self.learner is not None
        score = self.rule.score()
        self.evaluated_step = step
        self.record["charts/validation_score"] = score
        if score > self.best_score:
            self._remember(self.learner, score, step)
            return True
        return False

    def _remember(self, learner: Agent, score: float, step: int) -> None:
        self.best_score, self.best_step = score, step
        self.best_parameters = learner.parameters()

    def state_dict(self) -> State:
        """The best state, its score and step, and the evaluation schedule."""
        return {
            "best_score": self.best_score,
            "best_step": self.best_step,
            "best_parameters": self.best_parameters,
            "evaluated_step": self.evaluated_step,
            "next_evaluation": self.next_evaluation,
        }

    def load_state_dict(self, state: State) -> None:
        """Continue from :meth:`state_dict`."""
        self.best_score = float(state["best_score"])
        self.best_step = state["best_step"]
        self.best_parameters = state["best_parameters"]
        self.evaluated_step = state["evaluated_step"]
        self.next_evaluation = state["next_evaluation"]
