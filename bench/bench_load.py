"""Benchmark ``load_log`` on a large synthetic log: wall time and peak memory of the load alone.

Why: CONTRACTS.md promises that 1,000,000 queries × 11 models load in under 2 GB. The log is
generated with :mod:`data.synth` (once; reused when the file exists), then loaded in a fresh
child process so that the peak resident set size (``ru_maxrss`` of the children) measures the
load and nothing else: not the generator, not this process.

    python bench/bench_load.py --queries 100000 --models 11 --words 30 --format jsonl
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Run in the child: load the log and print what it holds as one JSON line.
CHILD = """
import json, sys, time
from data.loading import load_log
start = time.perf_counter()
loaded = load_log(sys.argv[1])
seconds = time.perf_counter() - start
stats = loaded.log.stats
print(json.dumps({"seconds": seconds, "queries": loaded.log.n_queries, "models": loaded.log.n_models,
                  "rows_read": stats.rows_read, "rows_rejected": stats.rows_rejected}))
"""


def generate(path: Path, queries: int, models: int, words: int) -> None:
    """Write the synthetic log to ``path`` (full information, default seed)."""
    sys.path.insert(0, str(ROOT))
    from data.synth import SynthConfig, generate, write

    start = time.perf_counter()
    rows = write(generate(SynthConfig(queries=queries, models=models, words_per_query=words)), path)
    size = path.stat().st_size / 2**20
    print(f"generated {path} ({rows} rows, {size:.0f} MiB) in {time.perf_counter() - start:.1f} s",
          flush=True)


def measure(path: Path) -> dict[str, float]:
    """Load ``path`` in a child process; its wall time (load only) and peak RSS in MiB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, check=True,
                          capture_output=True, text=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kib <= before:  # ru_maxrss is the max over all children; none ran before here
        raise RuntimeError("could not measure the child's peak memory")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["peak_rss_mib"] = peak_kib / 1024
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=11)
    parser.add_argument("--words", type=int, default=30, help="mean words per query")
    parser.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "routerl-bench",
                        help="where the generated log lives (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the generated file afterwards")
    args = parser.parse_args(argv)

    path = args.dir / f"synth-{args.queries}x{args.models}-w{args.words}.{args.format}"
    if not path.exists():
        generate(path, args.queries, args.models, args.words)
    try:
        result = measure(path)
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
    print(f"load_log {path.name}: {result['rows_read']} rows, {result['queries']} queries x "
          f"{result['models']} models, {result['rows_rejected']} rejected; "
          f"{result['seconds']:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB "
          f"({platform.python_version()}, {platform.machine()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
