"""AIQ below a router's cheapest operating point: the frontier mixes in the cheapest single model.

Hand-computed frontiers whose first vertex is dearer than the cheapest model (evaluation/frontier.py's
rule: the chord from the cheapest model's point to the hull's first vertex, flat after the last one).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synthetic_log

from evaluation.evaluate import EvaluationConfig, EvaluationPlan, evaluate
from evaluation.frontier import Frontier


def test_aiq_mixes_the_cheapest_model_below_the_hull() -> None:
    # Cheapest model (1, 0.4); the router's hull (2, 0.6), (4, 0.9); range [1, 5].
    hull = Frontier.from_points(np.array([2.0, 4.0]), np.array([0.6, 0.9]))
    chord, hull_part, flat = (0.4 + 0.6) / 2 * 1, (0.6 + 0.9) / 2 * 2, 0.9 * 1
    assert hull.aiq((1.0, 5.0), start=(1.0, 0.4)) == pytest.approx((chord + hull_part + flat) / 4)  # 0.725
    assert hull.quality_at(1.5, start=(1.0, 0.4)) == pytest.approx(0.5)
    assert hull.quality_at(3.0, start=(1.0, 0.4)) == pytest.approx(0.75)  # the hull itself above its start


def test_a_cheapest_point_worse_than_the_cheapest_model_is_charged_the_mix() -> None:
    hull = Frontier.from_points(np.array([2.0, 3.0]), np.array([0.3, 0.9]))
    # Chord (1, 0.5) -> (2, 0.3), then the hull: (0.4 + 0.6) / 2.
    assert hull.aiq((1.0, 3.0), start=(1.0, 0.5)) == pytest.approx(0.5)


def test_a_router_cheaper_than_the_cheapest_model_keeps_its_hull() -> None:
    hull = Frontier.from_points(np.array([0.5, 3.0]), np.array([0.3, 0.8]))
    start = (1.0, 0.35)  # dearer than the hull's first vertex: not used
    assert hull.aiq((1.0, 3.0), start) == pytest.approx((0.4 + 0.8) / 2)


def test_a_router_that_skips_the_cheapest_model_scores_as_the_zero_router() -> None:
    # Models m0 (cost 1, quality 0.4), m1 (2, 0.6), m2 (4, 0.9) on every query. The router picks m1 at
    # high cost weights and m2 at low ones, never m0: with m0 mixed in below its hull, its frontier is
    # the zero router's, AIQ (0.5 + 1.5) / 3 (the old rule credited 0.6 down to cost 1: 0.7).
    n = 20
    log = synthetic_log(np.tile([0.4, 0.6, 0.9], (n, 1)), np.tile([1.0, 2.0, 4.0], (n, 1)))

    def decide(weight: float) -> np.ndarray:
        return np.full(n, 1 if weight > 0.15 else 2, dtype=np.int64)

    config = EvaluationConfig(frontier_points=9, bootstrap=20)
    frontier = evaluate(log, decide, EvaluationPlan(config, 0, cost_weight=None)).sections["frontier"]
    assert [frontier["hull"][0]["cost"], frontier["hull"][0]["quality"]] == pytest.approx([2.0, 0.6])
    assert frontier["cost_range"] == pytest.approx([1.0, 4.0])
    assert frontier["aiq"] == pytest.approx(2.0 / 3)
    assert frontier["zero_router_aiq"] == pytest.approx(2.0 / 3)
    assert frontier["aiq_ci95"] == pytest.approx([2.0 / 3, 2.0 / 3])  # every resample mixes m0 in as well
