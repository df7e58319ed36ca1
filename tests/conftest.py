"""Shared fixtures and helpers of the tests.

- Fixtures: one real training run on the demo data (``demo_run``, ``demo_policy``; with rule overrides
  ``rules_policy``), the shared RouterBench logs (``routerbench``) and RouteProfile log (``routeprofile``),
  a local Ray cluster (``ray_cluster``), the system's headless Chromium driven by Playwright (``chromium``).
- Child processes, as a user runs the commands: :func:`run_python` (``python ARGS``),
  :func:`run_train` (``python train.py --quiet ARGS``), :func:`run_train_on_routerbench` (the
  same with the RouterBench config and logs) and :func:`run_isolated` (``python -I -c SCRIPT``,
  for the checks that an exported policy works without routerl).
- Synthetic worlds for the agents' unit tests: :func:`linear_world` and :func:`synthetic_log`; for token
  mode, ``priced_world``; for cascades, a log with responses where an answer reveals its correctness:
  :func:`revealing_cascade_log`.
- The product's files, for the layering and layout checks: :func:`product_files`.
- Hooks (at the end): in CI (``CI=true``) a skipped test is a failure unless it is on
  :data:`SKIPS_ALLOWED_IN_CI`, the one allow-list of skips, each entry with its reason (empty today:
  every tool the tests need is installed by ``make setup-dev``/``make test``, and no test needs a GPU);
  and every run ends with one line ``tests: N run, N passed, N skipped, N failed``.

Test modules import the helpers with ``from conftest import ...`` (pytest's default ``prepend``
import mode puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Generator, Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data.featurizer import FeaturizerConfig, TextFeaturizer
from data.routing_log import RoutingLog
from data.synth.config import SynthConfig
from data.synth.generator import generate
from training.config import load_config
from training.run import RunResult, prepare_directory, train

ROOT = Path(__file__).resolve().parent.parent
ROUTERBENCH = ROOT.parent / "shared" / "data" / "routerbench"
ROUTEPROFILE = ROOT.parent / "shared" / "data" / "routeprofile"
PACKAGES = ("data", "envs", "agents", "policies", "evaluation", "training", "serving")
SCRIPTS = ("train", "serve")


def product_files(root: Path = ROOT) -> list[Path]:
    """Every ``.py`` file of the product: the seven packages and the two scripts (not ``tests/``, not ``bench/``)."""
    files = [path for package in PACKAGES for path in sorted((root / package).rglob("*.py"))]
    return files + [root / f"{script}.py" for script in SCRIPTS if (root / f"{script}.py").is_file()]


def run_python(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` (this interpreter) in a child process, from the repository root unless told, output as text."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def run_train(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python train.py --quiet ARGS`` to completion, as a user runs it."""
    return run_python(str(ROOT / "train.py"), "--quiet", *args, cwd=cwd, timeout=timeout)


def run_train_on_routerbench(
    data: Path, out: Path, *args: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """``python train.py --quiet --config configs/routerbench.yaml --data DATA --out OUT ARGS``."""
    config = str(ROOT / "configs" / "routerbench.yaml")
    return run_train("--config", config, "--data", str(data), "--out", str(out), *args, timeout=timeout)


def run_isolated(script: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -I -c SCRIPT ARGS`` in ``cwd``: isolated mode (no ``PYTHONPATH``, no script directory on
    ``sys.path``), so that an exported policy is shown to work without the repository's packages."""
    return run_python("-I", "-c", script, *args, cwd=cwd, timeout=timeout)


def linear_world(n: int, d: int = 5, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features ``x`` (n × d, last column 1), and quality and cost per arm (n × k): linear in ``x``, a little noise."""
    rng = np.random.default_rng(seed)
    x = np.hstack([rng.standard_normal((n, d - 1)), np.ones((n, 1))])
    quality = np.clip(x @ rng.standard_normal((d, k)) * 0.2 + 0.5 + rng.normal(0, 0.05, (n, k)), 0, 1)
    cost = np.abs(x @ rng.standard_normal((d, k))) * 1e-4 + np.array([1e-4, 5e-4, 1e-3])[:k]
    return x, quality, cost


def synthetic_log(quality: np.ndarray, cost: np.ndarray, **feedback: Any) -> RoutingLog:
    """A log of ``quality`` and ``cost`` (n × k) named by position: models ``m0``…, query ids and texts ``"0"``….

    Full feedback by default; a bandit log passes ``feedback="bandit", action=..., propensity=...``.
    """
    n, k = quality.shape
    return RoutingLog(
        models=tuple(f"m{i}" for i in range(k)),
        query_ids=np.array([str(i) for i in range(n)], dtype=object),
        queries=[str(i) for i in range(n)],
        quality=quality,
        cost=cost,
        **feedback,
    )


#: USD per call of the models of :func:`revealing_cascade_log`: cheap, mid, strong.
CASCADE_COSTS = np.array([1e-4, 5e-4, 5e-3])
_TOPICS = ("algebra", "biology", "chemistry", "history", "law", "physics", "poetry", "tax")


def revealing_cascade_log(n: int, seed: int) -> tuple[RoutingLog, np.ndarray]:
    """A full-information log of models cheap, mid, strong (:data:`CASCADE_COSTS`) and its (n, 3) responses,
    where a response reveals its correctness: the cheap model is right 60% of the time and hedges exactly
    when it is wrong; the mid model is right 75% of the time with no tell; the strong model is always
    right. The queries' texts (two random topics) tell nothing. The oracle cascade calls the cheap
    model and escalates to the strong one exactly when it hedges."""
    rng = np.random.default_rng(seed)
    cheap, mid = rng.random(n) < 0.6, rng.random(n) < 0.75
    topics = rng.choice(_TOPICS, size=(n, 2))
    quality = np.stack([cheap, mid, np.ones(n, dtype=bool)], axis=1).astype(float)
    responses = np.empty((n, 3), dtype=object)
    responses[:, 0] = np.where(cheap, "The answer is B.", "I don't know, maybe C.")
    responses[:, 1] = np.where(mid, "B", "C")
    responses[:, 2] = "(B)"
    log = RoutingLog(
        models=("cheap", "mid", "strong"),
        query_ids=np.array([f"q{seed}-{i}" for i in range(n)], dtype=object),
        queries=[f"query {i} on {first} and {second}" for i, (first, second) in enumerate(topics.tolist())],
        quality=quality,
        cost=np.tile(CASCADE_COSTS, (n, 1)),
    )
    return log, responses


@pytest.fixture(scope="module")
def priced_world() -> tuple[RoutingLog, TextFeaturizer, np.ndarray, np.ndarray]:
    """A synthetic full-information log whose cost is its tokens at the generator's prices (K, 2), its
    featurizer and features (token mode's tests)."""
    synth = generate(SynthConfig(queries=600, models=3, seed=1))
    log = synth.routing_log()
    featurizer = TextFeaturizer(FeaturizerConfig(components=8)).fit(log.queries)
    prices = np.stack([synth.input_price, synth.output_price], axis=1)
    return log, featurizer, featurizer.transform(log.queries), prices


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """``python train.py`` (configs/default.yaml) run in-process into a temporary run directory."""
    out = tmp_path_factory.mktemp("runs") / "default"
    config = load_config(ROOT / "configs" / "default.yaml", [])
    prepare_directory(out, overwrite=False)
    return train(config, out, quiet=True)


@pytest.fixture(scope="session")
def demo_policy(demo_run: RunResult) -> Path:
    """The real exported policy of the demo run."""
    return demo_run.directory / "policy.pt"


#: The rules file of :func:`rules_policy`, over the demo log's models (docs/contracts.md §2.9).
DEMO_RULES = """
rules:
  - name: code goes to big models
    when: {contains_any: ["```", "def ", "#include"]}
    route_to: [frontier-xl, large-70b]
  - name: long prompts
    when: {min_tokens: 40}
    route_to: [large-70b]
  - when: {pattern: "*translate*to french*"}
    route_to: [tiny-1b]
  - when: {contains_all: ["prove", "prime"], max_chars: 200}
    route_to: [medium-34b, small-7b]
  - when: {min_chars: 3, max_chars: 5}
    route_to: [small-7b]
"""


@pytest.fixture(scope="session")
def rules_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo policy with :data:`DEMO_RULES` compiled in (``train.py --rules``, ``--no-tune``, in-process)."""
    folder = tmp_path_factory.mktemp("rules")
    (folder / "rules.yaml").write_text(DEMO_RULES, encoding="utf-8")
    overrides = [f"rules={folder / 'rules.yaml'}", "tuning.enabled=false", "evaluation.bootstrap=0"]
    config = load_config(ROOT / "configs" / "default.yaml", overrides)
    prepare_directory(folder / "run", overwrite=False)
    return train(config, folder / "run", quiet=True).directory / "policy.pt"


@pytest.fixture(scope="session")
def routerbench() -> Path:
    """The shared RouterBench logs; tests that need them skip when ../shared/data is absent (in CI that fails)."""
    if not ROUTERBENCH.is_dir():
        pytest.skip(f"{ROUTERBENCH} is absent (a fresh clone has no ../shared/data)")
    return ROUTERBENCH


@pytest.fixture(scope="session")
def routeprofile() -> Path:
    """The shared RouteProfile log (``train.jsonl``: 8 open models, token counts); skips as :func:`routerbench`."""
    if not ROUTEPROFILE.is_dir():
        pytest.skip(f"{ROUTEPROFILE} is absent (a fresh clone has no ../shared/data)")
    return ROUTEPROFILE / "train.jsonl"


def chromium_executable() -> str | None:
    """The system's Chromium: ``ROUTERL_CHROMIUM``, else ``chromium`` or ``chromium-browser`` on the PATH
    (``make browser`` installs Debian's). Playwright's own browser builds are never used."""
    return os.environ.get("ROUTERL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A real headless Chromium (the system's, :func:`chromium_executable`) driven by Playwright, for the
    page tests; skips (a failure in CI) when either is missing.

    One per test module: Playwright's synchronous API runs an asyncio event loop in this thread while it is
    open, and ``asyncio.run`` (other modules' tests) refuses to start inside a running loop."""
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no Chromium on this machine: make browser installs it")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A real local Ray cluster for one test module: 127.0.0.1, two CPUs, no dashboard, 80 MB object store."""
    ray = pytest.importorskip("ray")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=80 * 1024**2,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    yield
    ray.shutdown()


# Hooks: skips in CI, and the closing count.

SKIPS_ALLOWED_IN_CI: dict[str, str] = {}
"""The only skips CI accepts: a test node id pattern (``fnmatch``, e.g. ``tests/test_x.py::test_y*``) → why
skipping it in CI is right (say a test that needs a GPU, which CI does not have). Every other skip fails
in CI: a skipped test proves nothing, and a missing tool is fixed in the set-up (Makefile), not here."""


def in_ci() -> bool:
    """Whether this is CI: ``CI=true`` (or ``1``), as CI services set it; then skips outside the allow-list fail."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason pytest recorded for a skip (its ``longrepr`` is ``(path, line, "Skipped: reason")``)."""
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


def _fail_skip_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turn a skip into a failure, in place, when in CI and the node is not on :data:`SKIPS_ALLOWED_IN_CI`."""
    if not report.skipped or hasattr(report, "wasxfail") or not in_ci():
        return
    if any(fnmatchcase(report.nodeid, pattern) for pattern in SKIPS_ALLOWED_IN_CI):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"{report.nodeid} was skipped in CI (CI=true), which counts as a failure: {_skip_reason(report)}\n"
        "Install what it needs in the set-up (Makefile), or, if the skip is right in CI, add the test to "
        "SKIPS_ALLOWED_IN_CI in tests/conftest.py with the reason."
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A test's skip (a mark, a fixture or ``pytest.skip`` in setup, call or teardown) fails in CI."""
    report = yield
    _fail_skip_in_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    """A module skipped as a whole at import (``pytest.importorskip``, a module-level ``pytest.skip``) fails in CI."""
    report = yield
    _fail_skip_in_ci(report)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line CI reads: ``tests: N run, N passed, N skipped, N failed``.

    Counted per test (node id): a test that failed or errored in any phase (setup, call, teardown) counts
    once, as failed; a module that failed to import counts as one failure; skipped tests did not run, so
    *run* = passed + failed.
    """
    stats = terminalreporter.stats

    def node_ids(*categories: str) -> set[str]:
        return {report.nodeid for category in categories for report in stats.get(category, [])}

    failed = node_ids("failed", "error")
    skipped = node_ids("skipped") - failed
    passed = node_ids("passed") - failed - skipped
    terminalreporter.write_line(
        f"tests: {len(passed) + len(failed)} run, {len(passed)} passed, {len(skipped)} skipped, {len(failed)} failed"
    )
