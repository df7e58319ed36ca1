"""Fault injection: kill the process at a named point of a durable write, to test what survives.

``ROUTERL_FAULT=<point>`` (or ``<point>:<n>``) makes the process SIGKILL itself the first (or the
n-th) time it reaches :func:`fault_point` ``(<point>)``; unset, every point is a no-op. The
points, in the order a checkpoint passes them (:func:`training.checkpoints.write_checkpoint`):

* ``checkpoint-start``: nothing of this checkpoint is written yet (a kill between checkpoints);
* ``checkpoint-written``: the new checkpoint is complete in a temporary file, not yet in place;
* ``checkpoint-renamed``: the new checkpoint has replaced the previous one.

``tests/test_resume.py`` kills a run at each of them, resumes it, and expects the report of the
uninterrupted run.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

FAULT_VARIABLE = "ROUTERL_FAULT"
POINTS = ("checkpoint-start", "checkpoint-written", "checkpoint-renamed")

_reached: Counter[str] = Counter()


def fault_point(point: str) -> None:
    """SIGKILL this process if ``ROUTERL_FAULT`` names ``point`` and this is the occurrence it names."""
    wanted = os.environ.get(FAULT_VARIABLE)
    if not wanted:
        return
    name, _, occurrence = wanted.partition(":")
    if name != point:
        return
    _reached[point] += 1
    if _reached[point] == int(occurrence or 1):
        os.kill(os.getpid(), signal.SIGKILL)
