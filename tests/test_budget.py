"""The live budget's controller and the memory the workers share (serving/budget.py, serving/shared_memory.py).

The controller is tested here on its own numbers; tests/test_serve_budget.py holds it through the
real service.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from serving.budget import WEIGHT_RANGE_LOG, Account, BudgetController, Charge
from serving.shared_memory import PROBES, KeyedTable, SharedMemory

REPO_ROOT = Path(__file__).resolve().parents[1]
BUDGET = 0.001
START = 300.0
STEP = 0.05
SIZE = 8 * 1024 * 1024


def _controller(path: Path | None = None, step: float = STEP) -> BudgetController:
    return BudgetController([Account("", BUDGET, START)], SharedMemory(SIZE, path), step)


def test_log_weight_is_the_step_times_the_relative_overspend_so_far() -> None:
    controller = _controller()
    costs = [0.003, 0.0, 0.0015, 0.0002, 0.0011]
    controller.charge([f"q{i}" for i in range(len(costs))], [Charge(0, cost) for cost in costs])
    expected = math.log(START) + STEP * sum((cost - BUDGET) / BUDGET for cost in costs)
    assert math.log(controller.weight(0)) == pytest.approx(expected, rel=1e-12)
    snapshot = controller.snapshot()[0]
    assert snapshot["queries"] == len(costs)
    assert snapshot["spend"] == pytest.approx(sum(costs))


def test_weight_rises_over_budget_and_falls_under_it() -> None:
    controller = _controller()
    controller.charge(["a"], [Charge(0, 2 * BUDGET)])
    assert controller.weight(0) > START
    controller.charge(["b", "c"], [Charge(0, 0.0), Charge(0, 0.0)])
    assert controller.weight(0) < START


def test_weight_stays_within_four_decades_of_its_start() -> None:
    controller = _controller(step=1.0)
    controller.charge([f"q{i}" for i in range(100)], [Charge(0, 100 * BUDGET)] * 100)
    assert controller.weight(0) == pytest.approx(START * math.exp(WEIGHT_RANGE_LOG))
    controller.charge([f"r{i}" for i in range(1000)], [Charge(0, 0.0)] * 1000)
    assert controller.weight(0) == pytest.approx(START * math.exp(-WEIGHT_RANGE_LOG))


def test_actual_cost_replaces_the_prediction_once() -> None:
    corrected, charged = _controller(), _controller()
    corrected.charge(["q"], [Charge(0, 0.0004)])
    assert corrected.correct("q", 0.0025)
    assert not corrected.correct("q", 0.0025)  # already corrected: counted once
    assert not corrected.correct("never-routed", 0.0025)
    charged.charge(["q"], [Charge(0, 0.0025)])  # as if the prediction had been right
    assert corrected.weight(0) == pytest.approx(charged.weight(0), rel=1e-12)
    assert corrected.snapshot()[0]["spend"] == pytest.approx(0.0025)


def test_accounts_are_held_apart() -> None:
    accounts = [Account("", BUDGET, START), Account("search", 0.01, 50.0)]
    controller = BudgetController(accounts, SharedMemory(SIZE))
    controller.charge(["a"], [Charge(controller.index("search"), 0.05)])
    assert controller.weight(0) == pytest.approx(START)
    assert controller.weight(1) > 50.0
    with pytest.raises(KeyError):
        controller.index("nobody")


def test_keys_of_one_entry_live_side_by_side_until_the_window_is_full() -> None:
    table = KeyedTable(SharedMemory(8192), capacity=16)
    keys = [3 + 16 * i for i in range(PROBES)]  # every one starts at entry 3
    for tag, key in enumerate(keys):
        table.put(key, tag, 0.5)
    assert [table.get(key) for key in keys] == [(tag, 0.5) for tag in range(PROBES)]
    assert table.pop(keys[2]) == (2, 0.5)
    table.put(3 + 16 * PROBES, 99, 1.0)  # takes the emptied entry: nobody is forgotten
    assert table.get(keys[3]) == (3, 0.5) and table.get(3 + 16 * PROBES) == (99, 1.0)
    table.put(3 + 16 * (PROBES + 1), 100, 1.0)  # the window is full: its first entry is forgotten
    assert table.get(keys[0]) is None and table.get(3 + 16 * (PROBES + 1)) == (100, 1.0)
    assert table.pop(keys[0]) is None  # a forgotten key is never mistaken for the one that took its entry


_OTHER_WORKER = """
import sys
from pathlib import Path
from serving.budget import Account, BudgetController, Charge
from serving.shared_memory import SharedMemory
controller = BudgetController([Account("", {budget}, {start})], SharedMemory({size}, Path(sys.argv[1])), {step})
assert controller.correct("from-the-first", 0.004), "the first worker's prediction is not visible"
controller.charge(["from-the-second"], [Charge(0, 0.002)])
print(controller.weight(0))
"""


def test_two_processes_hold_one_budget(tmp_path: Path) -> None:
    """A second process (a worker of ``--workers 2``) joins the first's state instead of resetting
    it, corrects a decision the first made, and the first sees its charges."""
    shared = tmp_path / "shared-memory"
    first = _controller(shared)
    first.charge(["from-the-first"], [Charge(0, 0.001)])
    script = _OTHER_WORKER.format(budget=BUDGET, start=START, size=SIZE, step=STEP)
    done = subprocess.run(
        [sys.executable, "-c", script, str(shared)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    overspend = (0.004 - BUDGET) + (0.002 - BUDGET)  # the corrected first query, then the second's
    expected = START * math.exp(STEP * overspend / BUDGET)
    assert float(done.stdout) == pytest.approx(expected, rel=1e-9)
    assert first.weight(0) == pytest.approx(expected, rel=1e-9)
    assert first.snapshot()[0]["queries"] == 2
