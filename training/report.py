"""``report.md``: the held-out report as tables a person can read."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _row(name: str, metrics: dict[str, Any]) -> str:
    return (f"| {name} | {metrics['mean_quality']:.4f} | {metrics['mean_cost']:.6f} | "
            f"{metrics['mean_reward']:.4f} | {metrics['regret']:.4f} |")


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """Summary of data, split, policy against baselines, and the frontier."""
    data, policy, frontier = report["data"], report["policy"], report["frontier"]
    lines = [
        f"# routerl report: {policy['agent']} at cost weight {policy['cost_weight']:g}",
        "",
        f"Data: `{data['path']}` ({data['feedback']} information), fingerprint `{data['fingerprint'][:16]}`.",
        f"Rows read {data['rows_read']} = accepted {data['rows_accepted']} "
        f"+ rejected {data['rows_rejected']}.",
    ]
    if data["rejected_by_reason"]:
        lines += ["", "| rejected because | rows |", "|---|---|"]
        lines += [f"| {reason} | {count} |" for reason, count in data["rejected_by_reason"].items()]
    counts = report["split"]["queries"]
    lines += [
        "",
        f"Split ({report['split']['kind']}, seed {report['split']['seed']}): "
        f"{counts['train']} train, {counts['validation']} validation, {counts['test']} test queries.",
        "",
        "## Test split (USD per query)",
        "",
        "| router | mean quality | mean cost | mean reward | regret |",
        "|---|---|---|---|---|",
        _row(f"**{policy['agent']}**", report["test"]),
    ]
    lines += [_row(name, metrics) for name, metrics in report["baselines"].items()]
    lines += [
        "",
        "## Frontier",
        "",
        f"AIQ over the single models' cost range [{frontier['cost_range'][0]:.6f}, "
        f"{frontier['cost_range'][1]:.6f}] USD: **{frontier['aiq']:.4f}** "
        f"(zero router: {frontier['zero_router_aiq']:.4f}).",
        f"Operating point: quality {frontier['operating_point']['quality']:.4f} at "
        f"{frontier['operating_point']['cost']:.6f} USD, "
        f"{frontier['margin_over_zero_router']:+.4f} above the single models' hull.",
        f"Hulls allow mixing two operating points at random; {len(frontier['points'])} cost weights swept.",
        "",
        "## Share of queries per model (policy)",
        "",
        "| model | share |",
        "|---|---|",
    ]
    lines += [f"| {m} | {s:.3f} |" for m, s in report["test"]["share_per_model"].items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
