"""Screenshots of routerl's pages for the docs: the service's dashboard under traffic and a run's report.html.

    python bench/screenshots.py [--run runs/default] [--out docs] [--seconds 20]

Starts the real ``serve.py`` on the run's policy (API token, decision log, ε-greedy, a live budget),
sends the demo log's queries with their logged quality and cost as feedback for ``--seconds``, opens
``/ui`` in the system's headless Chromium (``make browser``) through its sign-in form, and saves
``dashboard.png`` (laptop width, light theme) and ``dashboard-phone.png`` (390 px, dark theme); then
opens the run's ``report.html`` from disk with networking off and saves ``report.png``. Needs a
finished run (``make run`` writes ``runs/default``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
from playwright.sync_api import Browser, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "screenshot-token"
ANNOUNCE = re.compile(r"^routerl serving on (http://127\.0\.0\.1:\d+)$")


def demo_outcomes() -> tuple[list[str], dict[str, dict[str, tuple[float, float]]]]:
    """The demo log's queries and each one's (quality, cost) per model."""
    outcomes: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for line in (ROOT / "data" / "demo" / "demo.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        outcomes[row["query"]][row["model"]] = (row["quality"], row["cost"])
    return sorted(outcomes), outcomes


def start_service(policy: Path, folder: Path) -> tuple[subprocess.Popen[str], str]:
    """``serve.py`` on a free port with a token, a decision log, ε-greedy and a budget; its URL."""
    command = [sys.executable, str(ROOT / "serve.py"), "--policy", str(policy), "--port", "0"]
    command += ["--decision-log", str(folder / "decisions.jsonl"), "--explore-epsilon", "0.1", "--budget", "0.0003"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "ROUTERL_API_TOKEN": TOKEN},
    )
    assert process.stdout is not None
    for line in process.stdout:
        match = ANNOUNCE.match(line.strip())
        if match:
            return process, match.group(1)
    raise SystemExit(f"serve.py exited with {process.wait()} before announcing its address")


def send_traffic(base_url: str, seconds: float) -> int:
    """Route the demo queries in a loop for ``seconds``, with their logged outcome as feedback; how many."""
    queries, outcomes = demo_outcomes()
    sent = 0
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        while time.monotonic() < deadline:
            query = queries[sent % len(queries)]
            decision = http.post("/route", json={"query": query}).json()
            quality, cost = outcomes[query][decision["model"]]
            http.post("/feedback", json={"query_id": decision["query_id"], "quality": quality, "cost": cost})
            sent += 1
            time.sleep(0.01)
    return sent


def dashboard_shots(browser: Browser, base_url: str, out: Path, seconds: float) -> None:
    """Sign in, keep traffic flowing while the page polls, and save both screenshots."""
    for name, scheme, viewport in (
        ("dashboard.png", "light", {"width": 1280, "height": 900}),
        ("dashboard-phone.png", "dark", {"width": 390, "height": 844}),
    ):
        page = browser.new_context(viewport=viewport, color_scheme=scheme).new_page()
        page.goto(base_url + "/ui")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_selector("#poll-count")
        send_traffic(base_url, seconds)
        page.click("#try-form button")
        page.wait_for_selector("#try-result[data-model]")
        page.wait_for_timeout(2500)
        page.screenshot(path=str(out / name), full_page=True)
        print(f"wrote {out / name}")


def report_shot(browser: Browser, run: Path, out: Path) -> None:
    """Open the run's report.html from disk with networking off and save it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
    page = context.new_page()
    requests: list[Any] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto((run / "report.html").resolve().as_uri())
    page.wait_for_timeout(1000)
    page.screenshot(path=str(out / "report.png"), full_page=True)
    outside = [url for url in requests if not url.startswith(("file:", "data:"))]
    if outside:
        raise SystemExit(f"report.html asked for {outside}")
    print(f"wrote {out / 'report.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "default", help="a finished train.py run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    parser.add_argument("--seconds", type=float, default=20.0, help="traffic per screenshot of the dashboard")
    parser.add_argument("--chromium", default=os.environ.get("ROUTERL_CHROMIUM", "chromium"), help="Chromium to drive")
    args = parser.parse_args()
    if not (args.run / "report.md").is_file():
        parser.error(f"{args.run} is not a finished run (make run writes runs/default)")
    with TemporaryDirectory() as folder, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_which(args.chromium), args=["--no-sandbox"])
        process, base_url = start_service(args.run / "policy.pt", Path(folder))
        try:
            dashboard_shots(browser, base_url, args.out, args.seconds)
        finally:
            process.terminate()
            process.wait(timeout=30)
        report_shot(browser, args.run, args.out)
        browser.close()


def _which(name: str) -> str:
    """The Chromium executable's path (a name on the PATH, or a path)."""
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"no Chromium named {name!r}: make browser installs it, or pass --chromium PATH")
    return found


if __name__ == "__main__":
    main()
