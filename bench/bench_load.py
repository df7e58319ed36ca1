"""Benchmark ``load_log`` on a large synthetic log: wall time, CPU time and peak memory of the load alone.

Why: 1,000,000 queries × 11 models must load in under 2 GB. The log is generated with
:mod:`data.synth` (once; reused when the file exists) and then loaded in a fresh child process
whose own peak resident set size (``ru_maxrss`` from ``wait4``) measures the load alone. By
default it is loaded twice, side by side: with the columnar path (``load_log(columnar=True)``,
the default) and with the per-row path alone (``columnar=False``); ``--paths`` picks one.

Both steps run in child processes so that this process stays small: Linux carries a process's
peak RSS across ``exec``, so a child forked from a parent that still held the generated log
would report the parent's memory as its own peak.

    python bench/bench_load.py --queries 100000 --models 11 --words 30 --format jsonl
    python bench/bench_load.py --queries 1000000 --format wide-csv --paths columnar
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Run in the child: load the log and print what it holds as one JSON line.
CHILD = """
import json, sys, time
from data.loading import load_log
start, cpu = time.perf_counter(), time.process_time()
loaded = load_log(sys.argv[1], columnar=sys.argv[2] == "columnar")
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
stats = loaded.log.stats
print(json.dumps({"seconds": seconds, "cpu": cpu, "queries": loaded.log.n_queries, "models": loaded.log.n_models,
                  "rows_read": stats.rows_read, "rows_rejected": stats.rows_rejected}))
"""


#: Run in a child: generate the log and write it (the generator holds it all in memory).
GENERATE = """
import sys, time
from data.synth import SynthConfig, generate, write
path, queries, models, words = sys.argv[1], *map(int, sys.argv[2:])
start = time.perf_counter()
rows = write(generate(SynthConfig(queries=queries, models=models, words_per_query=words)), path)
print(f"generated {path} ({rows} rows) in {time.perf_counter() - start:.1f} s", flush=True)
"""


def generate(path: Path, fmt: str, queries: int, models: int, words: int) -> None:
    """Write the synthetic log to ``path`` (full information, default seed) in a child process."""
    if fmt == "wide-csv":  # the RouterBench wide layout, written as bench_e2e.py writes it
        from bench_e2e import generate as generate_wide

        generate_wide(path, fmt, queries, models, words)
        return
    subprocess.run(
        [sys.executable, "-c", GENERATE, str(path), str(queries), str(models), str(words)],
        cwd=ROOT,
        check=True,
    )


def measure(path: Path, loader: str) -> dict[str, float]:
    """Load ``path`` in a child process with ``loader`` (columnar or per-row); times and peak RSS in MiB."""
    command = [sys.executable, "-c", CHILD, str(path), loader]
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)  # this child's rusage (ru_maxrss in KiB on Linux)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"loading {path} failed with status {child.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=11)
    parser.add_argument("--words", type=int, default=30, help="mean words per query")
    parser.add_argument("--format", choices=("jsonl", "csv", "parquet", "wide-csv"), default="jsonl")
    parser.add_argument("--paths", choices=("both", "columnar", "per-row"), default="both")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "routerl-bench",
        help="where the generated log lives (default: %(default)s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated file afterwards")
    args = parser.parse_args(argv)

    suffix = "csv" if args.format == "wide-csv" else args.format
    path = args.dir / f"synth-{args.queries}x{args.models}-w{args.words}-{args.format}.{suffix}"
    if not path.exists():
        generate(path, args.format, args.queries, args.models, args.words)
    loaders = ("columnar", "per-row") if args.paths == "both" else (args.paths,)
    try:
        results = {loader: measure(path, loader) for loader in loaders}
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
    for loader, result in results.items():
        print(
            f"load_log {path.name} ({loader}): {result['rows_read']} rows, {result['queries']} queries x "
            f"{result['models']} models, {result['rows_rejected']} rejected; {result['seconds']:.1f} s wall, "
            f"{result['cpu']:.1f} s CPU, peak RSS {result['peak_rss_mib']:.0f} MiB "
            f"({platform.python_version()}, {platform.machine()}; load average {os.getloadavg()[0]:.1f})"
        )
    if len(results) == 2:
        fast, slow = results["columnar"], results["per-row"]
        print(
            f"per-row / columnar: {slow['seconds'] / fast['seconds']:.1f}x wall, {slow['cpu'] / fast['cpu']:.1f}x CPU"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
