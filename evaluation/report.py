"""``report.md``: the held-out report as tables a person can read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data.outputs import write_text_atomically
from data.routing_log import RoutingLog
from evaluation.capacity import capacity_lines


def data_section(log: RoutingLog, path: str | Path) -> dict[str, Any]:
    """The ``data`` section of a report (docs/contracts.md §3): fingerprint and rows by fate."""
    return {
        "path": str(path),
        "fingerprint": log.fingerprint,
        "feedback": log.feedback,
        "queries": log.n_queries,
        "models": list(log.models),
        "rows_read": log.stats.rows_read,
        "rows_accepted": log.stats.rows_accepted,
        "rows_rejected": log.stats.rows_rejected,
        "rejected_by_reason": log.stats.rejected_by_reason,
        "pending": log.stats.pending,
    }


def _ci(metrics: dict[str, Any], key: str, digits: int) -> str:
    value = f"{metrics[key]:.{digits}f}"
    bounds = metrics.get(f"{key}_ci95")
    return f"{value} [{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]" if bounds else value


def _row(name: str, metrics: dict[str, Any]) -> str:
    return (
        f"| {name} | {_ci(metrics, 'mean_quality', 4)} | {_ci(metrics, 'mean_cost', 6)} | "
        f"{_ci(metrics, 'mean_reward', 4)} | {_ci(metrics, 'regret', 4)} |"
    )


def _oracle(oracle: dict[str, float] | None) -> str:
    if oracle is None:
        return "; no per-query oracle from bandit feedback"
    return f"; oracle: quality {oracle['quality']:.4f} at {oracle['cost']:.6f} USD"


def _usd(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.6f}"


#: The exported policy's ``cost_mode`` in the report's words (docs/contracts.md §2.10).
COST_MODES = {
    "usd": "the policy estimates USD costs as the log gave or priced them; new prices need retraining",
    "tokens": "the policy estimates prompt and completion tokens and prices them with the table it carries; "
    "serve.py --prices replaces the table without retraining",
}
#: The exported policy's ``trained_on`` in the report's words.
TRAINED_ON = {
    "train": "trained on the training split",
    "train+validation": "trained on the training and validation splits",
    "all": "refit on all the data",
}


def _tuning_lines(report: dict[str, Any]) -> list[str]:
    """The tuning section: off, skipped (why), or the chosen values beside the configured ones and the best scores."""
    tuning = report.get("tuning")
    if tuning is None:
        return []
    lines = ["", "## Tuning", ""]
    if not tuning["enabled"]:
        return [*lines, "Off (--no-tune): the configured values were used as given."]
    if "skipped" in tuning:
        return [*lines, f"Not run: {tuning['skipped']}."]
    lines += [
        f"{tuning['folds']}-fold cross-validation on {tuning['queries']} training queries, objective "
        f"{tuning['objective']}, {len(tuning['scores'])} candidates.",
        "",
        "| | min_df | components | whiten | ridge | score |",
        "|---|---|---|---|---|---|",
    ]
    best = sorted(tuning["scores"], key=lambda entry: -entry["score"])[:5]
    for name, entry in [("**chosen**", tuning["chosen"]), ("configured", tuning["given"])] + [("", e) for e in best]:
        lines.append(
            f"| {name} | {entry['min_df']} | {entry['components']} | {entry['whiten']} | {entry['ridge']:g} | "
            f"{entry['score']:.4f} |"
        )
    if "ppo" in tuning:
        ppo = tuning["ppo"]
        lines += [
            "",
            f"PPO: {len(ppo['trials'])} candidates tried within {ppo['seconds_budget']:g} s"
            + (f" (not tuned: {ppo['skipped']})" if "skipped" in ppo else "")
            + f"; chosen {ppo['chosen']}.",
        ]
    return lines


#: Per objective of ``report.json`` ``objectives``: its column heading and the format of one value.
OBJECTIVE_COLUMNS = {
    "usd": ("USD", ".6f"),
    "latency": ("latency ms (mean)", ".1f"),
    "energy": ("Wh", ".4g"),
    "carbon": ("gCO2e", ".4g"),
}


def _value(value: float | None, form: str) -> str:
    return "not reached" if value is None else format(value, form)


def _objective_lines(report: dict[str, Any]) -> list[str]:
    """The objectives section (evaluation.objectives): every router on every cost, frontiers, what 95% costs."""
    section = report.get("objectives")
    if section is None:
        return []
    lines = ["", "## Every objective (per query)", ""]
    if "skipped" in section:
        return [*lines, f"Not measured: {section['skipped']}."]
    available = list(section["frontiers"])
    sources = "; ".join(f"{name}: {entry['source']}" for name, entry in section["objectives"].items())
    lines += [
        f"Sources: {sources}. Carbon at {section['grid_intensity_gco2e_per_kwh']:g} gCO2e/kWh; an estimated "
        f"energy is good to a factor of {section['energy_uncertainty_factor']:g} either way.",
        "",
    ]
    headings = ["quality", "USD"] + (["latency ms p50", "latency ms p95"] if "latency" in available else [])
    estimated = "" if section["objectives"]["energy"]["source"] == "logged" else " (estimated)"
    headings += [OBJECTIVE_COLUMNS[name][0] + estimated for name in ("energy", "carbon") if name in available]
    lines += [f"| router | {' | '.join(headings)} |", "|---|" + "---|" * len(headings)]
    agent = f"**{report['policy']['agent']}**"
    rows = [(agent if name == "policy" else name, row) for name, row in section["routers"].items()]
    rows += [(f"{model} alone", row) for model, row in section["single_models"].items()]
    for name, row in rows:
        cells = [f"{row['quality']:.4f}", f"{row['usd']:.6f}"]
        cells += [f"{row[key]:.1f}" for key in ("latency_ms_p50", "latency_ms_p95") if key in row]
        cells += [format(row[key], ".4g") for key in ("energy_wh", "gco2e") if key in row]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += ["", "| objective | AIQ | zero router AIQ | oracle cost | oracle quality |", "|---|---|---|---|---|"]
    for name, frontier in section["frontiers"].items():
        form = OBJECTIVE_COLUMNS[name][1]
        oracle = frontier["oracle"]
        lines.append(
            f"| {OBJECTIVE_COLUMNS[name][0]} | {frontier['aiq']:.4f} | {frontier['zero_router_aiq']:.4f} | "
            f"{format(oracle['cost'], form)} | {oracle['quality']:.4f} |"
        )
    return lines + _reach_lines(section["reach"])


def _reach_lines(reach: dict[str, Any]) -> list[str]:
    """For x% of the reference model's quality, how much money, time and energy: the least mean cost per objective."""
    reference = reach["reference_model"]
    lines: list[str] = []
    for share, target in reach["targets"].items():
        lines += [
            "",
            f"| for {share} of {reference}'s quality ({target['target_quality']:.4f}) | policy | zero router | "
            f"{reference} |",
            "|---|---|---|---|",
        ]
        for name, cost in target["policy"].items():
            heading, form = OBJECTIVE_COLUMNS[name]
            lines.append(
                f"| {heading} | {_value(cost, form)} | {_value(target['zero_router'][name], form)} | "
                f"{format(reach['reference'][name], form)} |"
            )
    return lines


def _data_lines(report: dict[str, Any]) -> list[str]:
    """The data (rows by fate), the split, and what the exported policy was trained on (a training report)."""
    data = report["data"]
    lines = [
        f"Data: `{data['path']}` ({data['feedback']} information), fingerprint `{data['fingerprint'][:16]}`.",
        f"Rows read {data['rows_read']} = accepted {data['rows_accepted']} "
        f"+ rejected {data['rows_rejected']}."
        + (f" {data['pending']} decisions still wait for feedback (pending)." if data.get("pending") else ""),
    ]
    if data["rejected_by_reason"]:
        lines += ["", "| rejected because | rows |", "|---|---|"]
        lines += [f"| {reason} | {count} |" for reason, count in data["rejected_by_reason"].items()]
    if "split" in report:
        counts = report["split"]["queries"]
        lines += [
            "",
            f"Split ({report['split']['kind']}, seed {report['split']['seed']}): {counts['train']} train, "
            f"{counts['validation']} validation, {counts['test']} test queries.",
        ]
    if "exported_policy" in report:
        exported = report["exported_policy"]
        heading = TRAINED_ON.get(exported["trained_on"], exported["trained_on"])
        lines += ["", f"**Exported policy ({heading}):** {exported['note']}."]
        if "cost_mode" in exported:
            lines += ["", f"Cost mode: **{exported['cost_mode']}** ({COST_MODES[exported['cost_mode']]})."]
    return lines


def markdown(report: dict[str, Any]) -> str:
    """Data, split, exported policy, the policy against baselines, the frontier, budget and off-policy sections."""
    policy, frontier = report["policy"], report["frontier"]
    lines = [f"# routerl report: {policy['agent']} at cost weight {policy['cost_weight']:g}", ""]
    lines += _data_lines(report)
    lines += [
        "",
        f"## {report.get('evaluated_on', 'Test split')} (USD per query; 95% bootstrap intervals)",
        "",
        "| router | mean quality | mean cost | mean reward | regret |",
        "|---|---|---|---|---|",
        _row(f"**{policy['agent']}**", report["test"]),
    ]
    lines += [_row(name, metrics) for name, metrics in report.get("baselines", {}).items()]
    if policy.get("rules"):
        applied = f"The policy's row and frontier apply its {policy['rules']} rule override(s), as policy.pt routes."
        lines += ["", applied]
    aiq = f"**{frontier['aiq']:.4f}**"
    if frontier.get("aiq_ci95"):
        aiq += f" [{frontier['aiq_ci95'][0]:.4f}, {frontier['aiq_ci95'][1]:.4f}]"
    low, high = frontier["cost_range"]
    lines += [
        "",
        "## Frontier",
        "",
        f"AIQ over the single models' cost range [{low:.6f}, {high:.6f}] USD: {aiq} "
        f"(zero router: {frontier['zero_router_aiq']:.4f}{_oracle(frontier['oracle'])}).",
        f"Operating point: quality {frontier['operating_point']['quality']:.4f} at "
        f"{frontier['operating_point']['cost']:.6f} USD, {frontier['margin_over_zero_router']:+.4f} above the "
        "single models' hull.",
        f"Hulls allow mixing two operating points at random; {len(frontier['points'])} cost weights swept.",
        "",
        f"| share of {frontier['reference_model']}'s quality | policy cost | share of its cost | zero router cost |",
        "|---|---|---|---|",
    ]
    for key, reach in frontier["cost_to_reach"].items():
        share = reach["policy_cost_share_of_reference"]
        lines.append(
            f"| {key} ({reach['target_quality']:.4f}) | {_usd(reach['policy_cost'])} | "
            f"{'-' if share is None else f'{share:.1%}'} | {_usd(reach['zero_router_cost'])} |"
        )
    if "two_model" in frontier:
        pair = frontier["two_model"]
        cpt = ", ".join(f"CPT({k}) {'-' if v is None else f'{v:.1%}'}" for k, v in pair["cpt"].items())
        lines += ["", f"Two models ({pair['weak']} / {pair['strong']}): APGR {pair['apgr']:.4f}; {cpt}."]
    if "budget" in report:
        budget = report["budget"]
        target = budget["target"]
        lines += [
            "",
            "## Budget",
            "",
            f"Target mean {target['kind']} {target['value']:g}: cost weight {budget['cost_weight']:g} "
            f"(chosen on validation, target {'met' if budget['met_on_validation'] else 'NOT met'}).",
            "",
            "| split | mean cost | mean quality |",
            "|---|---|---|",
            f"| validation | {budget['validation']['mean_cost']:.6f} | {budget['validation']['mean_quality']:.4f} |",
            f"| test | {budget['test']['mean_cost']:.6f} | {budget['test']['mean_quality']:.4f} |",
        ]
    lines += capacity_lines(report)
    lines += _objective_lines(report)
    lines += _tuning_lines(report)
    lines += ["", "## Share of queries per model (policy)", "", "| model | share |", "|---|---|"]
    lines += [f"| {m} | {s:.3f} |" for m, s in report["test"]["share_per_model"].items()]
    return "\n".join(lines) + "\n"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """Write :func:`markdown` to ``path``, atomically (:func:`data.outputs.replacing`)."""
    write_text_atomically(path, markdown(report))
