"""Cost–quality frontiers and AIQ (RouterBench: Hu et al., 2024, arXiv:2403.12031, §3).

A router swept over cost weights gives operating points (mean cost, mean quality). Mixing two
operating points at random (route a share p of queries by one, the rest by the other) reaches
every point on the segment between them, so the achievable frontier is the **non-decreasing
upper convex hull** of the points: paying more never has to lower quality.

AIQ (average improvement in quality) is the mean height of the frontier curve q(c) over a cost
range [c_lo, c_hi], by default the single models' span of mean cost (RouterBench's
[c_min, c_max], the same for every router so that they are comparable):

    AIQ = 1 / (c_hi − c_lo) · ∫_{c_lo}^{c_hi} q(c) dc

where, with the hull's vertices (c_0, q_0) < ... < (c_k, q_k) and the cheapest single model's
point (c_s, q_s) (the frontier's ``start``):

- c_0 <= c <= c_k: the hull, linear between vertices;
- c > c_k: q_k (flat: spending more without changing the routing keeps the quality; RouterBench's
  "extrapolation", and its code extends every hull flat to the largest cost);
- c_s <= c < c_0: q_s + (c − c_s) / (c_0 − c_s) · (q_0 − q_s), the chord to the cheapest single
  model: a cost the router cannot reach on its own is reached by sending a share of the queries
  to the cheapest model and the rest by the router at its cheapest operating point;
- below min(c_s, c_0) (outside the default range): flat at the curve's first point.

Below its cheapest operating point a router is therefore credited with what mixing in the
cheapest model gives, never with a quality it cannot reach at that cost. The paper extends a
hull only towards higher costs; below a router's cheapest point RouterBench's code
(withmartian/routerbench, ``evaluation/AIQ.py``, ``calc_AIQ``, unchanged since its first commit)
integrates each hull with ``np.trapz`` from the hull's own first vertex to the largest cost and
divides by that largest cost, i.e. it counts zero quality there, on a range that starts at
cost 0. The chord is the achievable rule instead (never above what the router can reach, never
zero where the cheapest model answers), and it leaves the zero router, whose first vertex is the
cheapest model, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from envs.rewards import trade_off_span

#: A (mean cost, mean quality) operating point.
Point: TypeAlias = tuple[float, float]


@dataclass(frozen=True)
class Frontier:
    """The hull's vertices, sorted by cost, quality non-decreasing."""

    costs: np.ndarray
    qualities: np.ndarray

    @classmethod
    def from_points(cls, costs: np.ndarray, qualities: np.ndarray) -> Frontier:
        """Non-decreasing upper convex hull of (cost, quality) points (Andrew's monotone chain)."""
        costs, qualities = np.asarray(costs, dtype=float), np.asarray(qualities, dtype=float)
        if len(costs) == 0:
            raise ValueError("a frontier needs at least one point")
        order = np.lexsort((-qualities, costs))
        hull: list[tuple[float, float]] = []
        for c, q in zip(costs[order].tolist(), qualities[order].tolist()):
            if hull and q <= hull[-1][1]:
                continue  # not better than a cheaper point: dominated (non-decreasing hull)
            while len(hull) >= 2:
                (c1, q1), (c2, q2) = hull[-2], hull[-1]
                if (q2 - q1) * (c - c1) <= (q - q1) * (c2 - c1):
                    hull.pop()  # the middle point lies on or below the chord: not on the upper hull
                else:
                    break
            hull.append((c, q))
        vertices = np.array(hull)
        return cls(vertices[:, 0], vertices[:, 1])

    @classmethod
    def of_single_models(cls, single_models: Mapping[str, Mapping[str, float]]) -> Frontier:
        """The zero router: the hull of a report's single models ``{model: {cost, quality}}``."""
        points = list(single_models.values())
        return cls.from_points(np.array([p["cost"] for p in points]), np.array([p["quality"] for p in points]))

    def quality_at(self, cost: float | np.ndarray, start: Point | None = None) -> np.ndarray:
        """Height of the frontier curve at ``cost`` (module docstring): the hull, flat after it,
        and below its first vertex the chord from ``start`` (None: flat there too)."""
        costs, qualities = self._curve(start)
        return np.interp(cost, costs, qualities)

    def aiq(self, cost_range: tuple[float, float], start: Point) -> float:
        """Mean height of the frontier curve over ``cost_range``, starting from ``start`` (the
        cheapest single model's point): the exact integral of the piecewise-linear curve."""
        low, high = cost_range
        costs, qualities = self._curve(start)
        if high <= low:
            return float(np.interp(low, costs, qualities))
        grid = np.union1d(costs[(costs > low) & (costs < high)], [low, high])
        heights = np.interp(grid, costs, qualities)
        area = np.sum((heights[1:] + heights[:-1]) / 2.0 * np.diff(grid))
        return float(area / (high - low))

    def _curve(self, start: Point | None) -> tuple[np.ndarray, np.ndarray]:
        """The curve's vertices: ``start`` then the hull's when ``start`` is cheaper than the hull."""
        if start is None or not start[0] < self.costs[0]:
            return self.costs, self.qualities
        return np.concatenate([[start[0]], self.costs]), np.concatenate([[start[1]], self.qualities])

    def to_json(self) -> list[dict[str, float]]:
        """The vertices as a list of {cost, quality}."""
        return [{"cost": float(c), "quality": float(q)} for c, q in zip(self.costs, self.qualities)]


def cost_weight_grid(mean_quality: np.ndarray, mean_cost: np.ndarray, points: int = 41) -> np.ndarray:
    """Cost weights to sweep: 0, then log-spaced around the single models' break-even weights.

    The span is :func:`envs.rewards.trade_off_span`: a decade beyond the smallest and largest
    break-even weight (q_j − q_i)/(c_j − c_i) of models i, j with c_i < c_j and q_i < q_j.
    """
    low, high = trade_off_span(mean_quality, mean_cost)
    return np.concatenate([[0.0], np.logspace(np.log10(low), np.log10(high), points - 1)])


def cost_to_reach(frontier: Frontier, target_quality: float) -> float | None:
    """Least cost at which the hull reaches ``target_quality`` (None if it never does).

    The hull is non-decreasing and piecewise linear, so the answer interpolates between the
    two vertices around the target (mixing those operating points at random).
    """
    if target_quality > frontier.qualities[-1] + 1e-12:
        return None
    if target_quality <= frontier.qualities[0]:
        return float(frontier.costs[0])
    if target_quality >= frontier.qualities[-1]:  # the last vertex, or above it by rounding only
        return float(frontier.costs[-1])
    upper = int(np.searchsorted(frontier.qualities, target_quality, side="left"))
    q0, q1 = frontier.qualities[upper - 1], frontier.qualities[upper]
    c0, c1 = frontier.costs[upper - 1], frontier.costs[upper]
    return float(c0 + (target_quality - q0) / (q1 - q0) * (c1 - c0))


@dataclass(frozen=True)
class TwoModelGap:
    """RouteLLM's measures for a pool of two models (Ong et al., 2024, arXiv:2406.18665).

    With a weak and a strong model, PGR(s) = (q(s) − q_weak) / (q_strong − q_weak) is the share
    of the quality gap recovered when a share s of the queries goes to the strong model. On the
    non-decreasing upper hull of (s, PGR) points: APGR = ∫₀¹ PGR(s) ds, and CPT(x) = the least
    share of strong-model calls reaching PGR ≥ x.
    """

    apgr: float
    cpt: dict[str, float | None]

    @classmethod
    def from_points(
        cls,
        strong_share: np.ndarray,
        quality: np.ndarray,
        weak_quality: float,
        strong_quality: float,
        thresholds: tuple[float, ...] = (0.2, 0.5, 0.8),
    ) -> TwoModelGap:
        """From operating points (share of strong calls, mean quality) and the two models' quality."""
        gap = strong_quality - weak_quality
        if gap <= 0:
            raise ValueError("the strong model must have higher quality than the weak one")
        shares = np.concatenate([[0.0, 1.0], np.asarray(strong_share, dtype=float)])
        recovered = np.concatenate([[0.0, 1.0], (np.asarray(quality, dtype=float) - weak_quality) / gap])
        hull = Frontier.from_points(shares, recovered)  # (0, 0), the weak model alone, is its first vertex
        apgr = hull.aiq((0.0, 1.0), start=(0.0, 0.0))
        return cls(apgr=apgr, cpt={f"{round(x * 100)}%": cost_to_reach(hull, x) for x in thresholds})
