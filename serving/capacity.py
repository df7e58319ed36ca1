"""Capacity on live traffic (``serve.py --capacity``): a maximum share of the decisions per model.

A capped model k (docs/contracts.md §4.10) has a multiplier λ_k >= 0 that is subtracted from its
score before the choice (:mod:`policies.capacity`): the router chooses among ``score − λ``, so a
larger λ_k sends fewer queries to k. The multiplier starts at the exported policy's (fitted
offline on the training queries, :mod:`evaluation.capacity`) and is moved by a dual (sub)gradient
step on every decision, as the live budget moves its weight (:mod:`serving.budget`; Boyd &
Vandenberghe, *Convex Optimization*, §5; Agrawal, Wang & Ye, *Operations Research* 62(4), 2014):

    λ_k ← clip(λ_k + η · s_k · (1[chosen = k] − c_k),  0,  λ_k⁰ + R · s_k)

with c_k the cap, η = ``--capacity-step`` and s_k the scale of k's margins: a running mean of
``|score_k − best other allowed score|`` over about the last :data:`MEAN_DECISIONS` decisions, so
that a step is a fixed share of the scores' spread whatever the policy's score units (utility for
LinUCB, logits for PPO). Summed, λ_k follows the decisions k took above its cap so far: an
integral controller, so the share of a window returns to the cap after traffic changes instead of
settling beside it. The clip (R = :data:`WINDUP_SCALES` scales above the start) keeps λ_k from
winding up while the cap is out of reach (a tenant's models, ``allowed_models``, a rule or the
exploration floor send k more than c_k whatever its score), and λ_k >= 0 drops a cap that does
not bind. Every decision counts, whatever chose it (the greedy choice, an exploration draw, a
session's rule, a fallback; the cascade of ``--cascade`` is not counted).

The caps are the service's from start to end: the exported policy's ``capacity``, or those of
``--capacity`` (which replace them; ``none`` turns them off), checked against the policy's models
at start. A reloaded policy keeps them and the multipliers reached (a capped model it lacks is not
offset); its own ``capacity`` is read at the next start.

Workers: the multipliers live in a memory-mapped file of the supervisor's state folder
(:class:`serving.shared_memory.SharedMemory`, its own file :data:`CAPACITY_FILE`), so the N workers
of ``--workers N`` hold one share per model, and each request's decisions are booked under its
lock in one step (a few microseconds). Reading a multiplier needs no lock.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from policies.capacity import check_caps, read_capacity
from serving.metrics import Metrics
from serving.policy import ServingPolicy
from serving.settings import Settings
from serving.shared_memory import SharedMemory

#: The memory-mapped file of the multipliers in the supervisor's state folder (``--workers``).
CAPACITY_FILE = "capacity"
#: Decisions over which the reported share and the margins' scale are averaged (exponentially weighted).
MEAN_DECISIONS = 1000
#: How far (in scales of its margins) a multiplier may rise above where it started.
WINDUP_SCALES = 20.0
#: ``--capacity none``: no caps, not even the exported policy's.
NO_CAPS = "none"

#: The cells of one capped model: λ, its start λ⁰, the margins' scale, margins seen, decisions, share.
_CAP = struct.Struct("<6d")
_MULTIPLIER = struct.Struct("<d")


@dataclass(frozen=True)
class Cap:
    """One capped model: its name, maximum share of the decisions, and starting multiplier."""

    model: str
    max_share: float
    start: float


def caps_of(settings: Settings, policy: ServingPolicy) -> list[Cap]:
    """The service's caps: ``--capacity`` (``MODEL=SHARE,...``, a YAML file ``{model: share}``, or ``none``)
    or, without it, the exported policy's ``capacity``. A cap starts at the policy's multiplier when the
    policy caps that model at the same share, else at 0.

    Raises:
        ValueError: one line naming ``--capacity`` or the policy file: an unknown model, a share
            outside (0, 1], caps that leave some queries nowhere to go, an unreadable file.
    """
    spec = settings.capacity
    if spec == NO_CAPS:
        return []
    try:
        exported = read_capacity(policy.metadata, policy.models)
    except ValueError as exc:
        raise ValueError(f"{policy.path}: {exc}") from None
    if spec is None:
        return [Cap(model, share, multiplier) for model, (share, multiplier) in exported.items()]
    caps = check_caps(_read_spec(spec), policy.models, f"--capacity {spec}")
    return [Cap(model, share, exported[model][1] if exported.get(model, (None,))[0] == share else 0.0)
            for model, share in caps.items()]


def _read_spec(spec: str) -> dict[str, object]:
    """``MODEL=SHARE,...`` or the YAML file ``spec`` as {model: share} (shares checked by the caller)."""
    if "=" in spec:
        caps: dict[str, object] = {}
        for pair in spec.split(","):
            model, _, share = pair.partition("=")
            try:
                caps[model.strip()] = float(share)
            except ValueError:
                raise ValueError(f"--capacity {spec}: {pair!r} is not MODEL=SHARE (e.g. large-70b=0.2)") from None
        return caps
    try:
        loaded = yaml.safe_load(Path(spec).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"--capacity {spec}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"--capacity {spec}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(loaded, dict) or not all(isinstance(name, str) for name in loaded):
        raise ValueError(f"--capacity {spec}: expected a mapping of model names to shares, e.g. large-70b: 0.2")
    return loaded


class CapacityController:
    """The capped models' multipliers in shared memory, moved by every decision (module docstring)."""

    def __init__(self, caps: Sequence[Cap], memory: SharedMemory, step: float) -> None:
        """Hold ``caps`` in ``memory`` (initialized by the first worker to get there)."""
        self.caps = tuple(caps)
        self.step = step
        self.memory = memory
        region = memory.region(len(self.caps) * _CAP.size // 8)
        self.offsets = [region.offset + i * _CAP.size for i in range(len(self.caps))]
        self._present: tuple[object, list[tuple[int, int]]] = (None, [])
        region.initialize_once(self._initialize)

    @classmethod
    def build(cls, settings: Settings, policy: ServingPolicy, state_dir: Path | None) -> CapacityController | None:
        """The controller of :func:`caps_of`, in the workers' shared file (``state_dir``) or private memory;
        None without caps."""
        caps = caps_of(settings, policy)
        if not caps:
            return None
        size = 4096 + len(caps) * _CAP.size
        return cls(caps, SharedMemory(size, state_dir / CAPACITY_FILE if state_dir else None), settings.capacity_step)

    def _initialize(self) -> None:
        for offset, cap in zip(self.offsets, self.caps, strict=True):
            _CAP.pack_into(self.memory.buffer, offset, cap.start, cap.start, 0.0, 0.0, 0.0, 0.0)

    def present(self, policy: ServingPolicy) -> list[tuple[int, int]]:
        """``(cap, index of its model in the policy)`` for every cap whose model ``policy`` has; once per policy."""
        if policy is not self._present[0]:
            models = policy.models
            self._present = (policy, [(i, models.index(cap.model)) for i, cap in enumerate(self.caps)
                                      if cap.model in models])
        return self._present[1]

    def begin(self, policy: ServingPolicy) -> CapacityRound:
        """One request's decisions: the multipliers read now (no lock), booked by :meth:`CapacityRound.book`."""
        present, buffer = self.present(policy), self.memory.buffer
        multipliers = [_MULTIPLIER.unpack_from(buffer, self.offsets[cap])[0] for cap, _ in present]
        return CapacityRound(self, present, multipliers)

    def step_cap(self, cap: int, decisions: int, chosen: int, margins: Sequence[float]) -> None:
        """Step cap ``cap``'s multiplier for ``decisions`` of which ``chosen`` went to it; the caller holds the lock."""
        offset = self.offsets[cap]
        multiplier, start, scale, seen, total, share = _CAP.unpack_from(self.memory.buffer, offset)
        for margin in margins:
            seen += 1
            scale += (abs(margin) - scale) / min(seen, MEAN_DECISIONS)
        total += decisions
        share += (chosen - decisions * share) / min(total, MEAN_DECISIONS)
        multiplier += self.step * scale * (chosen - decisions * self.caps[cap].max_share)
        multiplier = min(max(multiplier, 0.0), start + WINDUP_SCALES * scale)
        _CAP.pack_into(self.memory.buffer, offset, multiplier, start, scale, seen, total, share)

    def snapshot(self) -> list[dict[str, float | str]]:
        """Each capped model's cap, multiplier now, share of about the last 1,000 decisions, decisions, scale."""
        with self.memory.lock():
            rows = [_CAP.unpack_from(self.memory.buffer, offset) for offset in self.offsets]
        return [
            {"model": cap.model, "max_share": cap.max_share, "multiplier": row[0], "scale": row[2],
             "decisions": row[4], "share": row[5]}
            for cap, row in zip(self.caps, rows, strict=True)
        ]

    def observe(self, metrics: Metrics) -> None:
        """Set the capacity gauges of ``metrics`` (before each ``/metrics``)."""
        metrics.observe_capacity(self.snapshot())


class CapacityRound:
    """The multipliers one request routes with (:meth:`offset`), and its decisions until :meth:`book`."""

    __slots__ = ("chosen", "controller", "decisions", "margins", "multipliers", "present")

    def __init__(
        self, controller: CapacityController, present: list[tuple[int, int]], multipliers: list[float]
    ) -> None:
        """``present``: (cap, model index) of the caps the policy has; ``multipliers``: theirs now."""
        self.controller = controller
        self.present = present
        self.multipliers = multipliers
        self.decisions = 0
        self.chosen = [0] * len(present)
        self.margins: list[list[float]] = [[] for _ in present]

    def offset(self, scores: list[float]) -> list[float]:
        """``scores`` with each capped model's multiplier subtracted: what the choice is made on."""
        adjusted = list(scores)
        for (_, index), multiplier in zip(self.present, self.multipliers):
            adjusted[index] -= multiplier
        return adjusted

    def count(self, scores: list[float] | None, allowed: list[int], chosen: int) -> None:
        """One decision: model ``chosen``, among ``allowed``, from the policy's own ``scores`` (None: a fallback)."""
        self.decisions += 1
        for i, (_, index) in enumerate(self.present):
            if chosen == index:
                self.chosen[i] += 1
            if scores is not None and index in allowed:
                others = [scores[j] for j in allowed if j != index and j < len(scores)]
                if others:
                    self.margins[i].append(scores[index] - max(others))

    def book(self) -> None:
        """Step every multiplier for this request's decisions, under the shared lock (one step per cap)."""
        if not self.decisions:
            return
        controller = self.controller
        with controller.memory.lock():
            for i, (cap, _) in enumerate(self.present):
                controller.step_cap(cap, self.decisions, self.chosen[i], self.margins[i])
