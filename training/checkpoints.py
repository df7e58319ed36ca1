"""Checkpoints of step-wise learning: one file, written atomically, and the one resume path.

``checkpoints/checkpoint.npz`` holds, as one unit, the learner's :meth:`~agents.base.Agent.state_dict`
(everything needed to continue: parameters, steps, generators, a budget's multiplier) and the
state of the callbacks that carry one, keep-best's best state, score and step among them. It is
written to a temporary file in the same folder, synced and renamed over the previous one
(:func:`data.outputs.replacing`), so a run killed at any moment leaves either the previous
checkpoint or the new one whole, and never a newest state without the best state that goes
with it. (:mod:`policies.faults` names the points between these writes, for the tests that
kill a run there.)

In the archive, the arrays of the nested state are entries ``a0``, ``a1``, ...; the rest of it
is JSON in the entry ``__meta__``, where each array's place holds ``{"__array__": "a<i>"}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import Agent, State
from agents.callbacks import Callback
from data.outputs import remove_killed_writes, replacing
from data.schema import DataError
from policies.faults import fault_point

CHECKPOINT = "checkpoint.npz"
_META = "__meta__"
_ARRAY = "__array__"


def _separate(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``tree`` with every array moved into ``arrays`` and replaced by a reference to it."""
    if isinstance(tree, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = tree
        return {_ARRAY: key}
    if isinstance(tree, dict):
        return {str(key): _separate(value, arrays) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_separate(value, arrays) for value in tree]
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def _join(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The inverse of :func:`_separate`."""
    if isinstance(tree, dict):
        if set(tree) == {_ARRAY}:
            return arrays[tree[_ARRAY]]
        return {key: _join(value, arrays) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_join(value, arrays) for value in tree]
    return tree


def write_checkpoint(path: Path, state: State) -> None:
    """Write ``state`` to ``path`` whole or not at all (:func:`data.outputs.replacing`)."""
    fault_point("checkpoint-start")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    meta = json.dumps(_separate(state, arrays))
    entries = {**arrays, _META: np.frombuffer(meta.encode(), dtype=np.uint8)}
    with replacing(path) as temporary:
        with open(temporary, "wb") as out:
            np.savez(out, **entries)  # type: ignore[arg-type]  # numpy's stub types **kwds as its keywords
        fault_point("checkpoint-written")
    fault_point("checkpoint-renamed")


def read_checkpoint(path: Path) -> State:
    """The state written by :func:`write_checkpoint`."""
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files if key != _META}
        meta = json.loads(archive[_META].tobytes().decode())
    return dict(_join(meta, arrays))


class CheckpointCallback(Callback):
    """Saves the learner and the ``stateful`` callbacks every ``every`` steps and at the end.

    A save is due at the first whole state (``on_rollout_end``) at least ``every`` steps after the
    previous one. :meth:`resume` is the one resume path: it restores all of it before training.
    """

    def __init__(self, directory: Path, every: int, stateful: dict[str, Callback]) -> None:
        if every < 1:
            raise ValueError(f"checkpoint interval must be >= 1, got {every}")
        super().__init__()
        self.path = directory / CHECKPOINT
        self.every = every
        self.stateful = stateful
        self.learner: Agent | None = None
        self.saved_step = 0

    def resume(self, learner: Agent) -> int | None:
        """Restore ``learner`` and the callbacks from the checkpoint; its step, or None without one.

        A checkpoint that this run's configuration cannot continue (another agent kind, other
        hyperparameters or budget, other feature or model counts) is a :class:`DataError`
        naming the file and the difference: the run's config.yaml was edited since it was written.
        """
        remove_killed_writes(self.path.parent)
        if not self.path.exists():
            return None
        saved = read_checkpoint(self.path)
        try:
            if saved["agent"] != learner.name:
                raise DataError(f"it was written by agent {saved['agent']!r}, this run's is {learner.name!r}")
            learner.load_state_dict(saved["learner"])
        except DataError as error:
            raise DataError(
                f"{self.path}: cannot resume: {error} (resume with the configuration it was "
                "written with, or start a new run)"
            ) from None
        for name, callback in self.stateful.items():
            callback.load_state_dict(saved["callbacks"][name])
        return learner.steps_done

    def on_training_start(self, learner: Agent) -> None:
        """Count the interval from the learner's steps so far."""
        self.learner = learner
        self.saved_step = learner.steps_done

    def on_rollout_end(self, step: int, scalars: dict[str, float]) -> None:
        """Save when ``every`` steps have passed since the last save."""
        if step - self.saved_step >= self.every:
            self.save()

    def on_training_end(self, learner: Agent) -> None:
        """Save the final state (and the callbacks' final word, e.g. keep-best's last evaluation)."""
        self.save()

    def save(self) -> None:
        """Write the learner's state and the callbacks' as one checkpoint."""
        assert self.learner is not None
        self.saved_step = self.learner.steps_done
        callbacks = {name: callback.state_dict() for name, callback in self.stateful.items()}
        state = {"agent": self.learner.name, "learner": self.learner.state_dict(), "callbacks": callbacks}
        write_checkpoint(self.path, state)
