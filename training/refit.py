"""``train.py --refit-all``: after the held-out evaluation, the same configuration refit on every query.

The evaluation needs a policy that never saw the test split, so the report's metrics are those of
the policy trained on the training split. A user who has accepted those numbers usually wants
the final policy trained on all the data: on RouterBench the refit policies' AIQ on hidden
queries was 0.0069 higher on average, within noise (BENCHMARKS.md, *Refit on all the data*).
This is the usual refit of the selected model on the whole data set once the evaluation is done
(as scikit-learn's ``GridSearchCV(refit=True)`` does), with the cost that the refit policy has
no held-out estimate of its own, which the report and the metadata say
(:class:`training.inputs.ExportedPolicy`).

What is refit, with the run's configuration unchanged: the featurizer, on every query's text
(or the log's embeddings, as before); on a bandit-feedback log, the reward model and the table
of ``env.feedback`` over every logged round; the agent, of the same kind and hyperparameters.
Nothing is held out, so nothing is scored on validation: a step-wise learner learns the
configured steps and keeps its last state, except that when keep-best exported an earlier state
of the evaluated policy (its ``best_step``, chosen on validation), the refit stops at that step
(:class:`StopAt`), in the same state of learning: LinUCB after that episode's update, PPO with
the parameters of its last whole rollout before it, as keep-best took them.

The exported default cost weight: the configured one; under ``reward.budget`` the multiplier
the refit learned itself; with ``--target-cost``/``--target-quality``, the weight that the same
rule (:func:`evaluation.budget.calibrate`) picks for the refit policy on every query, in-sample
since no query is left out. The weight chosen on validation for the evaluated policy does not
carry over: at one cost weight, a policy's spend depends on small differences of its estimates,
and on RouterBench the refit policies spent 2.2 times the target at the evaluated policy's
weight, and under it at their own (BENCHMARKS.md, *Refit on all the data*). Capacity multipliers
(``capacity``) are fitted anew for the refit policy, on every query, at its default weight. TensorBoard curves
of the refit go to ``tb/refit``, its checkpoints to ``checkpoints/refit`` (``--resume`` with
``--refit-all`` continues them).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import Agent, FeaturizedSplit
from agents.callbacks import Callback, Outcomes
from data.routing_log import RoutingLog
from evaluation.budget import GRID_POINTS, BudgetTarget, calibrate, meets
from evaluation.capacity import Capacity
from evaluation.frontier import cost_weight_grid
from evaluation.sweep import WeightSweep
from training.config import RunConfig
from training.exporting import checked_rules, rule_mask
from training.features import estimated_table, featurize, fit_featurizer, fit_reward_model, learning_estimator
from training.inputs import ExportedPolicy, Learned
from training.learning import learn
from training.tensorboard import TensorBoardLogger

REFIT = "refit"  # the refit's folder under the run's tb/ and checkpoints/


def refit_all(
    config: RunConfig,
    log: RoutingLog,
    evaluated: Learned,
    cost_weight: float,
    out: Path,
    progress: bool,
    target: BudgetTarget | None = None,
) -> ExportedPolicy:
    """The policy of ``config`` trained on every query of ``log``, to export instead of ``evaluated``.

    ``cost_weight`` is the evaluation's operating weight; ``out`` the run directory; ``target``
    the run's ``--target-*``, calibrated anew for the refit policy.
    """
    featurizer = fit_featurizer(config, log) if config.input == "text" else None
    everything = featurize(log, featurizer)
    if log.feedback == "bandit":
        model = fit_reward_model(config, everything)
        everything = estimated_table(config, everything, model, learning_estimator(config))
    nothing = FeaturizedSplit(everything.log.subset(np.arange(0)), everything.features[:0])  # no validation
    tensorboard = TensorBoardLogger(out / "tb" / REFIT)
    best, steps = evaluated.training["best_step"], evaluated.training["steps"]
    stop = [StopAt(best)] if best < steps else []
    try:
        agent, training, learned_weight = learn(
            config, everything, nothing, tensorboard, out / "checkpoints" / REFIT, progress, stop
        )
    finally:
        tensorboard.close()
    steps = training["best_step"]
    if learned_weight is not None:
        exported = ExportedPolicy(agent, featurizer, learned_weight, "all", steps, "refit budget")
    elif target is not None:
        weight, calibration = calibrated(agent, everything, target)
        exported = ExportedPolicy(agent, featurizer, weight, "all", steps, "refit target", calibration)
    else:
        exported = ExportedPolicy(agent, featurizer, cost_weight, "all", steps)
    return replace(exported, capacity=refit_capacity(config, exported, everything))


def refit_capacity(
    config: RunConfig, exported: ExportedPolicy, everything: FeaturizedSplit
) -> dict[str, dict[str, float]] | None:
    """The caps' multipliers (:mod:`evaluation.capacity`) fitted anew for the refit policy at its default
    weight, on every query (in-sample: none is left out), rule overrides applied; None without caps."""
    if not config.capacity:
        return None
    log = everything.log
    capacity = Capacity(log.models, config.capacity)
    allowed = rule_mask(checked_rules(config, log.models), log.models, log.queries)
    return capacity.metadata(capacity.fit(exported.agent.scores(everything.features, exported.cost_weight), allowed))


def calibrated(agent: Agent, everything: FeaturizedSplit, target: BudgetTarget) -> tuple[float, dict[str, Any]]:
    """The weight :func:`evaluation.budget.calibrate` picks for ``agent`` on every query, and its in-sample values.

    The grid is the run's (:data:`evaluation.budget.GRID_POINTS` weights around the single models'
    break-even weights), from every query's means instead of the training split's.
    """
    quality, cost = everything.log.quality, everything.log.cost
    weights = cost_weight_grid(np.nanmean(quality, axis=0), np.nanmean(cost, axis=0), GRID_POINTS)
    sweep = WeightSweep.run(everything.log, lambda weight: agent.predict(everything.features, weight), weights)
    chosen = calibrate(sweep, target)
    in_sample = {"mean_cost": float(sweep.cost[chosen].mean()), "mean_quality": float(sweep.quality[chosen].mean())}
    return float(weights[chosen]), {
        "target": {"kind": target.kind, "value": target.value},
        "met_in_sample": bool(meets(sweep, target)[chosen]),
        "in_sample": in_sample,
    }


class StopAt(Callback):
    """Ends training at the step ``steps``, in the state keep-best would have kept there.

    Keep-best (:class:`agents.callbacks.KeepBest`) takes a learner's state in ``on_step``; so does
    this, by stopping there: LinUCB has learned that episode, PPO stops before the update of the
    rollout in progress (whose episodes it has not learned from yet).
    """

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def on_step(self, step: int, outcomes: Outcomes) -> bool:
        """False (stop) once ``steps`` are done."""
        return step < self.steps
