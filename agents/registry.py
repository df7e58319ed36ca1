"""The agent kinds, registered once: ``agent.kind`` → the class, its section, and what it reads.

Every class takes ``(n_models, dimension, config, cost_weight)`` (:mod:`agents.base`), where
``config`` is the section of the run configuration's ``agent`` block named here (``agent.linucb``,
``agent.peers``, ...). The run configuration accepts exactly these kinds (``training.config``), and
a new agent is one entry here, a section there, and its module in :mod:`agents`.

**What each kind reads.** An option that the chosen kind does not read would train the same
model as without it, under a setting that says otherwise. Each registration declares how the
kind learns and which options it reads, and :func:`check_options` refuses, in one line that
names the option and says why, every combination that would be such a no-op:

* ``agent.learning`` outside the kind's ``learnings`` (LinTS fitted from a log is LinUCB's ridge
  fit; knn, logistic, mlp and mf have no online learning; PPO learns only by interaction);
* ``reward.budget`` unless the kind learns online (its multiplier is learned while interacting);
* ``reward.preference`` unless the kind learns online in the routing environment, which draws
  the weights from it (PPO draws its own from ``agent.ppo.preference``);
* ``reward.latency_weight`` above 0: no kind models latency (they estimate quality and cost);
* an option of ``agent`` that the kind does not read with this learning and reward, set away
  from its default (``agent.linucb.alpha`` when fitting, ``agent.online_steps`` for PPO, PPO's
  early stopping under a budget, ...).

The sections of other kinds (``agent.ppo`` when ``agent.kind`` is linucb) are not checked: a file
may hold several kinds' settings, and a section's name says whose they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from typing import Any

from agents.base import Agent, Learning
from agents.factorisation import MatrixFactorisationRouter
from agents.lints import LinTS
from agents.linucb import LinUCB
from agents.mlp import MlpRouter
from agents.peers import LogisticRouter, NearestNeighbourRouter
from agents.ppo import PPORouter
from data.schema import DataError
from envs.rewards import RewardConfig

#: Options of ``agent`` that only a learner interacting with the environment reads.
ONLINE_OPTIONS = ("online_steps", "checkpoint_every")


@dataclass(frozen=True)
class Registration:
    """One kind: its class, its section of ``agent``, and what of the configuration it reads.

    ``learnings``: the values of ``agent.learning`` it accepts, its default first;
    ``refused_learning``: why it refuses the other one. ``online_only``: options under ``agent``
    it reads only while learning online (besides :data:`ONLINE_OPTIONS`); ``unread``: options
    under ``agent`` it never reads; ``unread_with_budget``: options it does not read under a
    ``reward.budget``, and why. ``preference``: empty if, learning online, it draws its weights
    from ``reward.preference``; else why it does not read it.
    """

    agent: Callable[[int, int, Any, float], Agent]  # the class: (n_models, dimension, config, cost_weight)
    section: str
    learnings: tuple[Learning, ...]
    refused_learning: str = ""
    online_only: tuple[str, ...] = ()
    unread: tuple[str, ...] = ()
    unread_with_budget: tuple[tuple[str, ...], str] = ((), "")
    preference: str = ""


_SUPERVISED = "is a supervised router fitted from the log in one pass; it has no online learning"

REGISTRY: dict[str, Registration] = {
    "linucb": Registration(LinUCB, "linucb", ("fit", "online"), online_only=("linucb.alpha",)),
    "lints": Registration(
        LinTS,
        "lints",
        ("online",),
        "lints differs from linucb only in how it explores while learning online (posterior draws instead of "
        "the UCB bonus), so fitted from a log it would be linucb's ridge fit: use agent.kind=linucb, "
        "or agent.learning=online",
    ),
    "ppo": Registration(
        PPORouter,
        "ppo",
        ("online",),
        "ppo learns only by interacting with the environment, for agent.ppo.total_steps episodes",
        unread=("online_steps",),
        unread_with_budget=(("ppo.eval_every", "ppo.patience", "ppo.eval_weights"),
                            "λ moves while training, so nothing is scored on validation: the last parameters are kept"),
        preference="ppo draws its training weights from agent.ppo.preference",
    ),
    "knn": Registration(
        NearestNeighbourRouter, "peers", ("fit",), f"knn {_SUPERVISED}", unread=("peers.inverse_regularisation",)
    ),
    "logistic": Registration(
        LogisticRouter, "peers", ("fit",), f"logistic {_SUPERVISED}", unread=("peers.neighbours",)
    ),
    "mlp": Registration(MlpRouter, "mlp", ("fit",), f"mlp {_SUPERVISED}"),
    "mf": Registration(MatrixFactorisationRouter, "mf", ("fit",), f"mf {_SUPERVISED}"),
}
KINDS: tuple[str, ...] = tuple(REGISTRY)
#: Kinds that were the same model as another under their own name, and why they are gone.
RETIRED = {
    "direct": "the direct method (per-arm ridge regression of quality and cost, greedy) is exactly what "
    "agent.kind=linucb learns with agent.learning=fit: use that",
}


def registration(kind: str) -> Registration:
    """The registration of ``kind``; an unknown kind is a :class:`DataError` listing the known ones."""
    if kind in RETIRED:
        raise DataError(f"agent kind {kind!r} is retired: {RETIRED[kind]}")
    if kind not in REGISTRY:
        raise DataError(f"unknown agent kind {kind!r}; choose from {', '.join(KINDS)}")
    return REGISTRY[kind]


def default_learning(kind: str) -> Learning:
    """How ``kind`` learns when ``agent.learning`` is not given."""
    return registration(kind).learnings[0]


def create_agent(kind: str, n_models: int, dimension: int, config: Any, cost_weight: float) -> Agent:
    """A fresh agent of ``kind`` with ``config``, its section of the configuration, and a default weight."""
    return registration(kind).agent(n_models, dimension, config, cost_weight)


def token_mode_kinds() -> str:
    """Which kinds estimate tokens in a token-mode run, by way of learning (:attr:`Agent.token_mode`), in words."""
    ways = []
    for learning in ("fit", "online"):
        kinds = [kind for kind, entry in REGISTRY.items()
                 if learning in entry.learnings and learning in getattr(entry.agent, "token_mode", ())]
        ways.append(f"{', '.join(kinds)} with agent.learning={learning}")
    return "; ".join(ways)


def check_options(kind: str, learning: Learning, options: Any, reward: RewardConfig) -> None:
    """Refuse, with one line saying why, a setting that ``kind`` learning this way would not read.

    ``options`` is the run configuration's ``agent`` block (its class's defaults are what an
    unread option must be left at); ``reward`` its reward. See the module docstring for the rules.
    """
    entry = registration(kind)
    if learning not in entry.learnings:
        raise DataError(f"agent.kind={kind} with agent.learning={learning}: {entry.refused_learning}")
    if reward.latency_weight > 0:
        raise DataError("reward.latency_weight: no agent learns from latency (each estimates quality and cost); "
                        "leave it at 0")
    if reward.budget is not None and learning != "online":
        raise DataError(f"reward.budget with agent.kind={kind}, agent.learning={learning}: a budget's multiplier "
                        "is learned only while interacting (agent.learning=online); for a fitted policy, "
                        "--target-cost picks the weight for a mean cost")
    if reward.preference is not None and (learning != "online" or entry.preference):
        why = entry.preference or ("a fit learns quality and cost apart, which serves every weight; "
                                   "the weights are drawn per episode only while learning online")
        raise DataError(f"reward.preference with agent.kind={kind}, agent.learning={learning}: {why}")
    unread = [(path, f"is not read by agent.kind={kind}") for path in entry.unread]
    if learning == "fit":
        unread += [(path, "acts only while learning online, and agent.learning=fit")
                   for path in (*ONLINE_OPTIONS, *entry.online_only)]
    if reward.budget is not None:
        paths, why = entry.unread_with_budget
        unread += [(path, f"is not read by agent.kind={kind} under reward.budget ({why})") for path in paths]
    defaults = type(options)()
    for path, reason in unread:
        value, default = _option(options, path), _option(defaults, path)
        if value != default:
            raise DataError(f"agent.{path}={value!r} {reason}: leave it at {default!r}")


def _option(options: Any, path: str) -> Any:
    """The option at the dotted ``path`` under ``options`` (``"linucb.alpha"``)."""
    return reduce(getattr, path.split("."), options)
