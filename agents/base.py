"""What every learner offers (docs/architecture.md): one decision rule, one training entry point.

**The decision rule.** ``scores(features, w)`` is (N, K), higher is better, at cost weight w;
``predict`` is its argmax (ties to the lower index) at ``w`` or the agent's default weight.
``linear_map()`` and ``head()`` are what the exporter needs: the agent's scores are
``head(features @ linear_map(), w)``, so the featurizer's projection folds into the linear map.

**Learning.** ``fit(features, quality, cost)`` learns from a full-information table (MABWiser's
face); :meth:`Agent.train` is the one entry point training calls for every kind: it is given a
:class:`TrainingTask` (the training split, the validation split, how to learn) and the
callbacks of :mod:`agents.callbacks` (TensorBoard, keep-best and early stopping, checkpoints).
A learner that learns in one pass (``fit``) calls no callback: it has no step to log, check,
checkpoint or stop at. A learner that learns step by step (LinUCB online, PPO) calls them all
and offers the optional abilities a checkpoint needs: :meth:`Agent.state_dict` (everything to
resume) and :meth:`Agent.parameters` (what decides, the candidate that keep-best stores).

**Construction.** Every kind takes ``(n_models, dimension, config, cost_weight)``: its section of
the run configuration and the default cost weight; :mod:`agents.registry` maps ``agent.kind``
to the class and its section, and declares how each kind learns and what it reads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from data.routing_log import RoutingLog
from data.schema import DataError
from envs.rewards import RewardConfig

if TYPE_CHECKING:
    from agents.callbacks import Callback

#: A learner's state for a checkpoint: nested dicts whose leaves are arrays or JSON values.
State = dict[str, Any]
#: How a learner learns: one pass over a log (``fit``), or by interacting with an environment (``online``).
Learning = Literal["fit", "online"]


@dataclass(frozen=True)
class ObjectiveEstimates:
    """An agent's linear estimates of the costs beside USD (issue 22; docs/contracts.md §2.13).

    ``matrix`` (d, J·K): column j·K + k estimates objective ``names[j]`` of model k from the
    features, in the unit :data:`data.routing_log.OBJECTIVE_UNITS` gives (latency in seconds,
    energy in Wh). The exporter appends these columns to the linear map, so the exported policy
    scores quality − w_usd · usd − Σ_j w_j · objective_j at any weight vector.
    """

    names: tuple[str, ...]
    matrix: np.ndarray


@dataclass(frozen=True)
class FeaturizedSplit:
    """A split of a log and its (N, d) features: what a learner learns from and is validated on.

    Full information: every cell of ``log.quality`` and ``log.cost`` is known. A bandit-feedback
    split reaches a learner as the table of estimated outcomes that training made of it
    (``training.run``, :func:`envs.estimators.counterfactual_log`), every cell an estimate.
    """

    log: RoutingLog
    features: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> FeaturizedSplit:
        """(N, d) features with (N, K) quality and cost: models and queries named by position."""
        n, k = np.shape(quality)
        log = RoutingLog(
            models=tuple(str(arm) for arm in range(k)),
            query_ids=np.array([str(row) for row in range(n)], dtype=object),
            queries=[""] * n,
            quality=np.asarray(quality, dtype=np.float64),
            cost=np.asarray(cost, dtype=np.float64),
        )
        return cls(log, np.asarray(features))

    def outcome_table(self) -> RoutingLog:
        """The log as an environment learns from it: every cell an outcome the environment can return.

        A full-information split as it is. An estimated bandit-feedback table (every cell finite)
        without its logged actions and propensities: the environment then serves its cells as
        full information, so online learning learns from the same table as ``fit``, the one
        ``env.feedback`` made. A bandit log that was not estimated (unknown cells) is an error.
        """
        log = self.log
        if log.feedback == "full":
            return log
        if not (np.isfinite(log.quality).all() and np.isfinite(log.cost).all()):
            raise DataError("a bandit-feedback split must be estimated into a full table before learning online")
        return replace(log, feedback="full", action=None, propensity=None)


@dataclass(frozen=True)
class TrainingTask:
    """What a learner is given to learn from, the same for every kind.

    ``learning`` is ``fit`` (one pass over ``train``) or ``online`` (interaction with a routing
    environment over ``train`` for ``online_steps`` episodes, rewarded by ``reward``); PPO always
    interacts, for its own ``total_steps``. ``validation`` (None when the split is empty) is what
    keep-best and early stopping score on, through :meth:`Agent.validation_rule`. Which ways of
    learning and which reward options each kind reads is declared in :mod:`agents.registry`,
    which refuses the others before training. ``prices`` (K, 2), USD per 1M input and output
    tokens, when the run is in token mode (:func:`data.prices.token_mode_prices`): the training
    split's log then has every token count, and a learner that can (:attr:`Agent.token_mode`)
    estimates tokens and exports a head that prices them (docs/contracts.md §2.10).
    """

    train: FeaturizedSplit
    validation: FeaturizedSplit | None = None
    reward: RewardConfig = field(default_factory=RewardConfig)
    learning: Learning = "fit"
    online_steps: int = 0
    seed: int = 0
    progress: bool = False
    prices: np.ndarray | None = None

    def token_counts(self) -> np.ndarray:
        """(N, K, 2) the training split's prompt and completion tokens per query and model (token mode)."""
        log = self.train.log
        if log.prompt_tokens is None or log.completion_tokens is None:
            raise DataError("token mode needs the training split's prompt_tokens and completion_tokens")
        return np.stack([log.prompt_tokens, log.completion_tokens], axis=2)


@dataclass(frozen=True)
class ValidationRule:
    """How keep-best scores a learner's current state on validation data (higher is better).

    ``score`` None: the learner has no criterion here, and its newest state is the best.
    ``every``: steps between evaluations (None: the checkpoint interval); ``patience``:
    evaluations without improvement before training stops (0: never stop early).
    """

    score: Callable[[], float] | None = None
    every: int | None = None
    patience: int = 0


class Agent(ABC):
    """A learned router: the decision rule, the training entry point and the optional abilities."""

    name: ClassVar[str]
    score_kind: ClassVar[str]  # "utility" (estimated quality − w · cost) or "logit" (a policy's)
    #: Whether training stops early on a validation split, which a caller then holds out of the
    #: training data (the cross-validated comparison does, for PPO).
    stops_early: ClassVar[bool] = False
    #: The ways of learning with which the kind can estimate tokens in a token-mode run (none: USD only).
    token_mode: ClassVar[tuple[Learning, ...]] = ()

    def __init__(self, n_models: int, dimension: int, cost_weight: float = 0.0) -> None:
        self.n_models = n_models
        self.dimension = dimension
        self.cost_weight = cost_weight  # the default of predict(features) without a weight
        self.steps_done = 0  # what the learner has learned from: rows fitted, or episodes played
        self.stopped_early = False  # a callback ended training before its planned steps

    @abstractmethod
    def fit(self, features: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> Agent:
        """Learn from a full-information log: (N, d) features, (N, K) quality and cost."""

    @abstractmethod
    def scores(self, features: np.ndarray, cost_weight: float) -> np.ndarray:
        """(N, K) scores at ``cost_weight``; the decision is their argmax (ties to the lower index)."""

    @abstractmethod
    def linear_map(self) -> np.ndarray:
        """(d, m): the agent's first linear map of the features."""

    @abstractmethod
    def head(self) -> torch.nn.Module:
        """TorchScript-able module from (N, m) and the cost weight to (N, K) scores."""

    def objective_map(self) -> ObjectiveEstimates | None:
        """Linear estimates of the costs beside USD the agent learned (:class:`ObjectiveEstimates`); None: USD only."""
        return None

    def predict(self, features: np.ndarray, cost_weight: float | None = None) -> np.ndarray:
        """Model index per query: the argmax of :meth:`scores` at ``cost_weight`` or the default."""
        weight = self.cost_weight if cost_weight is None else cost_weight
        return np.argmax(self.scores(features, weight), axis=1)

    def train(self, task: TrainingTask, callbacks: Sequence[Callback] = ()) -> Agent:
        """Learn from ``task``: by default one pass of :meth:`fit` over the training split (no callbacks)."""
        self.fit(task.train.features, task.train.log.quality, task.train.log.cost)
        return self

    @property
    def cost_mode(self) -> str:
        """``"tokens"`` when :meth:`head` prices estimated tokens with a table it carries, else "usd"."""
        return "usd"

    @property
    def cost_weight_range(self) -> list[float] | None:
        """[low, high] of the weights the agent is conditioned on (the head clamps others); None if any."""
        return None

    @property
    def learned_cost_weight(self) -> float | None:
        """A default cost weight learned in training (λ̄ of a budget); None: the configured one."""
        return None

    def validation_rule(self, validation: FeaturizedSplit | None) -> ValidationRule:
        """How keep-best scores this learner on ``validation``: by default, the newest state is the best."""
        return ValidationRule()

    def parameters(self) -> State:
        """A copy of what decides (the candidate keep-best stores); only learners that step have it."""
        raise NotImplementedError(f"{self.name} learns in one pass: it keeps no candidate parameters")

    def load_parameters(self, parameters: State) -> None:
        """Decide with ``parameters`` from :meth:`parameters`, keeping the learning progress."""
        raise NotImplementedError(f"{self.name} learns in one pass: it keeps no candidate parameters")

    def state_dict(self) -> State:
        """Everything needed to resume training (parameters, progress, generators)."""
        raise NotImplementedError(f"{self.name} learns in one pass: it has no checkpoint")

    def load_state_dict(self, state: State) -> None:
        """Continue from :meth:`state_dict`; the next :meth:`train` learns only the remaining steps."""
        raise NotImplementedError(f"{self.name} learns in one pass: it has no checkpoint")
