"""Baselines that decide after generation (cascades), evaluated on a log with responses.

A cascade calls models one after another and returns one of their responses; what it pays is the
cost of **every** call (:func:`envs.cascade_env.cascade_cost`), what it gets the quality of the
response returned. Each baseline below gives operating points (mean cost, mean quality, mean
number of calls) on a split; their frontier and AIQ are those of :mod:`evaluation.frontier`, over
the split's single-model cost range (:class:`evaluation.sweep.AIQRange`), so they compare directly
with a routing policy's.

* **Pre-generation** (:func:`pre_generation_points`): one call, never escalate. The choices of any
  decision rule swept over cost weights (:class:`evaluation.sweep.WeightSweep`), one call each.
* **Threshold cascade** (FrugalGPT: Chen, Zaharia & Zou, 2023, arXiv:2305.05176; AutoMix: Aggarwal
  et al., 2023, arXiv:2310.12963): a chain of models, cheapest first; the response of each model
  but the last is accepted when a learned scorer's P(correct | query features, response features,
  agreement with the chain's earlier responses) is at least a threshold, else the next model is
  called; the last model's response is always accepted. The scorer (:class:`ResponseScorer`) is a
  logistic regression per step of a chain, its regularisation chosen by cross-validation on the
  training split. Chains are the increasing subsequences (at most ``max_chain`` models) of the
  training split's cost-quality Pareto models that end at its best model (:func:`cascade_chains`);
  the thresholds are swept, and every (chain, threshold) is a point.
* **Agreement** (:func:`agreement_points`): call two models other than the strongest (the training
  split's best); accept the cheaper one's response when their final answers agree
  (:meth:`policies.response_features.ResponseFeaturizer.agreement`), else call the strongest model
  and return its response. Every pair is a point.

:func:`evaluate_cascade_baselines` fits on a training split and reports, per baseline on the test
split: AIQ, the cost to reach 95% of the reference model's quality (and its share of that model's
cost), and the mean number of calls there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from data.routing_log import RoutingLog
from envs.cascade_env import cascade_cost
from evaluation.evaluate import best_single_model
from evaluation.frontier import Frontier, cost_to_reach
from evaluation.sweep import AIQRange, WeightSweep
from policies.response_features import ResponseTable

STRICT = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class CascadeSplit:
    """A split as the cascade baselines see it: the log, its query features, its responses' table."""

    log: RoutingLog
    features: np.ndarray  # (N, d) query features
    responses: ResponseTable  # (N, K, ...) of :func:`policies.response_features.response_table`

    def __post_init__(self) -> None:
        n, k = self.log.n_queries, self.log.n_models
        if len(self.features) != n or self.responses.features.shape[:2] != (n, k):
            raise ValueError(
                f"a cascade split needs {n} feature rows and ({n}, {k}) responses, got "
                f"{len(self.features)} and {self.responses.features.shape[:2]}"
            )


@dataclass(frozen=True)
class CascadePoint:
    """One operating point of a cascade on a split: means per query, every call counted."""

    label: str
    cost: float
    quality: float
    calls: float


@pydantic_dataclass(frozen=True, config=STRICT)
class ScorerConfig:
    """The response scorer's logistic regression; its inverse regularisation C chosen by cross-validation."""

    cs: int = 9  # values of C tried, log-spaced in [1e-4, 1e4]
    folds: int = 5  # stratified cross-validation folds on the training split (scored by log-loss)
    max_iter: int = 2000
    seed: int = 0  # shuffles the folds


@pydantic_dataclass(frozen=True, config=STRICT)
class CascadeBaselineConfig:
    """What :func:`evaluate_cascade_baselines` sweeps and reports."""

    thresholds: int = 41  # acceptance thresholds swept, evenly spaced in [0, 1]
    max_chain: int = 3  # models in a threshold cascade's chain at most
    targets: tuple[float, ...] = (0.95, 1.0)  # shares of the reference model's quality to reach
    scorer: ScorerConfig = field(default_factory=ScorerConfig)


def decided_point(log: RoutingLog, label: str, called: np.ndarray, returned: np.ndarray) -> CascadePoint:
    """The point of cascades that called ``called`` (N, K) models and returned model ``returned`` (N,)."""
    rows = np.arange(log.n_queries)
    if not called[rows, returned].all():
        raise ValueError("a cascade can only return the response of a model it called")
    return CascadePoint(
        label,
        float(cascade_cost(log.cost, called).mean()),
        float(log.quality[rows, returned].mean()),
        float(called.sum(axis=1).mean()),
    )


def pre_generation_points(log: RoutingLog, sweep: WeightSweep, label: str = "pre-generation") -> list[CascadePoint]:
    """One call per query, never escalated: the points of a router's choices at every swept weight."""
    points = []
    for weight, actions in zip(sweep.weights.tolist(), sweep.actions):
        called = np.zeros((log.n_queries, log.n_models), dtype=bool)
        called[np.arange(log.n_queries), actions] = True
        points.append(decided_point(log, f"{label} w={weight:g}", called, actions))
    return points


def single_model_points(log: RoutingLog) -> list[CascadePoint]:
    """Each model alone for every query: the zero router's points."""
    means = zip(log.models, log.cost.mean(axis=0).tolist(), log.quality.mean(axis=0).tolist())
    return [CascadePoint(model, cost, quality, 1.0) for model, cost, quality in means]


class ResponseScorer:
    """P(correct | what the cascade has seen) of a chain's step: a logistic regression per step.

    A step is the models called so far, the last one's response under judgement; its inputs are the
    query's features, that response's features and whether its final answer agrees with each earlier
    response of the step (AutoMix's and FrugalGPT's scorers judge a response in context of the query;
    the agreements add what the cascade has already paid for). Inputs are standardised. A quality q
    in [0, 1] is a soft label: the row counts as correct with weight q and as wrong with weight 1 − q
    (the cross-entropy of the soft target), so 0/1 logs are fitted as they are. C is chosen by
    scikit-learn's ``GridSearchCV`` (the folds' log-loss, unweighted).
    """

    def __init__(self, config: ScorerConfig | None = None) -> None:
        self.config = config or ScorerConfig()
        self.steps: dict[tuple[int, ...], Any] = {}  # step → fitted pipeline, or a constant probability

    def fit(self, split: CascadeSplit, steps: Sequence[tuple[int, ...]]) -> ResponseScorer:
        """Fit one regression per step of ``steps`` on ``split`` (the training queries)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV, StratifiedKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        config = self.config
        for step in steps:
            quality = split.log.quality[:, step[-1]]
            correct, wrong = np.flatnonzero(quality > 0), np.flatnonzero(quality < 1)
            if min(len(correct), len(wrong)) < config.folds:  # (nearly) one class: a constant
                self.steps[tuple(step)] = float(quality.mean())
                continue
            rows = np.concatenate([correct, wrong])
            labels = np.concatenate([np.ones(len(correct)), np.zeros(len(wrong))])
            weights = np.concatenate([quality[correct], 1.0 - quality[wrong]])
            search = GridSearchCV(
                make_pipeline(StandardScaler(), LogisticRegression(max_iter=config.max_iter)),
                {"logisticregression__C": np.logspace(-4, 4, config.cs)},
                cv=StratifiedKFold(config.folds, shuffle=True, random_state=config.seed),
                scoring="neg_log_loss",
            )
            search.fit(self._inputs(split, step)[rows], labels, logisticregression__sample_weight=weights)
            self.steps[tuple(step)] = search.best_estimator_
        return self

    def predict(self, split: CascadeSplit, step: tuple[int, ...]) -> np.ndarray:
        """(N,) P(correct) of the response of ``step``'s last model to each query of ``split``."""
        fitted = self.steps[tuple(step)]
        if isinstance(fitted, float):
            return np.full(split.log.n_queries, fitted)
        return fitted.predict_proba(self._inputs(split, step))[:, 1]

    @staticmethod
    def _inputs(split: CascadeSplit, step: tuple[int, ...]) -> np.ndarray:
        model, earlier = step[-1], list(step[:-1])
        agreement = split.responses.agreement[:, model, earlier].astype(np.float64)
        return np.hstack([split.features, split.responses.features[:, model, :], agreement])


def chain_steps(chains: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """The distinct steps the scorer judges: every prefix of a chain but the whole chain."""
    return sorted({tuple(chain[: j + 1]) for chain in chains for j in range(len(chain) - 1)})


def threshold_cascade(
    n_models: int, chain: Sequence[int], probabilities: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(called (N, K), returned (N,)): walk ``chain``, accept model j's response when P ≥ ``threshold``.

    ``probabilities`` (N, L − 1) are the scorer's for the chain's models but the last, in chain
    order; the last model's response is always accepted.
    """
    accept = np.asarray(probabilities) >= threshold
    n, length = len(accept), len(chain)
    stop = np.where(accept.any(axis=1), accept.argmax(axis=1), length - 1)  # the first accepted step
    called = np.zeros((n, n_models), dtype=bool)
    for step, model in enumerate(chain):
        called[:, model] = stop >= step
    return called, np.asarray(chain)[stop]


def threshold_points(
    split: CascadeSplit, scorer: ResponseScorer, chains: Sequence[Sequence[int]], thresholds: np.ndarray
) -> list[CascadePoint]:
    """Every (chain, threshold) of the threshold cascade on ``split``."""
    log, points = split.log, []
    for chain in chains:
        probabilities = np.stack([scorer.predict(split, tuple(chain[: j + 1])) for j in range(len(chain) - 1)], axis=1)
        name = " → ".join(log.models[m] for m in chain)
        for threshold in np.asarray(thresholds).tolist():
            called, returned = threshold_cascade(log.n_models, chain, probabilities, threshold)
            points.append(decided_point(log, f"{name} @ {threshold:.3f}", called, returned))
    return points


def agreement_points(split: CascadeSplit, pairs: Sequence[tuple[int, int]], strong: int) -> list[CascadePoint]:
    """Per pair (a, b): call both, return a's response when their answers agree, else call ``strong``."""
    log, points = split.log, []
    for first, second in pairs:
        agree = split.responses.agreement[:, first, second]
        called = np.zeros((log.n_queries, log.n_models), dtype=bool)
        called[:, [first, second]] = True
        called[~agree, strong] = True
        returned = np.where(agree, first, strong)
        name = f"{log.models[first]} + {log.models[second]}, else {log.models[strong]}"
        points.append(decided_point(log, name, called, returned))
    return points


def pareto_models(log: RoutingLog) -> list[int]:
    """The models on the single-model frontier of ``log`` (no other is cheaper and better), by cost."""
    cost, quality = log.cost.mean(axis=0), log.quality.mean(axis=0)
    order = np.lexsort((-quality, cost))
    kept: list[int] = []
    for model in order.tolist():
        if not kept or quality[model] > quality[kept[-1]]:
            kept.append(model)
    return kept


def cascade_chains(log: RoutingLog, max_chain: int) -> list[tuple[int, ...]]:
    """Chains of 2 to ``max_chain`` Pareto models of ``log``, cheapest first, each ending at the best one."""
    pareto = pareto_models(log)
    best, cheaper = pareto[-1], pareto[:-1]
    return [(*head, best) for length in range(1, max_chain) for head in combinations(cheaper, length)]


def agreement_pairs(log: RoutingLog, strong: int) -> list[tuple[int, int]]:
    """Every pair of models other than ``strong``, the cheaper (on ``log``) first."""
    cost = log.cost.mean(axis=0)
    others = sorted((m for m in range(log.n_models) if m != strong), key=lambda m: (cost[m], m))
    return list(combinations(others, 2))


def frontier_summary(
    points: Sequence[CascadePoint], log: RoutingLog, reference: int, targets: Sequence[float]
) -> dict[str, Any]:
    """AIQ of the points' frontier on ``log``, and per target share of the reference's quality: the
    least cost, its share of the reference's cost and the mean calls there (mixing two vertices)."""
    hull = Frontier.from_points(np.array([p.cost for p in points]), np.array([p.quality for p in points]))
    vertex = {(p.cost, p.quality): p for p in reversed(points)}  # the first point of each (cost, quality)
    vertices = [vertex[(c, q)] for c, q in zip(hull.costs.tolist(), hull.qualities.tolist())]
    calls = np.array([p.calls for p in vertices])
    ref_cost, ref_quality = float(log.cost[:, reference].mean()), float(log.quality[:, reference].mean())
    reach: dict[str, Any] = {}
    for share in targets:
        cost = cost_to_reach(hull, share * ref_quality)
        reach[f"{round(share * 100)}%"] = {
            "cost": cost,
            "share_of_reference_cost": None if cost is None else cost / ref_cost,
            "calls": None if cost is None else float(np.interp(cost, hull.costs, calls)),
        }
    return {
        "aiq": AIQRange.of(log).aiq(hull),
        "cost_to_reach": reach,
        "hull": [{"label": p.label, "cost": p.cost, "quality": p.quality, "calls": p.calls} for p in vertices],
    }


def evaluate_cascade_baselines(
    train: CascadeSplit,
    test: CascadeSplit,
    pre_generation: WeightSweep | None = None,
    config: CascadeBaselineConfig | None = None,
) -> dict[str, Any]:
    """Fit on ``train``, evaluate every baseline on ``test`` (module docstring); ``pre_generation`` is a
    router's sweep on ``test`` (None: the single models stand for it)."""
    config = config or CascadeBaselineConfig()
    if train.log.models != test.log.models:
        raise ValueError("the training and test splits must have the same models")
    chains = cascade_chains(train.log, config.max_chain)
    strong = pareto_models(train.log)[-1]
    scorer = ResponseScorer(config.scorer).fit(train, chain_steps(chains))
    thresholds = np.linspace(0.0, 1.0, config.thresholds)
    baselines = {
        "single models": single_model_points(test.log),
        "threshold cascade": threshold_points(test, scorer, chains, thresholds),
        "agreement": agreement_points(test, agreement_pairs(train.log, strong), strong),
    }
    if pre_generation is not None:
        baselines["pre-generation"] = pre_generation_points(test.log, pre_generation)
    reference = test.log.models.index(best_single_model(test.log))
    return {
        "reference_model": test.log.models[reference],
        "strong_model": test.log.models[strong],
        "chains": [[test.log.models[m] for m in chain] for chain in chains],
        "queries": {"train": train.log.n_queries, "test": test.log.n_queries},
        "baselines": {
            name: frontier_summary(points, test.log, reference, config.targets) for name, points in baselines.items()
        },
    }
