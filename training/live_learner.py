"""The learner that ``python -m training.follow`` keeps up to date: a fixed featurizer and LinUCB's statistics.

A run directory of a text policy holds ``learner.npz`` beside ``policy.pt`` (:func:`save_learner`):
the fitted featurizer (:meth:`data.featurizer.TextFeaturizer.to_arrays`), the model names, the
ridge λ and, when the run's agent keeps them (LinUCB, LinTS), its ridge statistics without λI.
The follower starts from it (:meth:`LiveLearner.load`) and adds each logged round of production
traffic to the statistics of the arm that served it (bandit feedback):

    G_k ← γ · G_k + x xᵀ,   b_k^q ← γ · b_k^q + x · quality,   b_k^c ← γ · b_k^c + x · cost

with the discount γ (``discount``, 1 = remember everything) applied once per round to every
arm, so old traffic fades with weight γ^age (Garivier & Moulines, 2011, "discounted UCB"). A
batch of n rounds is one weighted sum, round i weighted γ^(n−1−i): the result does not depend on
how the rounds were batched, and with γ = 1 it equals :meth:`agents.linucb.LinUCB.partial_fit` on
the same rounds exactly. :meth:`LiveLearner.agent` solves the statistics into a LinUCB agent
(θ_k = (λI + G_k)⁻¹ b_k), which exports like any trained one.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from agents.linucb import LinUCB, LinUCBConfig, linucb_from_statistics
from agents.linucb_statistics import LinUCBStatistics
from data.featurizer import TextFeaturizer
from data.outputs import replacing
from data.schema import DataError

#: The learner's file in a run directory.
LEARNER_FILE = "learner.npz"
#: θ^q on the bias feature of an arm that must not be chosen (:meth:`LiveLearner.agent`): quality −10⁶.
MASKED_QUALITY = -1e6
#: Arrays of the statistics, in :class:`LinUCBStatistics`' names (``observations`` may be fractional).
STATISTICS = ("gram", "target_quality", "target_cost", "observations", "sum_quality", "sum_cost")


def save_learner(path: Path, featurizer: TextFeaturizer, models: list[str], ridge: float, agent: Any) -> None:
    """Write ``learner.npz`` atomically: the featurizer, the models, λ and (LinUCB, LinTS) the statistics.

    ``agent`` keeps ridge statistics when it has ``gram`` (λI + Σ x xᵀ per arm) and the targets;
    any other agent's policy starts the follower from no statistics (only λI).
    """
    arrays = {f"featurizer_{key}": value for key, value in featurizer.to_arrays().items()}
    arrays["models"] = np.frombuffer("\n".join(models).encode(), dtype=np.uint8)
    gram = getattr(agent, "gram", None)
    ridge = float(getattr(getattr(agent, "config", None), "ridge", ridge))
    arrays["ridge"] = np.asarray(ridge)
    if gram is not None:
        arrays["gram"] = gram - ridge * np.eye(gram.shape[1])[None]
        arrays["target_quality"] = agent.target_quality
        arrays["target_cost"] = agent.target_cost
        arrays["observations"] = agent.observations.astype(np.float64)
    with replacing(path) as temporary, open(temporary, "wb") as out:
        np.savez(out, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its keywords


class LiveLearner:
    """A featurizer and LinUCB's discounted ridge statistics per arm, updated round by round."""

    def __init__(self, featurizer: TextFeaturizer, models: list[str], ridge: float) -> None:
        if not ridge > 0:
            raise DataError(f"ridge must be > 0, got {ridge}")
        self.featurizer = featurizer
        self.models = list(models)
        self.ridge = float(ridge)
        k, d = len(models), featurizer.dimension
        self.statistics: dict[str, np.ndarray] = {
            "gram": np.zeros((k, d, d)),
            "target_quality": np.zeros((k, d)),
            "target_cost": np.zeros((k, d)),
            "observations": np.zeros(k),
            "sum_quality": np.zeros(k),
            "sum_cost": np.zeros(k),
        }

    @classmethod
    def load(cls, path: Path) -> LiveLearner:
        """The learner of a run's ``learner.npz`` (:func:`save_learner`); a missing or foreign file is a DataError."""
        try:
            with np.load(path) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError) as error:
            raise DataError(
                f"{path}: cannot read the learner file ({error}); train the run with this routerl"
            ) from None
        try:
            featurizer = TextFeaturizer.from_arrays(
                {
                    key.removeprefix("featurizer_"): value
                    for key, value in arrays.items()
                    if key.startswith("featurizer_")
                }
            )
            learner = cls(featurizer, bytes(arrays["models"]).decode().split("\n"), float(arrays["ridge"]))
        except KeyError as missing:
            raise DataError(f"{path}: not a routerl learner file (no {missing})") from None
        if "gram" in arrays:
            learner.statistics.update(
                {name: np.asarray(arrays[name], dtype=np.float64) for name in STATISTICS[:4]},
                sum_quality=np.zeros(len(learner.models)),
                sum_cost=np.zeros(len(learner.models)),
            )
        return learner

    @property
    def dimension(self) -> int:
        """Feature dimension d."""
        return self.featurizer.dimension

    def features(self, queries: list[str]) -> np.ndarray:
        """(N, d) float64 features of ``queries``, as the exported policy computes them."""
        return self.featurizer.transform(queries).astype(np.float64)

    def add(
        self, features: np.ndarray, actions: np.ndarray, quality: np.ndarray, cost: np.ndarray, discount: float = 1.0
    ) -> None:
        """Add n logged rounds, in order: decay the old statistics by γⁿ, weight round i by γ^(n−1−i)."""
        n = len(actions)
        if n == 0:
            return
        weights = discount ** np.arange(n - 1, -1, -1, dtype=np.float64)
        root = np.sqrt(weights)
        block = LinUCBStatistics.of(
            features * root[:, None], quality * root, cost * root, actions, n_models=len(self.models)
        )
        decay = discount**n
        counts = np.bincount(actions, weights=weights, minlength=len(self.models))
        new = {
            "gram": block.gram,
            "target_quality": block.target_quality,
            "target_cost": block.target_cost,
            "observations": counts,
            "sum_quality": np.bincount(actions, weights=weights * quality, minlength=len(self.models)),
            "sum_cost": np.bincount(actions, weights=weights * cost, minlength=len(self.models)),
        }
        for name, value in new.items():
            self.statistics[name] = decay * self.statistics[name] + value  # γⁿ = 1 multiplies exactly

    def forget(self, keep: float) -> None:
        """Scale every statistic by ``keep`` (0: start again from λI alone): after a drift alarm."""
        for name in STATISTICS:
            self.statistics[name] = keep * self.statistics[name]

    def add_arms(self, models: list[str]) -> None:
        """New arms with no statistics (models added to the service's pool), after the existing ones."""
        known = [name for name in models if name in self.models]
        if known:
            raise DataError(f"cannot add {', '.join(known)}: already a model of the learner")
        extra = len(models)
        for name, value in self.statistics.items():
            self.statistics[name] = np.concatenate([value, np.zeros((extra, *value.shape[1:]))])
        self.models += models

    def agent(self, masked: Iterable[int] = ()) -> LinUCB:
        """LinUCB solved from the statistics: θ_k = (λI + G_k)⁻¹ b_k; a ``masked`` arm is never the greedy choice.

        A masked arm (a model removed from the pool, or added and not yet observed enough) gets
        θ^q_k = :data:`MASKED_QUALITY` on the bias feature (the featurizer's last) and 0 elsewhere:
        its estimated quality is far below any real model's utility at any cost weight.
        """
        statistics = LinUCBStatistics(
            self.statistics["gram"],
            self.statistics["target_quality"],
            self.statistics["target_cost"],
            np.rint(self.statistics["observations"]),
            self.statistics["sum_quality"],
            self.statistics["sum_cost"],
            np.asarray(int(np.rint(self.statistics["observations"].sum()))),
        )
        agent = linucb_from_statistics(statistics, LinUCBConfig(ridge=self.ridge))
        for arm in masked:
            agent.theta_quality[arm] = 0.0
            agent.theta_quality[arm, -1] = MASKED_QUALITY
        return agent

    def state(self) -> dict[str, np.ndarray]:
        """The statistics, for the follower's checkpoint."""
        return {name: value.copy() for name, value in self.statistics.items()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; arms beyond the state's (models added since) keep no statistics.

        Another feature dimension, or more arms than this learner has, is a DataError.
        """
        for name in STATISTICS:
            value = np.asarray(state[name], dtype=np.float64)
            mine = self.statistics[name]
            if value.shape[1:] != mine.shape[1:] or len(value) > len(mine):
                raise DataError(
                    f"the follower's checkpoint has {name} of shape {value.shape}, "
                    f"the learner {mine.shape}: is it another run's?"
                )
            self.statistics[name] = np.concatenate([value, mine[len(value) :]])
