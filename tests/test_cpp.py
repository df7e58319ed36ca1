"""The C++ example (cpp/route.cpp) builds against the torch wheel's libtorch and decides as Python.

Slow: compiling against libtorch takes minutes on two cores. cmake comes from PyPI (the dev extra,
installed beside this Python), the compiler from the system (``make test`` installs g++ where none is
and it runs as root). Skipped, with the reason, only where one is absent, and in CI that skip fails
(tests/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
QUERIES = [
    "What is the capital of France?",
    "Write a Python function that merges two sorted lists in O(n) time.",
    "Prove that there are infinitely many primes.",
    "Ünïcödé, 日本語のテキスト, emoji 🚀 and CAPITALS!",
    "",
    "x",
    "word " * 500,
    "Summarize the plot of Hamlet in three sentences, then list its main characters.",
]


@pytest.mark.slow
def test_cpp_route_matches_python(demo_policy: Path, tmp_path: Path) -> None:
    cmake = shutil.which("cmake", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cmake is None or compiler is None:
        pytest.skip(f"needs cmake and a C++ compiler (cmake: {cmake}, compiler: {compiler})")
    build = tmp_path / "build"
    subprocess.run(
        [
            cmake,
            "-S",
            str(ROOT / "cpp"),
            "-B",
            str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    subprocess.run([cmake, "--build", str(build), "-j2"], check=True, capture_output=True, text=True, timeout=1800)
    policy = torch.jit.load(str(demo_policy))
    for weight in (0.0, 300.0, 3000.0):
        done = subprocess.run(
            [str(build / "route"), str(demo_policy), repr(weight)],
            input="\n".join(QUERIES) + "\n",
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        assert done.stdout.splitlines() == policy.route(QUERIES, weight), f"cost weight {weight}"
    default = subprocess.run(
        [str(build / "route"), str(demo_policy)],
        input="\n".join(QUERIES) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert default.stdout.splitlines() == policy.route(QUERIES, policy.default_cost_weight())
    refused = subprocess.run(
        [str(build / "route"), str(demo_policy), "-1"], input="", capture_output=True, text=True, timeout=300
    )
    assert refused.returncode == 2 and "COST_WEIGHT" in refused.stderr
