"""The C++ example (cpp/route.cpp) builds against the torch wheel's libtorch and decides as Python, rules included.

Slow: compiling against libtorch takes minutes on two cores, once per module (``route_binary``). cmake comes
from PyPI (the dev extra, installed beside this Python), the compiler from the system (``make test`` installs
g++ where none is and it runs as root). Skipped, with the reason, only where one is absent, and in CI that
skip fails (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
#: ``route`` at weight 300 in a fresh Python process that never imported routerl (argv: policy, JSON queries).
FRESH_ROUTE = (
    "import json, sys, warnings; warnings.simplefilter('ignore'); import torch; "
    "print(json.dumps(torch.jit.load(sys.argv[1]).route(json.loads(sys.argv[2]), 300.0)))"
)
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


@pytest.fixture(scope="module")
def route_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cpp/route built once for this module's tests (Release, against the torch wheel's libtorch)."""
    cmake = shutil.which("cmake", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cmake is None or compiler is None:
        pytest.skip(f"needs cmake and a C++ compiler (cmake: {cmake}, compiler: {compiler})")
    build = tmp_path_factory.mktemp("cpp") / "build"
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
    return build / "route"


@pytest.mark.slow
def test_cpp_route_matches_python(demo_policy: Path, route_binary: Path) -> None:
    policy = torch.jit.load(str(demo_policy))
    for weight in (0.0, 300.0, 3000.0):
        done = subprocess.run(
            [str(route_binary), str(demo_policy), repr(weight)],
            input="\n".join(QUERIES) + "\n",
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        assert done.stdout.splitlines() == policy.route(QUERIES, weight), f"cost weight {weight}"
    default = subprocess.run(
        [str(route_binary), str(demo_policy)],
        input="\n".join(QUERIES) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert default.stdout.splitlines() == policy.route(QUERIES, policy.default_cost_weight())
    refused = subprocess.run(
        [str(route_binary), str(demo_policy), "-1"], input="", capture_output=True, text=True, timeout=300
    )
    assert refused.returncode == 2 and "COST_WEIGHT" in refused.stderr


RULE_QUERIES = [
    "Fix this: ```def f(x): return x```",
    "#include <stdio.h> and then what?",
    "Please translate the menu to French.",
    "word " * 60,
    "Prove that there are infinitely many primes.",
    "hello",
    "Ünïcödé, 日本語のテキスト, emoji 🚀 and CAPITALS!",
    "",
]


@pytest.mark.slow
def test_cpp_route_applies_the_rules_as_python_does(rules_policy: Path, route_binary: Path) -> None:
    done = subprocess.run(
        [str(route_binary), str(rules_policy), "300"],
        input="\n".join(RULE_QUERIES) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    in_python = subprocess.run(
        [sys.executable, "-I", "-c", FRESH_ROUTE, str(rules_policy), json.dumps(RULE_QUERIES)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    routes = json.loads(in_python.stdout)
    assert done.stdout.splitlines() == routes
    assert routes[2] == "tiny-1b" and routes[3] == "large-70b" and routes[0] in ("frontier-xl", "large-70b")
