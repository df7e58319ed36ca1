"""Inference of exported policies: in-process latency and throughput, artifact size, load time, C++.

For each policy file given (default: the demo policy and a RouterBench-trained one, built with
``train.py`` when missing), and for each engine (``torchscript``: ``policy.pt`` itself; ``native``:
its portable twin ``policy.safetensors`` scored with numpy, docs/contracts.md §2.11), measured side
by side in this one process with ``torch.set_num_threads(1)``:

* latency of ``policy.route([q], w)`` for one ~30-word query (p50, p99 over ``--calls`` calls,
  the calls of all policies interleaved so that machine load hits them alike);
* per query in micro-batches: ``route`` of ``--micro-batch`` queries at once (a busy service's batch,
  ``serving/batching.py``), p50 over ``--calls`` queries, divided by the batch's size;
* batched throughput: queries/s of ``route`` on batches of ``--batch`` queries (median of runs);
* file size, and load time (median over ``--loads`` loads, each in a fresh process that has
  imported what the engine needs only: ``torch.jit.load``; ``load_native_policy`` of the twin);
* the C++ example (``cpp/route.cpp``, built with cmake like ``tests/test_cpp.py`` does): time per
  query for a stdin batch = (time for N queries − time for 1 query) / (N − 1), median of runs.

Passing an old and a new export of the same policy (``--policy before.pt --policy after.pt``) gives
a before/after comparison; ``route`` results of policies with the same models are checked equal.

    python bench/bench_inference.py                       # full: 5000 calls, 10 loads, C++
    python bench/bench_inference.py --calls 2000 --loads 3 --no-cpp   # quick
    python bench/bench_inference.py --queries-from ../shared/data/routerbench   # prompts the policy knows words of

Both engines' routes are checked equal on 2,000 queries at three weights before anything is timed.

Targets (issue 19): native p50 <= 30 µs, >= 100,000 queries/s batched, its file loads in <= 20 ms
and is no larger than ``policy.pt``; TorchScript p50 <= 100 µs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_POLICIES = {
    ROOT / "runs" / "bench-demo" / "policy.pt": [
        "train.py",
        "--quiet",
        "--out",
        "runs/bench-demo",
        "--overwrite",
    ],
    ROOT / "runs" / "bench-rb" / "policy.pt": [
        "train.py",
        "--config",
        "configs/routerbench.yaml",
        "--quiet",
        "--out",
        "runs/bench-rb",
        "--overwrite",
        "--set",
        "evaluation.bootstrap=0",
    ],
}

LOAD = {
    "torchscript": """
import sys, time, torch
start = time.perf_counter()
torch.jit.load(sys.argv[1])
print(time.perf_counter() - start)
""",
    "native": """
import sys, time
sys.path.insert(0, sys.argv[2])
from policies.native import load_native_policy
start = time.perf_counter()
load_native_policy(sys.argv[1])
print(time.perf_counter() - start)
""",
}
ENGINES = ("torchscript", "native")


@dataclass(frozen=True)
class Engine:
    """One policy in one engine: its ``route(queries, w)``, default weight, file and vocabulary size."""

    engine: str
    route: Callable[[list[str], float], list[str]]
    weight: float
    path: Path
    vocabulary: int


def engines(path: Path, which: list[str]) -> dict[str, Engine]:
    """``path`` loaded in each engine of ``which``, named by engine."""
    from policies.native import load_native_policy
    from policies.portable import twin_path

    loaded: dict[str, Engine] = {}
    if "torchscript" in which:
        module = torch.jit.load(str(path))
        vocabulary = len(module.featurizer.vocabulary)
        loaded["torchscript"] = Engine("torchscript", module.route, module.default_cost_weight(), path, vocabulary)
    if "native" in which:
        twin = twin_path(path)
        if not twin.is_file():  # the load time is the twin's: without one it would be a conversion's
            raise SystemExit(f"{path}: no {twin.name}: `python -m policies portable {path}`, or --engines torchscript")
        native = load_native_policy(path)
        loaded["native"] = Engine("native", native.route, native.default_cost_weight, twin, native.featurizer.n_terms)
    return loaded


def queries(count: int, words: int, seed: int, log: Path | None = None) -> list[str]:
    """``count`` queries of ~``words`` words: synthetic (data.synth, full vocabulary incl. non-ASCII words), or the
    distinct queries of the routing log ``log``, each cut to its first ``words`` words, repeated up to ``count``."""
    if log is None:
        from data.synth import SynthConfig, generate

        return list(generate(SynthConfig(queries=count, models=2, words_per_query=words, seed=seed)).queries)
    from data.loading import load_log

    distinct = [" ".join(query.split()[:words]) for query in dict.fromkeys(load_log(log).log.queries)]
    return [distinct[i % len(distinct)] for i in range(count)]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def latency(policies: dict[str, Engine], texts: list[str], calls: int) -> dict[str, list[float]]:
    """Seconds per ``route([q], w)`` call, policies interleaved call by call."""
    samples: dict[str, list[float]] = {name: [] for name in policies}
    for policy in policies.values():  # warm-up (TorchScript profiles the first calls)
        for text in texts[:50]:
            policy.route([text], policy.weight)
    clock = time.perf_counter_ns
    for i in range(calls):
        one = [texts[i % len(texts)]]
        for name, policy in policies.items():
            start = clock()
            policy.route(one, policy.weight)
            samples[name].append((clock() - start) * 1e-9)
    return samples


def micro_batches(policies: dict[str, Engine], texts: list[str], size: int, calls: int) -> dict[str, list[float]]:
    """Seconds per query of ``route`` on batches of ``size`` queries (a busy service's micro-batches), policies
    interleaved batch by batch; ``calls`` queries in all."""
    samples: dict[str, list[float]] = {name: [] for name in policies}
    clock = time.perf_counter_ns
    for start in range(0, calls - size + 1, size):
        batch = [texts[(start + i) % len(texts)] for i in range(size)]
        for name, policy in policies.items():
            begin = clock()
            policy.route(batch, policy.weight)
            samples[name].append((clock() - begin) * 1e-9 / size)
    return samples


def throughput(policies: dict[str, Engine], texts: list[str], batch: int, repeats: int) -> dict[str, list[float]]:
    """Queries/s of ``route`` on batches of ``batch`` queries, one value per repeat."""
    batches = [texts[i : i + batch] for i in range(0, len(texts) - batch + 1, batch)] or [texts[:batch]]
    rates: dict[str, list[float]] = {name: [] for name in policies}
    for policy in policies.values():
        policy.route(batches[0], policy.weight)
    for r in range(repeats):
        for name, policy in policies.items():
            chunk = batches[r % len(batches)]
            start = time.perf_counter()
            policy.route(chunk, policy.weight)
            rates[name].append(len(chunk) / (time.perf_counter() - start))
    return rates


def load_times(policies: dict[str, Engine], loads: int) -> dict[str, list[float]]:
    """Load seconds, each in a fresh process (what the engine needs already imported there)."""
    times: dict[str, list[float]] = {name: [] for name in policies}
    for _ in range(loads):
        for name, policy in policies.items():
            out = subprocess.run(
                [sys.executable, "-c", LOAD[policy.engine], str(policy.path), str(ROOT)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            times[name].append(float(out.stdout.strip().splitlines()[-1]))
    return times


def build_cpp(build: Path) -> Path | None:
    """The C++ example, built (Release) into ``build`` unless already there; None without cmake."""
    binary = build / "route"
    if binary.exists():
        return binary
    cmake = shutil.which("cmake")
    if cmake is None or not (shutil.which("c++") or shutil.which("g++")):
        print("C++: skipped (needs cmake and a C++ compiler)")
        return None
    print(f"building cpp/ into {build} (minutes on two cores)...", flush=True)
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
    )
    subprocess.run([cmake, "--build", str(build), "-j2"], check=True, capture_output=True)
    return binary


def cpp_times(binary: Path, paths: dict[str, Path], texts: list[str], repeats: int) -> dict[str, dict[str, float]]:
    """Per policy: process time for 1 query, for all ``texts``, and the per-query difference."""
    lines = [t.replace("\n", " ") for t in texts]
    result: dict[str, dict[str, list[float]]] = {name: {"one": [], "all": []} for name in paths}

    def run(path: Path, batch: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(
            [str(binary), str(path)],
            input="\n".join(batch) + "\n",
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        return time.perf_counter() - start

    for _ in range(repeats):
        for name, path in paths.items():
            result[name]["one"].append(run(path, lines[:1]))
            result[name]["all"].append(run(path, lines))
    summary = {}
    for name, r in result.items():
        one, full = statistics.median(r["one"]), statistics.median(r["all"])
        summary[name] = {
            "process_1_query_s": one,
            "process_all_s": full,
            "per_query_us": (full - one) / (len(lines) - 1) * 1e6,
            "queries_per_s": (len(lines) - 1) / max(full - one, 1e-9),
        }
    return summary


def check_engines(policies: dict[str, dict[str, Engine]], texts: list[str]) -> None:
    """Each policy routes alike in every engine."""
    for name, loaded in policies.items():
        first, *others = loaded.values()
        for other in others:
            for weight in (0.0, first.weight, 1e4):
                assert first.route(texts, weight) == other.route(texts, weight), f"{name}: engines differ at w={weight}"
            print(f"check: {name} routes alike in {first.engine} and {other.engine} on {len(texts)} queries")


def check_same(policies: dict[str, torch.jit.ScriptModule], texts: list[str]) -> None:
    """Policies with the same models must route alike and give the same scores."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, policy in policies.items():
        groups.setdefault(tuple(policy.models()), []).append(name)
    for names in groups.values():
        first = policies[names[0]]
        for name in names[1:]:
            other = policies[name]
            for weight in (0.0, first.default_cost_weight(), 1e4):
                a, b = first.scores(texts, weight), other.scores(texts, weight)
                assert torch.equal(a, b), f"{names[0]} and {name} give different scores at w={weight}"
                assert first.route(texts, weight) == other.route(texts, weight)
            print(f"check: {names[0]} and {name} give identical scores and routes on {len(texts)} queries")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--policy",
        action="append",
        type=Path,
        default=None,
        help="policy file (repeatable; default: runs/bench-demo and runs/bench-rb)",
    )
    parser.add_argument("--calls", type=int, default=5000, help="single-query calls per policy (>= 2000)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--micro-batch", type=int, default=8, help="queries per micro-batch (default: %(default)s)")
    parser.add_argument("--batch-repeats", type=int, default=9)
    parser.add_argument("--words", type=int, default=30, help="mean words per query")
    parser.add_argument(
        "--queries-from",
        type=Path,
        help="time the distinct queries of this routing log (each cut to --words words) instead of synthetic ones: "
        "the synthetic words are in neither default policy's vocabulary, a log's own queries are",
    )
    parser.add_argument("--loads", type=int, default=10, help="fresh-process load runs per policy and engine")
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help="engines to measure, comma-separated (default: %(default)s)"
    )
    parser.add_argument("--cpp-queries", type=int, default=20000, help="queries in the C++ stdin batch")
    parser.add_argument("--cpp-repeats", type=int, default=3)
    parser.add_argument(
        "--cpp-build",
        type=Path,
        default=Path(tempfile.gettempdir()) / "routerl-bench" / "cpp",
        help="build folder for cpp/ (default: %(default)s)",
    )
    parser.add_argument("--no-cpp", action="store_true", help="skip the C++ example")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    torch.set_num_threads(1)
    if args.policy is None:
        for path, command in DEFAULT_POLICIES.items():
            if not path.exists():
                subprocess.run([sys.executable, *command], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        args.policy = list(DEFAULT_POLICIES)
    paths = {str(p.relative_to(ROOT) if p.resolve().is_relative_to(ROOT) else p): p.resolve() for p in args.policy}
    which = args.engines.split(",")
    loaded = {name: engines(path, which) for name, path in paths.items()}
    texts = queries(max(args.calls, args.batch * 4, args.cpp_queries), args.words, seed=1, log=args.queries_from)
    words = statistics.mean(len(t.split()) for t in texts)
    print(
        f"{len(texts)} {'synthetic queries' if args.queries_from is None else f'queries from {args.queries_from}'}, "
        f"{words:.1f} words and {statistics.mean(map(len, texts)):.0f} "
        f"characters on average; torch {torch.__version__}, {torch.get_num_threads()} thread"
    )
    if "torchscript" in which:
        check_same({name: torch.jit.load(str(path)) for name, path in paths.items()}, texts[:2000])
    check_engines(loaded, texts[:2000])
    policies = {f"{name} ({engine})": e for name, by_engine in loaded.items() for engine, e in by_engine.items()}

    results: dict[str, dict[str, float]] = {name: {} for name in policies}
    single = latency(policies, texts, args.calls)
    micro = micro_batches(policies, texts, args.micro_batch, args.calls)
    batched = throughput(policies, texts, args.batch, args.batch_repeats)
    loads = load_times(policies, args.loads)
    for name, policy in policies.items():
        results[name].update(
            {
                "p50_us": percentile(single[name], 50) * 1e6,
                "p99_us": percentile(single[name], 99) * 1e6,
                "micro_batch_p50_us": percentile(micro[name], 50) * 1e6,
                "batch_qps": statistics.median(batched[name]),
                "size_mb": policy.path.stat().st_size / 1e6,
                "load_ms": statistics.median(loads[name]) * 1e3,
                "vocabulary": policy.vocabulary,
            }
        )
    if not args.no_cpp and "torchscript" in which:
        paths = {f"{name} (torchscript)": path for name, path in paths.items()}
        binary = build_cpp(args.cpp_build)
        if binary is not None:
            for name, r in cpp_times(binary, paths, texts[: args.cpp_queries], args.cpp_repeats).items():
                results[name].update({f"cpp_{k}": v for k, v in r.items()})

    header = (
        f"| policy (engine) | vocab | p50 route([q]) | p99 | per query, batches of {args.micro_batch} | "
        f"batch {args.batch} q/s | size | load (median) |"
    ) + (" C++ per query (stdin batch) | C++ q/s | C++ process, 1 query |" if not args.no_cpp else "")
    print("\n" + header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, r in results.items():
        line = (
            f"| `{name}` | {r['vocabulary']} | {r['p50_us']:.1f} µs | {r['p99_us']:.1f} µs | "
            f"{r['micro_batch_p50_us']:.1f} µs | {r['batch_qps']:,.0f} | {r['size_mb']:.2f} MB | "
            f"{r['load_ms']:.1f} ms |"
        )
        if "cpp_per_query_us" in r:
            line += (
                f" {r['cpp_per_query_us']:.1f} µs | {r['cpp_queries_per_s']:,.0f} | "
                f"{r['cpp_process_1_query_s'] * 1e3:.0f} ms |"
            )
        elif not args.no_cpp:
            line += " — | — | — |"
        print(line)
    names = list(results)
    if len(names) > 1:
        base = names[0]
        print(f"\nratios vs `{base}` (measured side by side):")
        for name in names[1:]:
            a, b = results[base], results[name]
            print(
                f"- `{name}`: p50 {a['p50_us'] / b['p50_us']:.2f}x faster, batch {b['batch_qps'] / a['batch_qps']:.2f}x"
                + (
                    f", C++ per query {a['cpp_per_query_us'] / b['cpp_per_query_us']:.2f}x faster"
                    if "cpp_per_query_us" in a and "cpp_per_query_us" in b
                    else ""
                )
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
