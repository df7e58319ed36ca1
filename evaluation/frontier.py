"""Cost–quality frontiers and AIQ (RouterBench: Hu et al., 2024, arXiv:2403.12031).

A router swept over cost weights gives operating points (mean cost, mean quality). Mixing two
operating points at random (route a share p of queries by one, the rest by the other) reaches
every point on the segment between them, so the achievable frontier is the **non-decreasing
upper convex hull** of the points: paying more never has to lower quality.

AIQ (average improvement in quality) is the hull's mean height over a cost range [c_lo, c_hi]:

    AIQ = 1 / (c_hi − c_lo) · ∫_{c_lo}^{c_hi} hull(c) dc

By default the range is the one spanned by the single models, so routers are comparable; below
the cheapest point the hull is undefined and taken as that point's quality, above the most
expensive as the best quality (flat), which never flatters a router.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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

    def quality_at(self, cost: float | np.ndarray) -> np.ndarray:
        """Hull height at ``cost`` (flat outside the vertices' cost range)."""
        return np.interp(cost, self.costs, self.qualities)

    def aiq(self, cost_range: tuple[float, float]) -> float:
        """Mean hull height over ``cost_range`` (exact integral of the piecewise-linear hull)."""
        low, high = cost_range
        if high <= low:
            return float(self.quality_at(low))
        grid = np.union1d(self.costs[(self.costs > low) & (self.costs < high)], [low, high])
        heights = self.quality_at(grid)
        area = np.sum((heights[1:] + heights[:-1]) / 2.0 * np.diff(grid))
        return float(area / (high - low))

    def to_json(self) -> list[dict[str, float]]:
        """The vertices as a list of {cost, quality}."""
        return [{"cost": float(c), "quality": float(q)} for c, q in zip(self.costs, self.qualities)]


def cost_weight_grid(mean_quality: np.ndarray, mean_cost: np.ndarray, points: int = 41) -> np.ndarray:
    """Cost weights to sweep: 0, then log-spaced around the single models' break-even weights.

    The break-even weight of models i, j with c_i < c_j and q_i < q_j is (q_j − q_i)/(c_j − c_i):
    above it the cheaper one wins. The grid spans a decade beyond the smallest and largest.
    """
    weights = []
    for i in range(len(mean_cost)):
        for j in range(len(mean_cost)):
            if mean_cost[i] < mean_cost[j] and mean_quality[i] < mean_quality[j]:
                weights.append((mean_quality[j] - mean_quality[i]) / (mean_cost[j] - mean_cost[i]))
    if not weights:
        weights = [1.0 / max(float(np.max(mean_cost)), 1e-12)]
    low, high = np.log10(min(weights) / 10.0), np.log10(max(weights) * 10.0)
    return np.concatenate([[0.0], np.logspace(low, high, points - 1)])


def cost_to_reach(frontier: Frontier, target_quality: float) -> float | None:
    """Least cost at which the hull reaches ``target_quality`` (None if it never does).

    The hull is non-decreasing and piecewise linear, so the answer interpolates between the
    two vertices around the target (mixing those operating points at random).
    """
    if target_quality > frontier.qualities[-1] + 1e-12:
        return None
    if target_quality <= frontier.qualities[0]:
        return float(frontier.costs[0])
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
        hull = Frontier.from_points(shares, recovered)
        return cls(apgr=hull.aiq((0.0, 1.0)), cpt={f"{round(x * 100)}%": cost_to_reach(hull, x) for x in thresholds})
