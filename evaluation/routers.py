"""Adapters that let evaluation ask any router "which model, at this cost weight?"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from data.routing_log import RoutingLog
from evaluation.sweep import Decide


@dataclass(frozen=True)
class PolicyRouter:
    """An exported ``policy.pt`` (a TorchScript module) deciding on a log's query texts."""

    module: Any
    batch_size: int = 4096

    def decider(self, log: RoutingLog) -> Decide:
        """``decide(cost_weight)`` giving the log's model index of the policy's choice per query."""
        names = list(self.module.models())
        missing = [m for m in names if m not in log.models]
        if missing:
            raise ValueError(f"the policy routes to models the log does not have: {', '.join(missing)}")
        to_log = {name: log.models.index(name) for name in names}

        def decide(cost_weight: float) -> np.ndarray:
            chosen: list[int] = []
            for start in range(0, log.n_queries, self.batch_size):
                batch = log.queries[start : start + self.batch_size]
                chosen.extend(to_log[name] for name in self.module.route(batch, float(cost_weight)))
            return np.array(chosen, dtype=np.int64)

        return decide
