"""Learn in production: follow the service's decision logs, promote only what off-policy evaluation proves better.

One :meth:`Follower.step` is one poll of the decision logs (:class:`training.decision_stream.DecisionStream`)
and what follows from the rounds it joined, in their order:

1. **Split.** Each round goes, by a hash of its ``query_id`` (seeded, as the training split),
   either to the learner (``1 − holdout_share``) or to the held-out window the gate evaluates on
   (the latest ``window`` of them): the gate never judges a candidate on rounds it learned from.
2. **Learn.** Training rounds are added to LinUCB's statistics, discounted by ``discount``
   per round (:class:`training.live_learner.LiveLearner`).
3. **Drift.** The realised reward of every round feeds a Page–Hinkley test
   (:mod:`training.drift`); an alarm is logged and shown, the statistics keep only ``drift.keep``
   of themselves and the held-out window is emptied, so what follows learns and is judged on the
   traffic after the change.
4. **Gate.** Each time ``gate_every`` more training rounds have been learned, the candidate
   (LinUCB solved from the statistics) is compared with the policy in service on the held-out
   window by paired doubly robust estimates (:func:`training.promotion.compare`); it is promoted
   only when the lower confidence bound of candidate − incumbent is above ``margin``: exported,
   kept as the next version with its evaluation, installed as ``policy.pt`` atomically and the
   service reloaded. Every decision, taken or refused, is an event.

**The model pool.** ``add_models`` are new arms after the run's models, learned from the share
of traffic the service explores them with (``serve.py --explore-new-models``); a candidate may
choose one only once it has ``min_observations`` learned rounds, and never a model of
``remove_models`` (:meth:`Follower.masked_arms`, :meth:`training.live_learner.LiveLearner.agent`).

The state after a step (the stream's offsets and waiting records, the statistics, the test, the
window, the events) is one checkpoint, ``follower.npz``, written atomically at the end of the
step: a follower killed at any moment and started again redoes the step from the same offsets,
so it ends in the state of an uninterrupted run over the same records. The events are rewritten
from the checkpoint as ``events.jsonl``; TensorBoard gets the same numbers under ``tb/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass

from data.outputs import OutputKind, claim_output, write_text_atomically
from data.prices import PriceTable
from data.schema import DataError, read_yaml
from data.splits import hash_unit
from policies.artifact import load_policy
from policies.export import PolicyMetadata, build_text_policy, save_policy
from training.checkpoints import read_checkpoint, write_checkpoint
from training.config import apply_overrides, validated
from training.decision_stream import DecisionStream, Rejection, Round
from training.drift import DriftConfig, PageHinkley
from training.live_learner import LEARNER_FILE, LiveLearner
from training.promotion import GateResult, PolicyHistory, compare, reload_service
from training.tensorboard import TensorBoardLogger

logger = logging.getLogger("routerl.follow")

CHECKPOINT = "follower.npz"
EVENTS = "events.jsonl"
FOLLOWER_DIRECTORY = OutputKind(
    "follower directory",
    frozenset(
        {CHECKPOINT, EVENTS, "policy.pt", "policy.safetensors", "versions", "rejected.jsonl", "rollbacks.jsonl", "tb"}
    ),
)


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class FollowConfig:
    """Settings of the follower (``--config`` YAML, ``--set key=value``)."""

    gate_every: PositiveInt = 500  # training rounds learned between two decisions of the gate
    window: PositiveInt = 2000  # the gate evaluates on the latest this many held-out rounds
    min_holdout: PositiveInt = 100  # held-out rounds needed before the gate decides at all
    holdout_share: float = Field(default=0.2, gt=0.0, lt=1.0)  # share of rounds kept out of learning
    margin: float = 0.0  # promote only if the lower bound of candidate − incumbent exceeds this (reward)
    confidence: float = Field(default=0.95, ge=0.5, lt=1.0)  # one-sided level of the lower bound
    min_support: NonNegativeInt = 10  # held-out rounds logged on the candidate's choice where it differs
    max_weight: NonNegativeFloat | None = None  # clip DR's importance weights at this (None: no clipping)
    discount: float = Field(default=1.0, gt=0.0, le=1.0)  # γ per round: statistics fade as γ^age
    drift: DriftConfig = field(default_factory=DriftConfig)
    seed: int = 0  # seeds the hash that splits rounds into learning and held-out
    poll_bytes: PositiveInt = 16 * 2**20  # a poll reads at most this much of each log file
    remembered: PositiveInt = 100_000  # latest joined query ids kept to reject a repeated record
    add_models: list[str] = field(default_factory=list)  # models added to the pool: new arms, masked until observed
    min_observations: PositiveInt = 50  # learned rounds an added model needs before a candidate may choose it
    remove_models: list[str] = field(default_factory=list)  # models taken out of the pool: masked in candidates


def load_follow_config(path: Path | None, overrides: list[str]) -> FollowConfig:
    """The settings of a YAML file (or the defaults) with ``--set key=value`` overrides; invalid: a DataError."""
    tree = (read_yaml(path, "config") or {}) if path is not None else {}
    if not isinstance(tree, dict):
        raise DataError(f"{path}: the follower's config must be a mapping")
    apply_overrides(tree, overrides)
    return validated(FollowConfig, tree, path)


@pydantic_dataclass(frozen=True)
class Event:
    """What the follower did at a round: ``start``, ``promote``, ``refuse`` or ``drift``."""

    kind: str
    round: int  # rounds joined so far
    detail: dict[str, Any]


class Follower:
    """The loop of the module docstring, over ``run``'s learner, the logs in ``logs`` and the folder ``out``."""

    def __init__(
        self,
        run: Path,
        logs: Path,
        out: Path,
        config: FollowConfig,
        service: str | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.config, self.service, self.out = config, service, out
        self.learner = LiveLearner.load(run / LEARNER_FILE)
        self.run_models = list(self.learner.models)
        self.learner.add_arms(list(config.add_models))
        unknown = sorted(set(config.remove_models) - set(self.learner.models))
        if unknown:
            raise DataError(f"remove_models: {', '.join(unknown)} not among the models {self.learner.models}")
        self.stream = DecisionStream(
            logs, self.learner.models, prices or PriceTable.load_or_default(None), config.poll_bytes, config.remembered
        )
        self.history = PolicyHistory(out)
        self.drift = PageHinkley(config.drift.tolerance, config.drift.threshold)
        self.holdout: list[dict[str, Any]] = []
        self.rounds = 0  # joined rounds so far
        self.learned = 0  # of them, rounds learned from (since the start, drift or not)
        self.version = 0  # the latest version kept
        self.events: list[dict[str, Any]] = []
        self.rejected_bytes = 0
        resuming = (out / CHECKPOINT).is_file()
        if not resuming:
            claim_output(out, FOLLOWER_DIRECTORY, overwrite=False, inputs={logs: "decision logs", run: "run"})
        self.board = TensorBoardLogger(out / "tb")
        if resuming:
            self._resume()
        else:
            self._start(run)

    def _start(self, run: Path) -> None:
        """A new follower folder: the run's policy becomes version 0, in service."""
        started = load_policy(run / "policy.pt")
        if list(started.models) != self.run_models:
            raise DataError(f"{run}: policy.pt and {LEARNER_FILE} name different models")
        copy = self.out / "versions" / ".start.pt"
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes((run / "policy.pt").read_bytes())
        record = self.history.add(0, copy, {"admitted_by": f"the starting policy of {run}"})
        self.history.install(0)
        self._event("start", {"version": 0, "policy_version": record["policy_version"]})
        self._commit()

    def _resume(self) -> None:
        state = read_checkpoint(self.out / CHECKPOINT)
        if self.learner.models[: len(state["models"])] != state["models"]:
            raise DataError(
                f"{self.out}: the follower learned the models {state['models']}; add_models may only add "
                f"after them (now {self.learner.models})"
            )
        self.stream.load_state(state["stream"])
        self.learner.load_state(state["learner"])
        self.drift = PageHinkley(**state["drift"])
        self.holdout, self.events = list(state["holdout"]), list(state["events"])
        self.rounds, self.learned, self.version = int(state["rounds"]), int(state["learned"]), int(state["version"])
        self.rejected_bytes = int(state["rejected_bytes"])
        rejected = self.out / "rejected.jsonl"
        if rejected.is_file() and rejected.stat().st_size > self.rejected_bytes:
            with open(rejected, "r+b") as handle:  # drop what a killed step appended after its checkpoint
                handle.truncate(self.rejected_bytes)

    def step(self) -> int:
        """One poll and everything that follows from it (module docstring); the log lines it read."""
        before = sum(self.stream.lines.values())
        rounds, rejections = self.stream.poll()
        self._reject(rejections)
        if rounds:
            self._take(rounds)
        self._commit()
        return sum(self.stream.lines.values()) - before

    def _take(self, rounds: list[Round]) -> None:
        """Learn, hold out, test for drift and decide, round by round in order (segments between events)."""
        rewards = np.array([r.quality - r.cost_weight * r.cost for r in rounds])
        held_out = hash_unit(np.array([r.query_id for r in rounds]), self.config.seed) < self.config.holdout_share
        alarms = set(self.drift.update(rewards))
        start = 0
        for i, round_ in enumerate(rounds):
            self.rounds += 1
            if held_out[i]:
                self.holdout.append(asdict(round_))
            else:
                self.learned += 1
            alarm, gate = i in alarms, not held_out[i] and self.learned % self.config.gate_every == 0
            if alarm or gate or i == len(rounds) - 1:
                self._learn([r for r, out in zip(rounds[start : i + 1], held_out[start : i + 1]) if not out])
                start = i + 1
            if alarm:
                self._drift_alarm(float(rewards[max(0, i - 99) : i + 1].mean()))
            if gate:
                self._gate()
        del self.holdout[: -self.config.window]
        self.board.log_scalars(
            {
                "follow/rounds": self.rounds,
                "follow/pending": len(self.stream.pending),
                "follow/rejected": sum(self.stream.rejected.values()),
                "drift/statistic": self.drift.statistic,
            },
            self.rounds,
        )

    def _learn(self, rounds: list[Round]) -> None:
        if rounds:
            self.learner.add(
                self.learner.features([r.query for r in rounds]),
                np.array([r.action for r in rounds]),
                np.array([r.quality for r in rounds]),
                np.array([r.cost for r in rounds]),
                self.config.discount,
            )

    def _drift_alarm(self, recent_reward: float) -> None:
        """Forget (keep ``drift.keep`` of the statistics) and empty the held-out window."""
        self.learner.forget(self.config.drift.keep)
        self.holdout.clear()
        self._event("drift", {"recent_mean_reward": recent_reward, "kept": self.config.drift.keep})
        self.board.log_scalars({"drift/alarm": 1.0}, self.rounds)

    def _gate(self) -> None:
        """Compare the candidate with the policy in service; promote it if it is proven better."""
        window = self.holdout[-self.config.window :]
        if len(window) < self.config.min_holdout:
            self._event("refuse", {"reason": f"{len(window)} held-out rounds, fewer than min_holdout"})
            return
        agent = self.learner.agent(self.masked_arms())
        queries = [r["query"] for r in window]
        weights = np.array([r["cost_weight"] for r in window])
        predictions = agent.scores(self.learner.features(queries), weights)
        result = compare(
            np.argmax(predictions, axis=1),
            _choices(self.history.serving, queries, weights, self.learner.models),
            predictions,
            np.array([r["action"] for r in window]),
            np.array([r["quality"] - r["cost_weight"] * r["cost"] for r in window]),
            np.array([r["propensity"] for r in window]),
            self.config.margin,
            self.config.confidence,
            self.config.min_support,
            self.config.max_weight,
        )
        self.board.log_scalars(
            {
                "gate/estimate": result.estimate,
                "gate/lower": result.lower,
                "gate/upper": result.upper,
                "gate/promoted": float(result.promoted),
            },
            self.rounds,
        )
        if not result.promoted:
            reason = "lower bound not above the margin" if result.lower <= result.margin else "too little support"
            self._event("refuse", {"reason": reason, **result.as_json()})
            return
        self._promote(agent, result)

    def masked_arms(self) -> list[int]:
        """Arms no candidate may choose: removed models, and added ones observed < ``min_observations`` times."""
        observations = self.learner.statistics["observations"]
        added = set(self.config.add_models)
        return [
            arm
            for arm, name in enumerate(self.learner.models)
            if name in self.config.remove_models or (name in added and observations[arm] < self.config.min_observations)
        ]

    def _promote(self, agent: Any, result: GateResult) -> None:
        """Export the candidate as the next version, install it and reload the service."""
        self.version += 1
        incumbent = load_policy(self.history.serving).metadata
        fingerprint = hashlib.sha256(b"".join(v.tobytes() for v in self.learner.state().values())).hexdigest()[:16]
        metadata = PolicyMetadata(
            models=self.learner.models,
            default_cost_weight=float(incumbent["default_cost_weight"]),
            cost_weight_range=list(incumbent["cost_weight_range"]),
            score_kind=agent.score_kind,
            agent=agent.name,
            featurizer=incumbent["featurizer"],
            data_fingerprint=fingerprint,
            metrics={"gate_estimate": result.estimate, "gate_lower": result.lower},
            training_data={"trained_on": "production rounds", "rounds": self.learned},
            rules=list(incumbent.get("rules", [])),  # the serving policy's rule overrides carry over
        )
        module = build_text_policy(self.learner.featurizer, agent.linear_map(), agent.head(), metadata)
        written = save_policy(module, metadata, self.history.folder / ".candidate.pt")
        record = self.history.add(
            self.version,
            written,
            {"round": self.rounds, "learned_rounds": self.learned, "evaluation": result.as_json()},
        )
        status = reload_service(self.service, self.history.install(self.version))
        self._event(
            "promote",
            {
                "version": self.version,
                "policy_version": record["policy_version"],
                "service": status,
                **result.as_json(),
            },
        )
        self.board.log_scalars({"gate/version": self.version}, self.rounds)

    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        event = asdict(Event(kind, self.rounds, detail))
        self.events.append(event)
        logger.info("%s at round %d: %s", kind, self.rounds, json.dumps(detail))

    def _reject(self, rejections: list[Rejection]) -> None:
        """Append the rejected records to ``rejected.jsonl`` (its committed length is in the checkpoint)."""
        if not rejections:
            return
        for rejection in rejections:
            logger.warning("%s:%d: %s: %s", rejection.file, rejection.line, rejection.reason, rejection.detail)
        with open(self.out / "rejected.jsonl", "a", encoding="utf-8") as log:
            log.writelines(json.dumps(r.as_json(), ensure_ascii=False) + "\n" for r in rejections)
            log.flush()
            self.rejected_bytes = log.tell()

    def _commit(self) -> None:
        """The checkpoint, then the events file derived from it."""
        write_checkpoint(self.out / CHECKPOINT, self.state())
        write_text_atomically(self.out / EVENTS, "".join(json.dumps(e, sort_keys=True) + "\n" for e in self.events))
        self.board.writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer (its thread and file)."""
        self.board.close()

    def state(self) -> dict[str, Any]:
        """Everything the next step depends on (the checkpoint)."""
        return {
            "models": self.learner.models,
            "stream": self.stream.state(),
            "learner": self.learner.state(),
            "drift": self.drift.state(),
            "holdout": self.holdout,
            "events": self.events,
            "rounds": self.rounds,
            "learned": self.learned,
            "version": self.version,
            "rejected_bytes": self.rejected_bytes,
        }


def _choices(policy: Path, queries: list[str], weights: np.ndarray, models: list[str]) -> np.ndarray:
    """The greedy choice of the policy in service for each query at its own cost weight (an index of ``models``)."""
    loaded = load_policy(policy)
    index = np.array([models.index(name) for name in loaded.models])
    choices = np.empty(len(queries), dtype=np.int64)
    for weight in np.unique(weights):
        rows = np.flatnonzero(weights == weight)
        scores = loaded.scores([queries[i] for i in rows], float(weight)).double().numpy()
        choices[rows] = index[np.argmax(scores, axis=1)]
    return choices
