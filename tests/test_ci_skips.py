"""The hooks of tests/conftest.py, run by a child pytest on a small sample of tests: in CI (``CI=true``) a skip
outside ``SKIPS_ALLOWED_IN_CI`` fails, naming the test and its reason, and every run ends with the count line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = """
import pytest

import conftest

conftest.SKIPS_ALLOWED_IN_CI["test_sample.py::test_allowed_skip"] = "the sample's allowed skip"


def test_passes():
    pass


def test_fails():
    assert False


def test_skips():
    pytest.skip("no widget here")


@pytest.fixture
def absent():
    pytest.skip("the fixture has no widget")


def test_fixture_skips(absent):
    pass


@pytest.mark.skipif(True, reason="marked off")
def test_marked_skip():
    pass


def test_allowed_skip():
    pytest.skip("allowed in CI")
"""


MODULE_SKIP = 'import pytest\n\npytest.importorskip("no_such_module")\n'


def _run(tmp_path: Path, modules: dict[str, str], ci: str | None) -> subprocess.CompletedProcess[str]:
    """``pytest`` on ``modules`` (file name → source) with conftest's hooks, ``CI`` set to ``ci`` or unset."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    for name, source in modules.items():
        (tmp_path / name).write_text(source, encoding="utf-8")
    env = {name: value for name, value in os.environ.items() if name not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q", "-c"]
    return subprocess.run(
        [*command, str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _failed_skip(node: str, reason: str) -> str:
    return f"{node} was skipped in CI (CI=true), which counts as a failure: {reason}"


def test_in_ci_a_skipped_test_off_the_allow_list_fails_with_its_reason(tmp_path: Path) -> None:
    done = _run(tmp_path, {"test_sample.py": SAMPLE}, "true")
    assert done.returncode == 1, done.stdout + done.stderr
    assert _failed_skip("test_sample.py::test_skips", "no widget here") in done.stdout
    assert _failed_skip("test_sample.py::test_fixture_skips", "the fixture has no widget") in done.stdout
    assert _failed_skip("test_sample.py::test_marked_skip", "marked off") in done.stdout
    assert "test_allowed_skip was skipped in CI" not in done.stdout
    assert "tests: 5 run, 1 passed, 1 skipped, 4 failed" in done.stdout.splitlines()


def test_in_ci_a_module_skipped_at_import_fails(tmp_path: Path) -> None:
    done = _run(tmp_path, {"test_module_skip.py": MODULE_SKIP}, "true")
    assert done.returncode == 2, done.stdout + done.stderr  # a collection error interrupts the session
    assert _failed_skip("test_module_skip.py", "could not import 'no_such_module'") in done.stdout
    assert "tests: 1 run, 0 passed, 0 skipped, 1 failed" in done.stdout.splitlines()


def test_outside_ci_skips_stay_skips(tmp_path: Path) -> None:
    done = _run(tmp_path, {"test_sample.py": SAMPLE, "test_module_skip.py": MODULE_SKIP}, None)
    assert done.returncode == 1, done.stdout + done.stderr  # test_fails
    assert "was skipped in CI" not in done.stdout
    assert "tests: 2 run, 1 passed, 5 skipped, 1 failed" in done.stdout.splitlines()
