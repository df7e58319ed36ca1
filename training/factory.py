"""``agent.kind`` of a run configuration → a fresh agent, through the registry of :mod:`agents.registry`."""

from __future__ import annotations

from agents.base import Agent
from agents.registry import KINDS, create_agent, registration
from training.config import RunConfig

AGENTS = KINDS  # the kinds a run (and the comparison's --agents) accepts


def make_agent(kind: str, config: RunConfig, n_models: int, dimension: int) -> Agent:
    """A fresh agent of ``kind`` with its section of ``config.agent`` and the reward's cost weight."""
    section = getattr(config.agent, registration(kind).section)
    return create_agent(kind, n_models, dimension, section, config.reward.cost_weight)
