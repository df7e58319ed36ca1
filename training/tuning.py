"""Self-tuning: choose the text representation and the ridge strength by cross-validation on the training split.

A router's defaults chosen on one benchmark are wrong on the next (docs: README "Self-tuning").
Before it learns, ``train.py`` scores every candidate of the ``tuning`` grid
(:class:`training.config.TuningConfig`) by k-fold cross-validation over the training split's
queries, and the run goes on with the best:

* ``featurizer.min_df``, ``featurizer.components`` (0: no text representation, only the length
  features and the bias) and ``featurizer.whiten``, for LinUCB, LinTS and PPO (:data:`TUNED_KINDS`;
  the supervised peers tune their own hyperparameters);
* the ridge strength λ, ``agent.linucb.ridge`` (``agent.lints.ridge``) for the kinds that use it;
* PPO's few sensitive settings, within ``tuning.ppo_seconds`` (:mod:`training.ppo_tuning`), on the
  chosen representation, trained on four fifths of the cross-validated queries and scored on the rest.

**The criterion.** Each candidate is scored by the greedy rule of a ridge fit of quality and cost,
u_k(x) = xᵀθ_k^q − w · xᵀθ_k^c, which is LinUCB's (and LinTS's) exported decision, and for
PPO a fast proxy of how well the representation carries the signal. The out-of-fold
decisions of every fold are pooled, and the objective (``tuning.objective``) is computed on them
as the held-out evaluation does: ``aiq``, the AIQ of their frontier over the cost-weight sweep of
the training queries (every trade-off at once), or ``reward``, their mean reward at
``reward.cost_weight``. The highest score wins; ties go to the configured values (always the first candidate),
then to the earlier candidate in the grid's order.

**Closed forms.** Per fold, one eigendecomposition of the Gram matrix XᵀX = QΛQᵀ gives the ridge
solution for every λ at once, θ(λ) = Q (Λ + λI)⁻¹ QᵀXᵀY (Hoerl & Kennard, 1970; Hastie,
Tibshirani & Friedman, 2009, §3.4.1), and LSA components are nested: one featurizer fit per
(fold, ``min_df``) at the largest component count gives every smaller count as its first columns
(whitened or not: the component's RMS is kept). The queries are tokenized and their terms counted
once (:class:`data.featurizer.TermCounts`); each fit takes its fold's rows of the counts, which give
the numbers a fit on the texts gives. The fits' randomized SVDs are most of the cost, which is
``folds × len(min_df)`` fits on at most ``tuning.max_queries`` queries, whatever the log's size.

Bandit-feedback logs are not tuned (their outcome tables are estimated from the features being
chosen); the report says so.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from tqdm import tqdm

from data.featurizer import N_DENSE_EXTRAS, TermCounts, TextFeaturizer
from data.routing_log import RoutingLog
from data.schema import DataError
from data.splits import hash_unit
from evaluation.evaluate import sweep_weights
from evaluation.sweep import AIQRange, WeightSweep
from training.config import RunConfig
from training.features import featurize
from training.ppo_tuning import tune_ppo

#: Agent kinds whose ``ridge`` is the tuned λ, by their config section.
RIDGE_SECTIONS = {"linucb": "linucb", "lints": "lints"}
#: The kinds tuned here: the ridge kinds, whose own rule the criterion is, and PPO, whose input the
#: chosen representation becomes. The supervised peers (knn, logistic, mlp, mf) choose their own
#: hyperparameters by cross-validation when they fit; a representation ranked by a ridge fit made
#: the networks worse on RouteProfile (mlp 0.6586 → 0.6426 AIQ), so they keep the configured one.
TUNED_KINDS = (*RIDGE_SECTIONS, "ppo")


@dataclass(frozen=True)
class Candidate:
    """One point of the grid: a text representation and a ridge strength."""

    min_df: int
    components: int
    whiten: bool
    ridge: float

    def representation(self) -> tuple[int, int, bool]:
        """What the featurizer is given: (min_df, components, whiten)."""
        return self.min_df, self.components, self.whiten


@dataclass(frozen=True)
class Tuning:
    """The configuration the run goes on with, the report section that says how it was chosen, and its time.

    The report holds no clock reading, so that a seed gives the same ``report.json`` in every run;
    the time goes to TensorBoard (``tuning/seconds``) and the benchmark.
    """

    config: RunConfig
    report: dict[str, Any]
    seconds: float = 0.0


def tune(config: RunConfig, train: RoutingLog, progress: bool = False, kind: str | None = None) -> Tuning:
    """``config`` with the hyperparameters chosen on ``train`` (unchanged when tuning is off or cannot run).

    ``kind``: the agent kind tuned for (default ``config.agent.kind``; the cross-validated
    comparison tunes one configuration for each kind it compares).
    """
    settings = config.tuning
    kind = kind or config.agent.kind
    if not settings.enabled:
        return Tuning(config, {"enabled": False})
    skipped = _why_not_tuned(config, train, kind)
    if skipped is not None:
        return Tuning(config, {"enabled": True, "skipped": skipped})
    started = time.perf_counter()
    sample = _sample(train, settings.max_queries, config.seed)
    given = _given(config, kind)
    candidates = _candidates(config, given)
    scores = cross_validated_scores(config, sample, candidates, progress)
    best = max(candidates, key=lambda candidate: scores[candidate])  # max keeps the first of equals
    tuned = _apply(config, best, kind)
    report: dict[str, Any] = {
        "enabled": True,
        "objective": settings.objective,
        "folds": settings.folds,
        "folds_by": "task" if settings.folds_by != "query" and _has_tasks(sample, settings.folds) else "query",
        "queries": sample.n_queries,
        "grid": {
            "min_df": list(settings.min_df),
            "components": list(settings.components),
            "whiten": list(settings.whiten),
            "ridge": list(settings.ridge),
        },
        "given": asdict(given) | {"score": scores[given]},
        "chosen": asdict(best) | {"score": scores[best]},
        "scores": [asdict(candidate) | {"score": scores[candidate]} for candidate in candidates],
    }
    if kind == "ppo":
        tuned, report["ppo"] = _tune_ppo(tuned, sample)
    return Tuning(tuned, report, time.perf_counter() - started)


def _tune_ppo(config: RunConfig, sample: RoutingLog) -> tuple[RunConfig, dict[str, Any]]:
    """PPO's sensitive settings (:func:`training.ppo_tuning.tune_ppo`) on the chosen representation.

    The cross-validated sample is split by query-id hash: a fifth scores the candidates (PPO's
    validation rule), the rest trains them, within ``tuning.ppo_seconds``.
    """
    scoring = hash_unit(sample.query_ids, config.seed + 3) < 0.2
    train, validation = sample.subset(np.flatnonzero(~scoring)), sample.subset(np.flatnonzero(scoring))
    featurizer = TextFeaturizer(config.featurizer).fit(train.queries) if config.input == "text" else None
    chosen, report = tune_ppo(
        config, featurize(train, featurizer), featurize(validation, featurizer), config.tuning.ppo_seconds
    )
    report = {key: value for key, value in report.items() if key != "seconds_used"}
    report["trials"] = [{key: value for key, value in trial.items() if key != "seconds"} for trial in report["trials"]]
    return replace(config, agent=replace(config.agent, ppo=chosen)), report


def _why_not_tuned(config: RunConfig, train: RoutingLog, kind: str) -> str | None:
    """Why tuning cannot run on ``train`` for ``kind`` (None: it can)."""
    if kind not in TUNED_KINDS:
        return f"{kind} chooses its own hyperparameters by cross-validation when it fits (agent.{kind})"
    if train.feedback != "full":
        return "a bandit-feedback log: its outcome tables are estimated from the features being chosen"
    if config.input != "text" and kind not in RIDGE_SECTIONS:
        return "input: embedding has no text representation to choose, and this kind has no ridge"
    if train.n_queries < 2 * config.tuning.folds:
        return f"{train.n_queries} training queries are too few for {config.tuning.folds}-fold cross-validation"
    return None


def _sample(train: RoutingLog, max_queries: int, seed: int) -> RoutingLog:
    """At most ``max_queries`` of the training queries: those first by query-id hash, in their order."""
    if train.n_queries <= max_queries:
        return train
    keys = hash_unit(train.query_ids, seed + 2)
    return train.subset(np.sort(np.argsort(keys, kind="stable")[:max_queries]))


def _given(config: RunConfig, kind: str) -> Candidate:
    """The configured values as a candidate (λ: the kind's own ridge, else LinUCB's)."""
    featurizer = config.featurizer
    section = RIDGE_SECTIONS.get(kind, "linucb")
    ridge = float(getattr(config.agent, section).ridge)
    return Candidate(featurizer.min_df, featurizer.components, featurizer.whiten, ridge)


def _candidates(config: RunConfig, given: Candidate) -> list[Candidate]:
    """The configured values, then the grid, in its order; representations that coincide appear once.

    Without text features (``input: embedding``) only λ varies. With no components, ``min_df``
    and ``whiten`` change nothing, so only the grid's first of each is kept.
    """
    settings = config.tuning
    if config.input != "text":
        grid = [replace(given, ridge=ridge) for ridge in settings.ridge]
    else:
        grid = [
            Candidate(min_df, components, whiten, ridge)
            for min_df in settings.min_df
            for components in settings.components
            for whiten in settings.whiten
            for ridge in settings.ridge
            if components > 0 or (min_df == settings.min_df[0] and whiten == settings.whiten[0])
        ]
    return list(dict.fromkeys([given, *grid]))


def _apply(config: RunConfig, best: Candidate, kind: str) -> RunConfig:
    """``config`` with the chosen featurizer values and, for a ridge kind, the chosen λ."""
    featurizer = replace(config.featurizer, min_df=best.min_df, components=best.components, whiten=best.whiten)
    agent = config.agent
    section = RIDGE_SECTIONS.get(kind)
    if section is not None:
        agent = replace(agent, **{section: replace(getattr(agent, section), ridge=best.ridge)})
    return replace(config, featurizer=featurizer, agent=agent)


def cross_validated_scores(
    config: RunConfig, log: RoutingLog, candidates: list[Candidate], progress: bool = False
) -> dict[Candidate, float]:
    """The objective of every candidate on ``log``'s pooled out-of-fold decisions."""
    settings = config.tuning
    objective = _Objective.of(config, log)
    fold_of = tuning_folds(log, settings.folds, settings.folds_by, config.seed)
    index_type = np.min_scalar_type(log.n_models - 1)  # as int64, 136 × W × N indices were 0.9 GB at 20,000 queries
    shape = (len(objective.weights), log.n_queries)
    actions = {candidate: np.zeros(shape, dtype=index_type) for candidate in candidates}
    targets = np.hstack([log.quality, log.cost])
    counts = TermCounts.of(log.queries) if config.input == "text" else None  # every fit's texts, tokenized once
    min_dfs = sorted({candidate.min_df for candidate in candidates})
    steps = tqdm(total=settings.folds * len(min_dfs), desc="tuning", disable=not progress, leave=False)
    for fold in range(settings.folds):
        held, kept = np.flatnonzero(fold_of == fold), np.flatnonzero(fold_of != fold)
        for min_df in min_dfs:
            chosen = [candidate for candidate in candidates if candidate.min_df == min_df]
            train_x, held_x = _features(config, log, counts, (kept, held), chosen)
            for representation in dict.fromkeys(candidate.representation() for candidate in chosen):
                columns = _columns(representation, train_x.shape[1], config.input)
                scale = _scale(representation, train_x.scale, config.input)
                ridges = [candidate for candidate in chosen if candidate.representation() == representation]
                choices = _ridge_decisions(
                    train_x.values[:, columns] * scale,
                    targets[kept],
                    held_x[:, columns] * scale,
                    [candidate.ridge for candidate in ridges],
                    objective.weights,
                )
                for candidate, decided in zip(ridges, choices):
                    actions[candidate][:, held] = decided
            steps.update()
    steps.close()
    return {candidate: objective.score(log, chosen) for candidate, chosen in actions.items()}


def tuning_folds(log: RoutingLog, folds: int, folds_by: str, seed: int) -> np.ndarray:
    """The fold of every query: by query-id hash, or whole tasks per fold (``task``; ``auto`` when it can).

    Folds by task hold out whole tasks, as production traffic drifts to a mix the logs did not
    have: a representation chosen so holds up on unseen tasks (issue 16 item 5). ``auto`` folds by
    task when every query has a task and there are at least ``folds`` of them, else by query.
    Tasks go to folds largest first, each to the fold with the fewest queries (ties: the lower
    fold), in name order among equal sizes, so that the folds are about equal and deterministic.
    """
    by_task = _has_tasks(log, folds)
    if folds_by == "task" and not by_task:
        raise DataError(f"tuning.folds_by: task needs a task on every training query and at least {folds} tasks")
    if folds_by == "query" or not by_task:
        return np.floor(hash_unit(log.query_ids, seed + 1) * folds).astype(np.int64)
    assert log.tasks is not None
    names, codes, sizes = np.unique(log.tasks.astype(str), return_inverse=True, return_counts=True)
    fold_of_task = np.zeros(len(names), dtype=np.int64)
    load = np.zeros(folds, dtype=np.int64)
    for task in sorted(range(len(names)), key=lambda index: (-sizes[index], names[index])):
        fold_of_task[task] = int(np.argmin(load))
        load[fold_of_task[task]] += sizes[task]
    return fold_of_task[codes]


def _has_tasks(log: RoutingLog, folds: int) -> bool:
    """Whether every query of ``log`` has a task and there are at least ``folds`` tasks."""
    tasks = log.tasks
    return tasks is not None and all(task is not None for task in tasks) and len(set(tasks.tolist())) >= folds


@dataclass(frozen=True)
class _TrainFeatures:
    """A fold's training features at the largest component count, and each component's RMS."""

    values: np.ndarray  # (n, components + extras)
    scale: np.ndarray  # (components,) RMS of the unwhitened components

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape


def _features(
    config: RunConfig,
    log: RoutingLog,
    counts: TermCounts | None,
    fold: tuple[np.ndarray, np.ndarray],
    chosen: list[Candidate],
) -> tuple[_TrainFeatures, np.ndarray]:
    """Training and held-out features of a fold for ``chosen`` (one ``min_df``), whitened, at the most components.

    ``counts``: the term counts of ``log``'s queries (text input); ``fold``: its kept and held-out rows.
    The featurizer fitted on the kept rows' counts gives the numbers a fit on their texts gives.
    """
    kept, held = fold
    if counts is None:
        with_bias = featurize(log, None).features.astype(np.float64)  # a DataError without the embedding column
        return _TrainFeatures(with_bias[kept], np.ones(0)), with_bias[held]
    most = max(candidate.components for candidate in chosen)
    featurizer_config = replace(config.featurizer, min_df=chosen[0].min_df, components=most, whiten=True)
    featurizer = TextFeaturizer(featurizer_config)
    train_x = featurizer.fit_transform_counted(counts.rows(kept)).astype(np.float64)
    held_x = featurizer.transform_counted(counts.rows(held)).astype(np.float64)
    return _TrainFeatures(train_x, featurizer.component_rms), held_x


def _columns(representation: tuple[int, int, bool], width: int, input_kind: str) -> np.ndarray:
    """The columns of a representation: its first components, then the extras (length, log length, bias)."""
    if input_kind != "text":
        return np.arange(width)
    fitted = width - N_DENSE_EXTRAS
    return np.concatenate([np.arange(min(representation[1], fitted)), np.arange(fitted, width)])


def _scale(representation: tuple[int, int, bool], rms: np.ndarray, input_kind: str) -> np.ndarray:
    """Column factors from whitened features to the representation's: RMS_j / RMS_0 when not whitened."""
    _, components, whiten = representation
    used = min(components, len(rms))
    if input_kind != "text" or whiten or used == 0:
        return np.ones(1)
    return np.concatenate([rms[:used] / rms[0], np.ones(N_DENSE_EXTRAS)])


def _ridge_decisions(
    train_x: np.ndarray, targets: np.ndarray, held_x: np.ndarray, ridges: list[float], weights: np.ndarray
) -> list[np.ndarray]:
    """Greedy decisions (W, n_held) of the ridge fit of [quality | cost] for every λ, from one eigendecomposition.

    XᵀX = QΛQᵀ, so the held-out predictions are (X_h Q) (Λ + λI)⁻¹ (QᵀXᵀY) for every λ. The
    utilities (W, n_held, K) of every λ go through one buffer, the same numbers about a fifth faster
    than fresh arrays of that size.
    """
    eigenvalues, basis = np.linalg.eigh(train_x.T @ train_x)
    right = basis.T @ (train_x.T @ targets)
    rotated = held_x @ basis
    n_models = targets.shape[1] // 2
    utility = np.empty((len(weights), len(held_x), n_models))
    decisions = []
    for ridge in ridges:
        predicted = rotated @ (right / (eigenvalues + ridge)[:, None])
        quality, cost = predicted[:, :n_models], predicted[:, n_models:]
        np.subtract(quality[None], np.multiply(weights[:, None, None], cost[None], out=utility), out=utility)
        decisions.append(np.argmax(utility, axis=2))
    return decisions


@dataclass(frozen=True)
class _Objective:
    """What a candidate's pooled out-of-fold decisions are scored by: AIQ over the sweep, or reward at one weight."""

    weights: np.ndarray
    aiq_range: AIQRange | None

    @classmethod
    def of(cls, config: RunConfig, log: RoutingLog) -> _Objective:
        if config.tuning.objective == "aiq":
            return cls(sweep_weights(log, config.evaluation), AIQRange.of(log))
        return cls(np.array([config.reward.cost_weight]), None)

    def score(self, log: RoutingLog, actions: np.ndarray) -> float:
        """AIQ of the frontier of the (W, N) decisions, or the mean reward of the (1, N) ones."""
        if self.aiq_range is not None:
            return self.aiq_range.aiq(WeightSweep.from_actions(log, self.weights, actions).frontier())
        rows = np.arange(log.n_queries)
        return float(log.reward(float(self.weights[0]))[rows, actions[0]].mean())
