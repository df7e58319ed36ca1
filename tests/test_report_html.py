"""``report.html`` and ``compare.html`` in a real headless browser (the ``chromium`` fixture).

Each page is opened from disk with networking off and every request recorded: the only one is
the page's own ``file:`` URL. The slider is moved (by keyboard, or set as a script would) and the
numbers it shows (mean quality, cost, reward and the share per model of each router, each cell
with its raw value in ``data-value``) are checked against the JSON report's swept point at that
weight, with the commands for it. The three writers are covered: a training run (``demo_run``),
``python -m evaluation`` and ``python -m training.compare`` (in-process, small). At a phone's
width (390 px) in the dark theme nothing overflows sideways and the theme reaches the charts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, synthetic_log

import evaluation.__main__ as evaluation_cli
import training.compare as compare_cli
from data.outputs import MARKER, read_marker
from evaluation.sweep import WeightSweep
from training.run import RunResult

LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
DEMO = ROOT / "data" / "demo" / "demo.jsonl"


def small_demo_log(folder: Path) -> Path:
    """The demo log's first 200 queries (1,000 rows): seconds to evaluate or cross-validate."""
    path = folder / "log.jsonl"
    path.write_text("".join(DEMO.read_text(encoding="utf-8").splitlines(keepends=True)[:1000]), encoding="utf-8")
    return path


@dataclass
class Opened:
    """A page opened from disk: the page, every URL it requested, and its script errors."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextmanager
def opened(chromium: Any, path: Path, viewport: dict[str, int] = LAPTOP, scheme: str = "light") -> Iterator[Opened]:
    """``path`` in a fresh offline context; any request but a ``file:`` one is aborted (and recorded)."""
    context = chromium.new_context(offline=True, viewport=viewport, color_scheme=scheme)
    result = Opened(None)

    def handle(route: Any) -> None:
        result.requests.append(route.request.url)
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            route.abort()

    def console(message: Any) -> None:
        if message.type == "error":
            result.errors.append(message.text)

    context.route("**/*", handle)
    page = context.new_page()
    page.on("pageerror", lambda error: result.errors.append(str(error)))
    page.on("console", console)
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-rendered]")
    result.page = page
    try:
        yield result
    finally:
        context.close()


def select(page: Any, index: int) -> None:
    """Move the slider to the ``index``-th swept weight as a script would: set it, fire ``input``."""
    script = "(slider, i) => { slider.value = i; slider.dispatchEvent(new Event('input')); }"
    page.eval_on_selector("#cost-weight", script, index)
    assert page.evaluate("document.body.dataset.rendered") == str(index)


def assert_shows_points(page: Any, points: dict[str, list[dict[str, Any]]], index: int) -> None:
    """The slider's readouts are each router's ``points[index]``: raw values exactly, texts to their precision."""
    weight = points[next(iter(points))][index]["cost_weight"]
    assert float(page.get_attribute("#selected-weight", "data-value")) == weight
    assert float(page.inner_text("#selected-weight")) == pytest.approx(weight, rel=1e-5)
    cells = page.eval_on_selector_all(
        "[data-readout]",
        "cells => cells.map(c => [c.dataset.router, c.dataset.readout, c.dataset.model || null, c.dataset.value, "
        "c.textContent])",
    )
    models = points[next(iter(points))][index]["share_per_model"]
    assert len(cells) == len(points) * (3 + len(models))
    for router, kind, model, value, text in cells:
        point = points[router][index]
        expected = point["share_per_model"][model] if kind == "share" else point[kind]
        assert float(value) == expected, (router, kind, model)
        if kind == "cost":  # four significant digits
            assert float(text) == pytest.approx(expected, rel=5e-4), (router, text)
        elif kind == "share":  # a percentage to one decimal
            assert float(text) == pytest.approx(100 * expected, abs=0.05 + 1e-9), (router, model, text)
        else:  # four decimals
            assert float(text) == pytest.approx(expected, abs=5e-5 + 1e-12), (router, kind, text)
    chart = page.evaluate("document.getElementById('frontier-chart').data.at(-1)")  # the selected weight's marker
    assert chart["x"] == [points[router][index]["cost"] for router in points]
    assert chart["y"] == [points[router][index]["quality"] for router in points]


def commands(page: Any) -> list[str]:
    """The commands shown for the selected weight."""
    return page.eval_on_selector_all("pre[data-command] code", "blocks => blocks.map(b => b.textContent)")


def assert_axes_labelled(page: Any) -> None:
    """Both charts drawn, each axis with its title and unit."""
    for chart, x, y in (
        ("frontier-chart", "mean cost per query (USD, log scale)", "mean quality (0 to 1)"),
        ("shares-chart", "model", "share of queries (%)"),
    ):
        assert page.text_content(f"#{chart} .xtitle") == x
        assert page.text_content(f"#{chart} .ytitle") == y


class _Fetches(HTMLParser):
    """The URLs of a page's elements that a browser would fetch (``src``, ``href``, ...), and its CSP."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts_with_src = 0
        self.policy = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.urls += [value or "" for name, value in attrs if name in ("src", "href", "srcset", "action", "poster")]
        self.scripts_with_src += tag == "script" and "src" in values
        if tag == "meta" and values.get("http-equiv") == "Content-Security-Policy":
            self.policy = values.get("content") or ""


def test_each_swept_point_has_its_reward_and_the_share_of_queries_per_model() -> None:
    log = synthetic_log(np.array([[0.2, 0.9], [0.5, 0.6], [0.1, 1.0]]), np.array([[1.0, 3.0], [1.0, 2.0], [1.0, 4.0]]))
    sweep = WeightSweep.from_actions(log, np.array([0.0, 0.5]), np.array([[1, 1, 1], [0, 1, 1]]))
    first, second = sweep.points(log.models)
    assert first["share_per_model"] == {"m0": 0.0, "m1": 1.0}
    assert second["share_per_model"] == pytest.approx({"m0": 1 / 3, "m1": 2 / 3})
    assert second["quality"] == pytest.approx((0.2 + 0.6 + 1.0) / 3) and second["cost"] == pytest.approx(7 / 3)
    assert second["reward"] == pytest.approx(second["quality"] - 0.5 * second["cost"])


def test_report_html_holds_no_address_the_browser_would_fetch_and_forbids_fetching(demo_run: RunResult) -> None:
    html = (demo_run.directory / "report.html").read_text(encoding="utf-8")
    fetches = _Fetches()
    fetches.feed(html)
    assert fetches.scripts_with_src == 0
    assert all(not re.match(r"\s*([a-z]+:)?//", url, re.IGNORECASE) for url in fetches.urls), fetches.urls
    assert "default-src 'none'" in fetches.policy and "connect-src" not in fetches.policy
    assert not re.search(r"""url\(\s*['"]?(https?:)?//""", html[: html.index("<script")])  # the inline style
    assert "report.html" in read_marker(demo_run.directory).entries  # type: ignore[union-attr]


def test_training_report_html_offline_slider_shows_report_json_at_each_weight(
    chromium: Any, demo_run: RunResult, tmp_path: Path
) -> None:
    """The slider starts at the swept weight nearest the operating one; three key presses move it three weights."""
    report = json.loads((demo_run.directory / "report.json").read_text(encoding="utf-8"))
    frontier, agent = report["frontier"], report["policy"]["agent"]
    weights = np.array(frontier["cost_weights"])
    start = int(np.argmin(np.abs(weights - report["policy"]["cost_weight"])))
    with opened(chromium, demo_run.directory / "report.html") as shown:
        page = shown.page
        assert_shows_points(page, {agent: frontier["points"]}, start)
        step = 1 if start + 3 < len(weights) else -1
        page.focus("#cost-weight")
        for _ in range(3):
            page.keyboard.press("ArrowRight" if step > 0 else "ArrowLeft")
        assert_shows_points(page, {agent: frontier["points"]}, start + 3 * step)
        weight = page.inner_text("#selected-weight")
        serve, route, train = commands(page)
        assert serve == f"python serve.py --policy {demo_run.directory}/policy.pt"
        assert f'"cost_weight": {weight}}}' in route and "/route" in route
        assert f"--config {demo_run.directory}/config.yaml" in train and f"--set reward.cost_weight={weight}" in train
        assert float(page.get_attribute("[data-metric=aiq]", "data-value")) == frontier["aiq"]
        row = f"tr[data-router='{agent}'] [data-metric=mean_quality]"
        assert float(page.get_attribute(row, "data-value")) == report["test"]["mean_quality"]
        assert page.locator("tr[data-router=oracle] [data-metric=mean_quality]").count() == 1
        assert_axes_labelled(page)
        page.screenshot(path=str(tmp_path / "report-laptop.png"), full_page=True)
    assert shown.requests == [(demo_run.directory / "report.html").as_uri()]
    assert shown.errors == []


def test_report_html_fits_a_phone_and_follows_the_system_theme(
    chromium: Any, demo_run: RunResult, tmp_path: Path
) -> None:
    """390 px wide: no sideways scrolling; the dark theme colours the page and the charts, and a switch to the
    light theme redraws them in it."""
    colours = (
        "[getComputedStyle(document.body).backgroundColor, "
        "getComputedStyle(document.documentElement).getPropertyValue('--panel').trim(), "
        "document.getElementById('frontier-chart').layout.paper_bgcolor]"
    )
    with opened(chromium, demo_run.directory / "report.html", PHONE, "dark") as shown:
        page = shown.page
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
        assert_axes_labelled(page)
        page.screenshot(path=str(tmp_path / "report-phone-dark.png"), full_page=True)
        dark = page.evaluate(colours)
        assert dark[2] == dark[1]  # the chart drawn in the page's theme
        page.emulate_media(color_scheme="light")
        page.wait_for_function(
            "(dark) => document.getElementById('frontier-chart').layout.paper_bgcolor !== dark", arg=dark[2]
        )
        light = page.evaluate(colours)
        assert light[0] != dark[0] and light[2] == light[1] != dark[2]
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    assert shown.errors == []


def test_evaluation_cli_report_html_shows_its_report_json(chromium: Any, demo_policy: Path, tmp_path: Path) -> None:
    out, data = tmp_path / "eval", small_demo_log(tmp_path)
    argv = [str(demo_policy), "--data", str(data), "--out", str(out), "--bootstrap", "20"]
    assert evaluation_cli.main(argv) == 0
    assert "report.html" in read_marker(out).entries  # type: ignore[union-attr]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    points = {report["policy"]["agent"]: report["frontier"]["points"]}
    last = len(report["frontier"]["cost_weights"]) - 1
    with opened(chromium, out / "report.html") as shown:
        for index in (0, last):
            select(shown.page, index)
            assert_shows_points(shown.page, points, index)
        weight = shown.page.inner_text("#selected-weight")
        assert f"python -m evaluation {demo_policy} --data {data} --cost-weight {weight}" in commands(shown.page)
    assert shown.requests == [(out / "report.html").as_uri()] and shown.errors == []


def test_compare_html_shows_every_routers_points_from_compare_json(chromium: Any, tmp_path: Path) -> None:
    out = tmp_path / "compare"
    quick = ["--folds", "2", "--agents", "linucb,logistic", "--set", "tuning.enabled=false"]
    quick += ["--set", "featurizer.components=4", "--set", "evaluation.bootstrap=20"]
    config, data = str(ROOT / "configs" / "default.yaml"), str(small_demo_log(tmp_path))
    assert compare_cli.main(["--config", config, "--data", data, "--out", str(out), *quick]) == 0
    assert {MARKER, "compare.json", "compare.md", "compare.html"} == {path.name for path in out.iterdir()}
    comparison = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    points = {name: agent["points"] for name, agent in comparison["agents"].items()}
    assert list(points) == ["linucb", "logistic"]
    with opened(chromium, out / "compare.html") as shown:
        page = shown.page
        assert_shows_points(page, points, len(comparison["cost_weights"]) // 2)
        select(page, 0)
        assert_shows_points(page, points, 0)
        for name, agent in comparison["agents"].items():
            assert (
                float(page.get_attribute(f"tr[data-router='{name}'] [data-metric=aiq]", "data-value")) == agent["aiq"]
            )
            assert any(f"--set agent.kind={agent['kind']}" in command for command in commands(page))
        assert_axes_labelled(page)
    assert shown.requests == [(out / "compare.html").as_uri()] and shown.errors == []


class _Cells(HTMLParser):
    """Every table cell's (row name, data-metric) → data-value, and the captions."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[tuple[str, str], float] = {}
        self.captions: list[str] = []
        self._row, self._in_caption = "", False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr":
            self._row = found.get("data-router") or ""
        if tag == "td" and found.get("data-metric") and found.get("data-value") is not None:
            self.values[(self._row, str(found["data-metric"]))] = float(str(found["data-value"]))
        self._in_caption = tag == "caption"

    def handle_data(self, data: str) -> None:
        if self._in_caption:
            self.captions.append(data)
            self._in_caption = False


def test_report_html_shows_every_objective_of_report_json(demo_run: RunResult) -> None:
    """The demo log's energy is estimated (token counts, configs/energy.yaml): the page's objective tables say
    so and hold report.json's numbers, per router and for the least cost to reach the reference's quality."""
    section, agent = demo_run.report["objectives"], demo_run.report["policy"]["agent"]
    cells = _Cells()
    cells.feed((demo_run.directory / "report.html").read_text(encoding="utf-8"))
    assert any("every cost per query; energy and carbon estimated" in caption for caption in cells.captions)
    for router, row in {**section["routers"], **section["single_models"]}.items():
        shown = agent if router == "policy" else router
        for key in ("quality", "usd", "energy_wh", "gco2e"):
            assert cells.values[(shown, key)] == pytest.approx(row[key], rel=1e-12), (router, key)
    reached = section["reach"]["targets"]["95%"]["policy"]["energy"]
    assert reached is not None and cells.values[(f"95%: {agent}", "reach_energy")] == pytest.approx(reached, rel=1e-12)
