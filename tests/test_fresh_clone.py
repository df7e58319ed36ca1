"""The README's first command, ``make run``, works in a fresh clone with a fresh environment."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _clone(destination: Path) -> Path:
    """Copy what a clone would hold: tracked files and untracked ones git does not ignore."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.mark.slow
def test_make_run_in_a_fresh_clone(tmp_path: Path) -> None:
    if shutil.which("make") is None or shutil.which("git") is None:
        pytest.skip("make or git is not installed")
    clone = _clone(tmp_path / "routerl")
    assert not (clone / ".venv").exists() and not (clone / "runs").exists()
    done = subprocess.run(["make", "run"], cwd=clone, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "held-out: quality" in done.stdout
    assert "serve it:  python serve.py --policy" in done.stdout
    for name in ("policy.pt", "report.json", "report.md", "report.html", "config.yaml", "rejected.jsonl"):
        assert (clone / "runs" / "default" / name).is_file()
    again = subprocess.run(["make", "run"], cwd=clone, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]  # re-runnable: --overwrite replaces the run
