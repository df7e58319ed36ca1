"""``report.html`` and ``compare.html``: a report as one self-contained, interactive page.

Beside ``report.md`` (a training run, ``python -m evaluation``) and ``compare.md``
(``python -m training.compare``), the same report as a page that opens from disk with no
network: plotly.js (shipped in the ``plotly`` package), the page's own script and style are
inlined, the data is the report's own numbers as JSON, and a Content-Security-Policy forbids
every fetch. It shows the cost-quality plane (single models, the zero router's hull, the
oracle, each router's swept operating points and hull, the operating point), the headline
numbers as tables, and a slider over the swept cost weights (the report's ``cost_weights``):
at the selected weight, each router's mean quality, mean cost and share of queries per model
(its ``frontier.points`` entry, docs/contracts.md §3.5) and the commands that serve or train a
policy at that weight. The template, script and style are in ``evaluation/pages/``; every shown
number carries its raw value in a ``data-value`` attribute, so that tests read it back.
"""

from __future__ import annotations

import importlib.resources
import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup

from evaluation.frontier import Frontier

#: The route and body of a request at the selected weight (docs/contracts.md §4.3 ``POST /route``).
ROUTE_REQUEST = (
    "curl -s http://127.0.0.1:8000/route -H 'Content-Type: application/json' "
    '-d \'{"query": "your question", "cost_weight": {weight}}\''
)


@dataclass(frozen=True)
class Command:
    """A command shown for the selected weight: the page writes the weight for ``{weight}`` and, opened
    from disk, the page's own folder for ``{folder}``."""

    label: str
    template: str


@dataclass(frozen=True)
class Cell:
    """A number in a table: its text, and what it is (``data-metric``) with its raw value (``data-value``)."""

    text: str
    metric: str = ""
    value: float | None = None


@dataclass(frozen=True)
class Table:
    """A table of the page: rows named in their first column (``data-router``: a router, or a headline's label)."""

    caption: str
    header: tuple[str, ...]
    rows: list[tuple[str, list[Cell]]]


def quality_text(value: float) -> str:
    """A mean quality as shown: four decimals (report.js formats the slider's the same way)."""
    return f"{value:.4f}"


def usd_text(value: float | None) -> str:
    """A cost in USD per query as shown: four significant digits, no exponent (as report.js)."""
    if value is None:
        return "not reached"
    return np.format_float_positional(value, precision=4, unique=False, fractional=False, trim="-")


def _cell(metric: str, value: float | None, text: Callable[[float], str] = quality_text) -> Cell:
    """A number's cell: its text (``text``; None is a cost not reached) and its raw value."""
    return Cell(usd_text(None) if value is None else text(value), metric, value)


def _interval_cell(metric: str, value: float, bounds: Sequence[float] | None) -> Cell:
    """``0.7123 [0.7011, 0.7230]``: a mean quality (or AIQ) with its 95% interval when there is one."""
    text = quality_text(value)
    return Cell(f"{text} [{quality_text(bounds[0])}, {quality_text(bounds[1])}]" if bounds else text, metric, value)


def _metrics_row(name: str, metrics: dict[str, Any]) -> tuple[str, list[Cell]]:
    """A router's metrics at the operating weight: quality, cost, reward and regret."""
    return name, [
        _interval_cell("mean_quality", metrics["mean_quality"], metrics.get("mean_quality_ci95")),
        _cell("mean_cost", metrics["mean_cost"], usd_text),
        _interval_cell("mean_reward", metrics["mean_reward"], metrics.get("mean_reward_ci95")),
        _cell("regret", metrics["regret"]),
    ]


#: The objectives section's per-query columns (docs/contracts.md §3.5 ``objectives``): key, header, format.
OBJECTIVE_COLUMNS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("usd", "USD", usd_text),
    ("latency_ms_p50", "latency p50 (ms)", lambda value: f"{value:.0f}"),
    ("latency_ms_p95", "latency p95 (ms)", lambda value: f"{value:.0f}"),
    ("energy_wh", "Wh", lambda value: f"{value:.4g}"),
    ("gco2e", "gCO2e", lambda value: f"{value:.4g}"),
)
#: The objective each reach column is the least cost of, in the same order as OBJECTIVE_COLUMNS' means.
REACH_OBJECTIVES = {"usd": "USD", "latency": "mean latency (ms)", "energy": "Wh", "carbon": "gCO2e"}


def _objective_tables(section: dict[str, Any], subject: str, weight: float, agent: str) -> list[Table]:
    """The ``objectives`` section as two tables: every router on every cost, and the least cost to reach the
    reference's quality on each (none when the section was skipped); the policy's rows are named ``agent``."""
    if "routers" not in section:
        return []
    columns = [column for column in OBJECTIVE_COLUMNS if column[0] in section["routers"]["policy"]]
    energy = section["objectives"]["energy"]["source"]
    estimated = "estimated" in energy and not energy.startswith("unavailable")
    factor = section["energy_uncertainty_factor"]
    note = f"; energy and carbon estimated, good to a factor of {factor:g}" if estimated else ""
    names = {"policy": agent, "zero_router": "zero router"}
    rows = []
    for name, row in {**section["routers"], **section["single_models"]}.items():
        values = [_cell(key, row[key], text) for key, _, text in columns]
        rows.append((names.get(name, name), [_cell("quality", row["quality"]), *values]))
    every = Table(f"{subject} at cost weight {weight:g}, every cost per query{note}",
                  ("router", "mean quality", *(header for _, header, _ in columns)), rows)
    reach = section["reach"]
    available = [name for name in REACH_OBJECTIVES if name in reach["reference"]]
    reach_rows = []
    for share, target in reach["targets"].items():
        for router in ("policy", "zero_router"):
            cells = [_cell(f"reach_{name}", target[router][name], usd_text) for name in available]
            reach_rows.append((f"{share}: {names[router]}", cells))
    reach_rows.append((f"{reach['reference_model']} alone",
                       [_cell(f"reach_{name}", reach["reference"][name], usd_text) for name in available]))
    least = Table(f"Least mean cost to reach a share of {reach['reference_model']}'s quality",
                  ("target", *(REACH_OBJECTIVES[name] for name in available)), reach_rows)
    return [every, least]


def _headline(facts: list[tuple[str, Cell]]) -> Table:
    """The page's few headline numbers, one per row."""
    return Table("Headline", ("", "value"), [(label, [cell]) for label, cell in facts])


def _oracle_facts(oracle: dict[str, float] | None) -> list[tuple[str, Cell]]:
    """The per-query oracle's quality and cost (none from bandit feedback)."""
    if oracle is None:
        return [("Oracle", Cell("none from bandit feedback"))]
    return [
        ("Oracle quality (best model per query)", _cell("oracle_quality", oracle["quality"])),
        ("Oracle cost (USD per query)", _cell("oracle_cost", oracle["cost"], usd_text)),
    ]


def run_commands() -> list[Command]:
    """A training run's page (in its run directory): serve its policy, route at the weight, train at it."""
    return [
        Command("Serve this run's policy", "python serve.py --policy {folder}/policy.pt"),
        Command("Route a query at this cost weight", ROUTE_REQUEST),
        Command("Train again with this cost weight as the policy's default", _train_again("{folder}")),
    ]


def _train_again(folder: str) -> str:
    """``train.py`` with the configuration of the run in ``folder``, at the selected weight, into a new folder."""
    return (
        f"python train.py --config {folder}/config.yaml --out {folder}-w{{weight}} --set reward.cost_weight={{weight}}"
    )


def evaluation_commands(policy: str, data: str) -> list[Command]:
    """``python -m evaluation``'s page: serve the policy, route at the weight, evaluate it there, train at it."""
    folder = shlex.quote(str(Path(policy).parent))
    policy, data = shlex.quote(policy), shlex.quote(data)
    return [
        Command("Serve this policy", f"python serve.py --policy {policy}"),
        Command("Route a query at this cost weight", ROUTE_REQUEST),
        Command(
            "Evaluate at this cost weight", f"python -m evaluation {policy} --data {data} --cost-weight {{weight}}"
        ),
        Command(
            "Train again with this cost weight as the policy's default (its run's configuration)", _train_again(folder)
        ),
    ]


def comparison_commands(comparison: dict[str, Any], config: str, overrides: Sequence[str]) -> list[Command]:
    """The comparison's page: train each compared router on the whole log at the selected weight."""
    base = ["python", "train.py", "--config", config, "--data", comparison["data"]["path"]]
    base += [argument for override in overrides for argument in ("--set", override)]
    commands = []
    for name, agent in comparison["agents"].items():
        embedding = agent["input"] != "text"
        router = ["--set", f"agent.kind={agent['kind']}", *(["--set", "input=embedding"] if embedding else [])]
        out = f"runs/{agent['kind']}{'-embedding' if embedding else ''}-w{{weight}}"
        command = f"{shlex.join(base + router)} --out {out} --set reward.cost_weight={{weight}}"
        commands.append(Command(f"Train {name} at this cost weight", command))
    return commands


def report_page(report: dict[str, Any], commands: list[Command]) -> str:
    """The page of a ``report.json`` (docs/contracts.md §3.5): one router, its operating point and baselines."""
    frontier, policy, weight = report["frontier"], report["policy"], report["policy"]["cost_weight"]
    router = {"name": policy["agent"], "points": frontier["points"], "hull": frontier["hull"], "aiq": frontier["aiq"]}
    nearest = int(np.argmin(np.abs(np.asarray(frontier["cost_weights"], dtype=float) - weight)))
    view = _plane(frontier, [router], {**frontier["operating_point"], "cost_weight": weight}, nearest, commands)
    facts = [
        ("AIQ (95% interval)", _interval_cell("aiq", frontier["aiq"], frontier.get("aiq_ci95"))),
        ("Zero router AIQ", _cell("zero_router_aiq", frontier["zero_router_aiq"])),
        ("Operating cost weight", _cell("cost_weight", weight, lambda value: f"{value:g}")),
        (
            "Quality above the single models' hull at its cost",
            _cell("margin_over_zero_router", frontier["margin_over_zero_router"], lambda value: f"{value:+.4f}"),
        ),
        *_oracle_facts(frontier["oracle"]),
    ]
    subject = report.get("evaluated_on", "Test split")
    routers = [_metrics_row(policy["agent"], report["test"])]
    routers += [_metrics_row(name, metrics) for name, metrics in report.get("baselines", {}).items()]
    tables = [
        _headline(facts),
        Table(
            f"{subject} at cost weight {weight:g} (95% bootstrap intervals)",
            ("router", "mean quality", "mean cost (USD per query)", "mean reward", "regret"),
            routers,
        ),
    ]
    tables += _objective_tables(report.get("objectives", {}), subject, weight, policy["agent"])
    heading = f"routerl report: {policy['agent']} at cost weight {weight:g}"
    return _render(heading, f"{subject}: {_data_line(report['data'])}", view, tables)


def comparison_page(comparison: dict[str, Any], commands: list[Command]) -> str:
    """The page of a ``compare.json`` (docs/contracts.md §3.10): every compared router's frontier."""
    agents, zero, reference = comparison["agents"], comparison["zero_router"], comparison["reference"]
    routers = [
        {"name": name, "points": agent["points"], "hull": agent["hull"], "aiq": agent["aiq"]}
        for name, agent in agents.items()
    ]
    plane = {key: comparison[key] for key in ("single_models", "oracle", "cost_range", "cost_weights")}
    view = _plane(plane | {"zero_router_aiq": zero["aiq"]}, routers, None, len(plane["cost_weights"]) // 2, commands)
    facts = [
        ("Zero router AIQ", _cell("zero_router_aiq", zero["aiq"])),
        (
            f"Reference model ({comparison['reference_model']}) quality",
            _cell("reference_quality", reference["quality"]),
        ),
        ("Reference model cost (USD per query)", _cell("reference_cost", reference["cost"], usd_text)),
        *_oracle_facts(comparison["oracle"]),
    ]
    reach = [key for key in zero if key.startswith("cost_to_")]  # cost_to_95%, ...: evaluation.quality_targets
    rows = [
        (name, [_interval_cell("aiq", agent["aiq"], agent["aiq_ci95"]),
                *(_cell(key, agent[key], usd_text) for key in reach),
                _cell("seconds", agent["seconds"], lambda value: f"{value:.1f}")])
        for name, agent in agents.items()
    ]  # fmt: skip
    reach_header = (f"cost to {key.removeprefix('cost_to_')} of the reference" for key in reach)
    differences = comparison["aiq_difference_vs_first"] | comparison["aiq_difference_vs_best_peer"]
    signed = "{:+.4f}".format
    tables = [
        _headline(facts),
        Table(
            "Cross-validated routers (AIQ with 95% bootstrap intervals; costs in USD per query)",
            ("router", "AIQ", *reach_header, "seconds"),
            rows,
        ),
        Table(
            "AIQ differences (paired bootstrap 95% interval)",
            ("routers", "difference", "95% interval"),
            [
                (name, [_cell("difference", diff["value"], signed),
                        Cell(f"[{signed(diff['ci95'][0])}, {signed(diff['ci95'][1])}]")])
                for name, diff in differences.items()
            ],
        ),
    ]  # fmt: skip
    scheme = f"{comparison['folds']} folds by {comparison['folds_by']}"
    return _render(
        "routerl cross-validated comparison",
        f"Pooled out-of-fold choices ({scheme}): {_data_line(comparison['data'])}",
        view,
        tables,
    )


def _data_line(data: dict[str, Any]) -> str:
    """``path``, queries, models and the fingerprint's start."""
    models, fingerprint = len(data["models"]), data["fingerprint"][:16]
    return f"{data['path']}, {data['queries']} queries, {models} models, fingerprint {fingerprint}"


def _plane(
    frontier: dict[str, Any],
    routers: list[dict[str, Any]],
    operating: dict[str, float] | None,
    selected: int,
    commands: list[Command],
) -> dict[str, Any]:
    """What report.js draws: the cost-quality plane, the routers' swept points, the slider's start, the commands."""
    singles = frontier["single_models"]
    zero = Frontier.of_single_models(singles)
    return {
        "models": list(singles),
        "single_models": singles,
        "zero_router": {"aiq": frontier["zero_router_aiq"], "hull": zero.to_json()},
        "oracle": frontier["oracle"],
        "cost_range": frontier["cost_range"],
        "cost_weights": frontier["cost_weights"],
        "routers": routers,
        "operating_point": operating,
        "selected": selected,
        "commands": [asdict(command) for command in commands],
    }


@cache
def _environment() -> jinja2.Environment:
    """Jinja2 over ``evaluation/pages/``, escaping every value (the inlined code and data are marked safe)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("evaluation", "pages"), autoescape=True, keep_trailing_newline=True
    )


@cache
def _asset(package: str, *path: str) -> Markup:
    """A file shipped in ``package`` (plotly.js, the page's script and style), to inline as it is."""
    text = importlib.resources.files(package).joinpath(*path).read_text(encoding="utf-8")
    if "</script" in text.lower() or "</style" in text.lower():  # would end the inline element early
        raise ValueError(f"{package}/{'/'.join(path)} cannot be inlined: it holds a closing </script> or </style>")
    return Markup(text)


def _render(title: str, subtitle: str, view: dict[str, Any], tables: list[Table]) -> str:
    """The page: the template with plotly.js, report.js, report.css and the view's JSON inlined."""
    # JSON inside <script>: "<", ">" and "&" as escapes, so that no string in it can close the element
    data = json.dumps(view, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=title,
            subtitle=subtitle,
            tables=tables,
            routers=[router["name"] for router in view["routers"]],
            models=view["models"],
            commands=view["commands"],
            weights=len(view["cost_weights"]),
            selected=view["selected"],
            data=Markup(data),
            plotly=_asset("plotly", "package_data", "plotly.min.js"),
            script=_asset("evaluation", "pages", "report.js"),
            style=_asset("evaluation", "pages", "report.css"),
        )
    )
