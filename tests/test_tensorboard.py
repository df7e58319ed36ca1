"""The real ``tensorboard`` server, started on a run directory, serves the run's scalars over HTTP."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from training.run import RunResult


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_tensorboard_serves_the_run(demo_run: RunResult) -> None:
    executable = shutil.which("tensorboard", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.skip("the tensorboard command is not installed beside this Python")
    port = _free_port()
    server = subprocess.Popen(
        [executable, "--logdir", str(demo_run.directory / "tb"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        scalars = None
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(
                    f"{base}/data/plugin/scalars/scalars",
                    params={"run": ".", "tag": "charts/reward"},
                    timeout=5,
                )
                if answer.status_code == 200 and answer.json():
                    scalars = answer.json()
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        assert scalars is not None, "tensorboard did not serve charts/reward in time"
        _, step, value = scalars[-1]
        assert step == demo_run.report["policy"]["steps"]
        assert value == pytest.approx(demo_run.report["test"]["mean_reward"], rel=1e-6)
        tags = httpx.get(f"{base}/data/plugin/scalars/tags", timeout=5).json()["."]
        assert {"charts/quality", "charts/cost", "charts/regret"} <= set(tags)
        plugins = httpx.get(f"{base}/data/plugins_listing", timeout=5).json()
        assert plugins["hparams"]["enabled"] and plugins["images"]["enabled"] and plugins["histograms"]["enabled"]
    finally:
        server.terminate()
        server.wait(timeout=30)
