"""``frontier.png``: single models, oracle, the policy's frontier and its operating point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

from data.outputs import replacing
from evaluation.frontier import Frontier

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def frontier_figure(frontier: dict[str, Any], title: str) -> Figure:
    """The cost–quality plane (log-scale cost in USD per query) of one evaluation."""
    figure, axes = plt.subplots(figsize=(7.5, 5.0), dpi=110)
    singles = frontier["single_models"]
    axes.scatter(
        [v["cost"] for v in singles.values()],
        [v["quality"] for v in singles.values()],
        color="grey",
        zorder=3,
        label="single models",
    )
    for name, v in singles.items():
        axes.annotate(name, (v["cost"], v["quality"]), fontsize=7, xytext=(4, -3), textcoords="offset points")
    zero = Frontier.of_single_models(singles)
    axes.plot(
        zero.costs,
        zero.qualities,
        color="grey",
        linestyle="--",
        label=f"zero router (AIQ {frontier['zero_router_aiq']:.3f})",
    )
    hull = frontier["hull"]
    axes.plot(
        [p["cost"] for p in hull],
        [p["quality"] for p in hull],
        color="tab:blue",
        label=f"policy frontier (AIQ {frontier['aiq']:.3f})",
    )
    axes.scatter(
        [p["cost"] for p in frontier["points"]],
        [p["quality"] for p in frontier["points"]],
        color="tab:blue",
        s=8,
        alpha=0.5,
    )
    point = frontier["operating_point"]
    axes.scatter(
        [point["cost"]],
        [point["quality"]],
        marker="*",
        s=160,
        color="tab:red",
        zorder=4,
        label="operating point",
    )
    oracle = frontier["oracle"]
    if oracle is not None:
        axes.scatter([oracle["cost"]], [oracle["quality"]], marker="D", color="tab:green", zorder=4, label="oracle")
    low, high = frontier["cost_range"]
    axes.axvspan(low, high, color="tab:blue", alpha=0.05, label="AIQ cost range")
    axes.set_xscale("log")
    axes.set_xlabel("mean cost per query (USD, log scale)")
    axes.set_ylabel("mean quality")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure


def save_frontier(frontier: dict[str, Any], title: str, path: Path) -> Figure:
    """Write ``frontier.png`` and return the figure (TensorBoard logs it as an image too).

    The file is replaced atomically (:func:`data.outputs.replacing`): a killed run leaves the old figure or the new.
    """
    figure = frontier_figure(frontier, title)
    with replacing(path) as temporary:
        figure.savefig(temporary)
    return figure
