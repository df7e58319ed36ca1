"""One place that turns ``agent.kind`` into a fresh, configured agent."""

from __future__ import annotations

from agents.base import Agent
from agents.direct import DirectMethodRouter
from agents.lints import LinTS
from agents.linucb import LinUCB
from agents.peers import LogisticRouter, NearestNeighbourRouter
from agents.ppo import PPORouter
from data.schema import DataError
from training.config import RunConfig

AGENTS = ("linucb", "lints", "direct", "ppo", "knn", "logistic")


def make_agent(kind: str, config: RunConfig, n_models: int, dimension: int) -> Agent:
    """A fresh agent of ``kind`` with its section of ``config`` and the default cost weight."""
    weight = config.reward.cost_weight
    agents = config.agent
    if kind == "linucb":
        return LinUCB(n_models, dimension, agents.linucb, cost_weight=weight)
    if kind == "lints":
        return LinTS(n_models, dimension, agents.lints, cost_weight=weight)
    if kind == "direct":
        return DirectMethodRouter(n_models, dimension, agents.direct, cost_weight=weight)
    if kind == "ppo":
        return PPORouter(agents.ppo, n_models, dimension, cost_weight=weight, budget=config.reward.budget)
    if kind == "knn":
        return NearestNeighbourRouter(agents.peers, weight)
    if kind == "logistic":
        return LogisticRouter(agents.peers, weight)
    raise DataError(f"unknown agent {kind!r}; choose from {', '.join(AGENTS)}")
