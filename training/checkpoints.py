"""Checkpoints of online learning, written atomically, and the state needed to resume.

A checkpoint is ``checkpoints/step-<N>.npz``: the agent's arrays, the environment's random
generator state and the budget multiplier (JSON in the archive), written to a temporary file in
the same folder and renamed, so a run killed at any moment leaves only whole checkpoints. The
two newest are kept, plus ``best.npz``: the state with the best validation reward so far, which
is what the run exports.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_STEP = re.compile(r"step-(\d+)\.npz$")
_META = "__meta__"


@dataclass(frozen=True)
class Checkpoint:
    """One saved state: agent arrays and JSON metadata (step, env generator, multiplier, score)."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        """Training steps done when it was saved."""
        return int(self.meta["step"])


def _write(path: Path, checkpoint: Checkpoint) -> None:
    handle, temporary = tempfile.mkstemp(prefix=".checkpoint-", suffix=".npz", dir=path.parent)
    os.close(handle)
    try:
        meta = np.frombuffer(json.dumps(checkpoint.meta).encode(), dtype=np.uint8)
        with open(temporary, "wb") as out:
            np.savez(out, **{**checkpoint.arrays, _META: meta})  # type: ignore[arg-type]
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def read_checkpoint(path: Path) -> Checkpoint:
    """Load a checkpoint written by :class:`Checkpointer`."""
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files if key != _META}
        meta = json.loads(archive[_META].tobytes().decode())
    return Checkpoint(arrays, meta)


class Checkpointer:
    """Saves every ``every`` steps into ``directory`` and keeps the best by validation score."""

    def __init__(self, directory: Path, every: int, keep: int = 2) -> None:
        if every < 1:
            raise ValueError(f"checkpoint interval must be >= 1, got {every}")
        self.directory = directory
        self.every = every
        self.keep = keep
        self.best_score = -np.inf
        directory.mkdir(parents=True, exist_ok=True)
        best = directory / "best.npz"
        if best.exists():
            self.best_score = float(read_checkpoint(best).meta.get("score", -np.inf))

    def due(self, step: int) -> bool:
        """Whether ``step`` is a checkpoint step."""
        return step % self.every == 0

    def save(self, checkpoint: Checkpoint) -> None:
        """Write ``step-<N>.npz`` (and ``best.npz`` when its score is the best), drop old ones."""
        _write(self.directory / f"step-{checkpoint.step}.npz", checkpoint)
        if float(checkpoint.meta.get("score", -np.inf)) > self.best_score:
            self.best_score = float(checkpoint.meta["score"])
            _write(self.directory / "best.npz", checkpoint)
        for old in self.steps()[: -self.keep]:
            (self.directory / f"step-{old}.npz").unlink(missing_ok=True)

    def steps(self) -> list[int]:
        """Steps of the checkpoints on disk, oldest first."""
        found = (_STEP.search(p.name) for p in self.directory.glob("step-*.npz"))
        return sorted(int(m.group(1)) for m in found if m)

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint, or None."""
        steps = self.steps()
        return read_checkpoint(self.directory / f"step-{steps[-1]}.npz") if steps else None

    def best(self) -> Checkpoint | None:
        """The checkpoint with the best validation score, or None."""
        path = self.directory / "best.npz"
        return read_checkpoint(path) if path.exists() else None
