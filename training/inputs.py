"""What one run's stages hand each other besides the featurized splits (:class:`agents.base.FeaturizedSplit`):
the data's summary, the learned agent and the exported policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from agents.base import Agent
from data.energy import EnergyTable
from data.featurizer import TextFeaturizer


@dataclass(frozen=True)
class RunInputs:
    """What evaluation and export need of the data besides the validation and test splits.

    The single-process run takes it from the loaded log; a distributed run
    (:mod:`training.distributed`) from statistics summed over the blocks of the training split.
    """

    data: dict[str, Any]  # the report's data section (fingerprint, rows by fate)
    models: tuple[str, ...]
    fingerprint: str
    split_counts: dict[str, int]
    featurizer: TextFeaturizer | None
    dimension: int  # features per query
    train_mean_quality: np.ndarray  # (K,) on the training split: baselines and the cost-weight grid
    train_mean_cost: np.ndarray  # (K,)
    # the report's tuning section (training.tuning): what was chosen, from which grid, by which scores
    tuning: dict[str, Any] = field(default_factory=lambda: {"enabled": False})
    # the rule overrides compiled into policy.pt, canonical (policies.rules.canonical); [] without rules
    rules: list[dict[str, Any]] = field(default_factory=list)
    # the energy table (data.energy) that estimates energy_wh for the report's objectives; None: data.energy's
    energy: EnergyTable | None = None


#: What the learner learned from: the training split, with the validation split, or every query (refit).
TrainedOn = Literal["train", "train+validation", "all"]


@dataclass(frozen=True)
class Learned:
    """A learned agent, what its training did (``steps``, ``best_step``), and a learned cost weight."""

    agent: Agent
    training: dict[str, Any]
    weight: float | None  # the averaged budget multiplier of online learning, else None
    trained_on: TrainedOn = "train"  # "train+validation" when tuning left the validation split nothing to do


#: What a policy trained on every query is, said where its metrics are (report.json, metadata.json, report.md).
REFIT_NOTE = (
    "the metrics of this report are held-out metrics of the evaluated policy, which did not see the {test} test "
    "queries; "
    "policy.pt was refit with the same configuration on all {queries} queries (train + validation + test) "
    "after that evaluation, and has no held-out estimate of its own"
)
HELD_OUT_NOTE = (
    "policy.pt is the policy evaluated in this report, trained on the {train} {learned} queries: the metrics "
    "are its held-out metrics; train.py --refit-all would refit it on all {queries} queries after the evaluation"
)
#: Where the exported default cost weight comes from, by :attr:`ExportedPolicy.cost_weight_source`.
COST_WEIGHT_SOURCES = {
    "evaluation": "the evaluated policy's operating weight",
    "refit budget": "the budget multiplier the refit learned (reward.budget)",
    "refit target": "the --target-* rule applied to the refit policy on every query (in-sample: no held-out "
    "query is left)",
}


@dataclass(frozen=True)
class ExportedPolicy:
    """The policy ``policy.pt`` holds, and what it was trained on (docs/contracts.md §3.5 ``exported_policy``).

    Without ``--refit-all`` it is the evaluated agent, trained on the training split; with it,
    the same configuration refit on every query after the evaluation (:mod:`training.refit`).
    ``steps``: what its exported state learned from (rows fitted, or episodes played).
    ``cost_weight``: its default, from :data:`COST_WEIGHT_SOURCES` ``[cost_weight_source]``;
    ``calibration``: the refit's in-sample values at it, for a ``--target-*``; ``capacity``: the caps
    and the multipliers that hold them (:mod:`evaluation.capacity`), fitted on what it learned from.
    """

    agent: Agent
    featurizer: TextFeaturizer | None
    cost_weight: float
    trained_on: TrainedOn
    steps: int
    cost_weight_source: Literal["evaluation", "refit budget", "refit target"] = "evaluation"
    calibration: dict[str, Any] | None = None
    capacity: dict[str, dict[str, float]] | None = None  # the metadata's caps and multipliers (policies.capacity)

    def section(self, split_counts: dict[str, int]) -> dict[str, Any]:
        """The report's ``exported_policy`` and the metadata's ``training_data``: the same plain words."""
        total, train = sum(split_counts.values()), split_counts["train"]
        held_out = self.trained_on != "all"
        learned = "training"
        if self.trained_on == "train+validation":
            train, learned = train + split_counts["validation"], "training and validation"
        note = HELD_OUT_NOTE if held_out else REFIT_NOTE
        section = {
            "trained_on": self.trained_on,
            "queries": train if held_out else total,
            "steps": self.steps,
            "cost_weight": self.cost_weight,
            "cost_weight_source": COST_WEIGHT_SOURCES[self.cost_weight_source],
            "held_out_metrics": held_out,
            "note": note.format(train=train, queries=total, learned=learned, test=split_counts["test"]),
        }
        return section if self.calibration is None else section | {"calibration": self.calibration}
