"""Fault injection: kill the process at a named point of a durable write, to test what survives.

``ROUTERL_FAULT=<point>`` (or ``<point>:<n>``) makes the process SIGKILL itself the first (or the
n-th) time it reaches :func:`fault_point` ``(<point>)``; unset, every point is a no-op. It is a
switch for tests, not a feature: nothing in routerl sets it. It is read once, when this module is
imported (a process's switch is fixed at its start), and a point it does not name costs one
comparison, so that the service's points on its decision log cost nothing measurable. A name that
is not in :data:`POINTS`, or an ``n`` that is not a positive integer, is a :class:`ValueError` at
import: a misspelt switch fails loudly instead of never firing.

It lives here, in :mod:`policies`, because this is the lowest layer that every writer of a
durable file may import (docs/architecture.md, "Layers"): training (checkpoints, the run
directory), the policy export, and the service (decision log), which imports :mod:`policies`
only. It imports nothing of routerl, so the service reaching it stays clean.
:func:`data.outputs.replacing`, the shared atomic writer, holds no point itself: a writer names
its points around and inside its ``with replacing(...)`` block, where the new file is complete
but not yet in place.

The points (docs/contracts.md §3.7 and §5.4 list them too), in the order a run passes them:

* checkpoints (``training.checkpoints.write_checkpoint``): ``checkpoint-start`` (nothing of this
  checkpoint is written yet), ``checkpoint-written`` (complete in a temporary file, not yet in
  place), ``checkpoint-renamed`` (it has replaced the previous one);
* the run directory's files, each ``<file>-written`` (complete in its temporary file, the previous
  version or none still in place) and ``<file>-renamed`` (in place): ``config`` (``config.yaml``,
  :func:`training.config.dump_config`), ``rejected`` (``rejected.jsonl``), ``frontier``
  (``frontier.png``), ``policy`` (``policy.pt``, :func:`policies.export.save_policy`, wherever it
  writes), ``report-html``, ``report-json`` and ``report-md`` (``report.html``, ``report.json``,
  ``report.md``; after ``report-md-renamed`` the run is finished);
* the service's decision log (``serving.decisions.DecisionLog``): ``decision-start`` (the query
  is decided, nothing of its record written, nothing answered), ``decision-written`` (the record
  is written and flushed, the client not yet answered), and ``feedback-start`` and
  ``feedback-written`` likewise for ``POST /feedback``.

``tests/test_resume.py`` kills a run at each checkpoint point and resumes it;
``tests/test_faults.py`` kills ``train.py`` at each point of the run directory and the service at
each point of the decision log, then resumes or restarts: the result is the uninterrupted one,
nothing lost, nothing counted twice.
"""

from __future__ import annotations

import os
import signal

FAULT_VARIABLE = "ROUTERL_FAULT"

CHECKPOINT_POINTS = ("checkpoint-start", "checkpoint-written", "checkpoint-renamed")
RUN_FILES = ("config", "rejected", "frontier", "policy", "report-html", "report-json", "report-md")  # in write order
RUN_DIRECTORY_POINTS = tuple(f"{name}-{stage}" for name in RUN_FILES for stage in ("written", "renamed"))
DECISION_LOG_POINTS = ("decision-start", "decision-written", "feedback-start", "feedback-written")
POINTS = CHECKPOINT_POINTS + RUN_DIRECTORY_POINTS + DECISION_LOG_POINTS


def _armed(setting: str | None) -> tuple[str, int] | None:
    """``(point, n)`` of a ``ROUTERL_FAULT`` value, or None when unset or empty."""
    if not setting:
        return None
    point, separator, occurrence = setting.partition(":")
    if point not in POINTS:
        raise ValueError(f"{FAULT_VARIABLE}={setting}: no fault point {point!r}; the points are {', '.join(POINTS)}")
    if not separator:
        return point, 1
    if not (occurrence.isascii() and occurrence.isdigit()) or int(occurrence) < 1:
        raise ValueError(f"{FAULT_VARIABLE}={setting}: the occurrence after ':' must be a positive integer")
    return point, int(occurrence)


_ARMED = _armed(os.environ.get(FAULT_VARIABLE))
_reached = 0  # times the armed point was reached so far


def fault_point(point: str) -> None:
    """SIGKILL this process if ``ROUTERL_FAULT`` names ``point`` and this is the occurrence it names."""
    if _ARMED is None or point != _ARMED[0]:
        return
    global _reached
    _reached += 1
    if _reached == _ARMED[1]:
        os.kill(os.getpid(), signal.SIGKILL)
