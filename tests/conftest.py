"""Shared fixtures: one real training run on the demo data, reused by many tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from training.config import load_config
from training.run import RunResult, prepare_directory, train

ROOT = Path(__file__).resolve().parent.parent
ROUTERBENCH = ROOT.parent / "shared" / "data" / "routerbench"


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


@pytest.fixture(scope="session")
def routerbench() -> Path:
    """The shared RouterBench logs; tests that need them skip when ../shared/data is absent."""
    if not ROUTERBENCH.is_dir():
        pytest.skip(f"{ROUTERBENCH} is absent (a fresh clone has no ../shared/data)")
    return ROUTERBENCH


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
