"""The in-memory routing log: one row per query, one column per model (arm)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

Feedback = Literal["full", "bandit"]

#: The costs beside USD that a policy can estimate per model (docs/contracts.md §2.13), and the unit each
#: is estimated in: a weight on it is quality given up per that unit (USD's is the cost weight).
OBJECTIVE_UNITS: dict[str, str] = {"latency": "s", "energy": "Wh"}


@dataclass(frozen=True)
class ReadStats:
    """What reading a log did: rows read = accepted + rejected, rejected counted by reason."""

    files: tuple[str, ...]
    rows_read: int
    rows_accepted: int
    rows_rejected: int
    rejected_by_reason: dict[str, int]
    pending: int = 0  # decisions of a decision log still waiting for feedback (not rejected)

    def __post_init__(self) -> None:
        if self.rows_read != self.rows_accepted + self.rows_rejected:
            raise AssertionError(
                f"rows read {self.rows_read} != accepted {self.rows_accepted} + rejected {self.rows_rejected}"
            )


@dataclass(frozen=True)
class RoutingLog:
    """Accepted outcomes of a log, arranged query × model.

    A query's text is kept once (not once per outcome). For a full-information log every cell of
    ``quality`` and ``cost`` is known. For a bandit-feedback log only the logged action's cell is
    known (``quality[i, action[i]]``); the others are NaN, and ``propensity[i]`` is the probability
    with which the logging policy chose ``action[i]``.
    """

    models: tuple[str, ...]
    query_ids: np.ndarray  # (N,) str (object)
    queries: list[str]  # (N,)
    quality: np.ndarray  # (N, K) float64, in [0, 1]
    cost: np.ndarray  # (N, K) float64, USD per query
    feedback: Feedback = "full"
    action: np.ndarray | None = None  # (N,) int64, bandit only
    propensity: np.ndarray | None = None  # (N,) float64 in (0, 1], bandit only
    latency_ms: np.ndarray | None = None  # (N, K) float64
    # (N, K) float64 Wh per call, NaN where unknown: logged, or filled by data.energy.with_energy_estimates
    energy_wh: np.ndarray | None = None
    energy_estimated: np.ndarray | None = None  # (N, K) bool: which energy_wh cells are estimates, not logged
    expected_quality: np.ndarray | None = None  # (N, K) ground truth of synthetic logs; never a feature
    # (N, K) float64 token counts of each outcome, NaN where its row had none; None when no row had them
    prompt_tokens: np.ndarray | None = None
    completion_tokens: np.ndarray | None = None
    embeddings: np.ndarray | None = None  # (N, D) float32: the user's own query embeddings
    timestamps: np.ndarray | None = None  # (N,) datetime64[ms]
    # (N,) object: each query's task (str; None for a query without one); None when no row has a task
    tasks: np.ndarray | None = None
    stats: ReadStats = field(default_factory=lambda: ReadStats((), 0, 0, 0, {}))
    fingerprint: str = ""

    @property
    def n_queries(self) -> int:
        """Number of queries (rows of the matrices)."""
        return len(self.query_ids)

    @property
    def n_models(self) -> int:
        """Number of models (arms)."""
        return len(self.models)

    def subset(self, index: np.ndarray) -> RoutingLog:
        """The log restricted to the queries at ``index`` (same models, same fingerprint)."""
        index = np.asarray(index)

        def take(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else array[index]

        return replace(
            self,
            query_ids=self.query_ids[index],
            queries=[self.queries[i] for i in index.tolist()],
            quality=self.quality[index],
            cost=self.cost[index],
            action=take(self.action),
            propensity=take(self.propensity),
            latency_ms=take(self.latency_ms),
            energy_wh=take(self.energy_wh),
            energy_estimated=take(self.energy_estimated),
            expected_quality=take(self.expected_quality),
            prompt_tokens=take(self.prompt_tokens),
            completion_tokens=take(self.completion_tokens),
            embeddings=take(self.embeddings),
            timestamps=take(self.timestamps),
            tasks=take(self.tasks),
        )

    def objective_table(self) -> dict[str, np.ndarray]:
        """Each cost of :data:`OBJECTIVE_UNITS` that every outcome of a full-information log has, (N, K) in its unit.

        latency = ``latency_ms`` / 1000 (seconds, the unit of ``reward.latency_weight``); energy =
        ``energy_wh`` (logged or estimated). A bandit log knows only the logged model's outcome, and a
        column with a missing (NaN) cell is incomplete: neither is in the table.
        """
        if self.feedback != "full":
            return {}
        columns = {"latency": None if self.latency_ms is None else self.latency_ms / 1000.0, "energy": self.energy_wh}
        return {name: values for name, values in columns.items() if values is not None and np.isfinite(values).all()}

    def reward(self, cost_weight: float | np.ndarray) -> np.ndarray:
        """Linear reward of every cell: quality − cost_weight × cost (USD per query)."""
        weight = np.asarray(cost_weight, dtype=np.float64)
        if weight.ndim == 1:
            weight = weight[:, None]
        return self.quality - weight * self.cost
