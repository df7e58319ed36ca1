"""The agent kinds, registered once: ``agent.kind`` → the class and its section of the configuration.

Every class takes ``(n_models, dimension, config, cost_weight)`` (:mod:`agents.base`), where
``config`` is the section of the run configuration's ``agent`` block named here (``agent.linucb``,
``agent.peers``, ...). The run configuration accepts exactly these kinds (``training.config``), and
a new agent is one line here, a section there, and its module in :mod:`agents`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.base import Agent
from agents.direct import DirectMethodRouter
from agents.lints import LinTS
from agents.linucb import LinUCB
from agents.peers import LogisticRouter, NearestNeighbourRouter
from agents.ppo import PPORouter
from data.schema import DataError


@dataclass(frozen=True)
class Registration:
    """One kind: its class and the name of its hyperparameters' section in ``agent``."""

    agent: Callable[[int, int, Any, float], Agent]  # the class: (n_models, dimension, config, cost_weight)
    section: str


REGISTRY: dict[str, Registration] = {
    "linucb": Registration(LinUCB, "linucb"),
    "lints": Registration(LinTS, "lints"),
    "direct": Registration(DirectMethodRouter, "direct"),
    "ppo": Registration(PPORouter, "ppo"),
    "knn": Registration(NearestNeighbourRouter, "peers"),
    "logistic": Registration(LogisticRouter, "peers"),
}
KINDS: tuple[str, ...] = tuple(REGISTRY)


def registration(kind: str) -> Registration:
    """The registration of ``kind``; an unknown kind is a :class:`DataError` listing the known ones."""
    if kind not in REGISTRY:
        raise DataError(f"unknown agent {kind!r}; choose from {', '.join(KINDS)}")
    return REGISTRY[kind]


def create_agent(kind: str, n_models: int, dimension: int, config: Any, cost_weight: float) -> Agent:
    """A fresh agent of ``kind`` with ``config``, its section of the configuration, and a default weight."""
    return registration(kind).agent(n_models, dimension, config, cost_weight)
