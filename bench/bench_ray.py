"""Benchmark the distributed LinUCB fit (``train.py --ray``) against the single process, on one machine.

What: a synthetic full-information log (:mod:`data.synth`, ~30 words per query) written as
Parquet shards (generation not timed; a query's rows may straddle two shards). Each
configuration runs in a fresh child process:

* ``single``: the single-process path of ``train.py`` up to the fitted agent: ``load_log`` →
  split → featurizer fit → features → ``LinUCB.fit`` (evaluation and export are the same code in
  both paths and are left out);
* ``ray-N``: a local Ray cluster of N CPUs (no dashboard) and
  :func:`training.distributed.fit_statistics` with N workers, then the solve.

Reported: wall time per stage, the statistics blocks' own seconds (featurize + reduce, on their
actors), the driver's peak RSS, the CPU seconds of the single process, and the agreement of the
two fits (max |Δθ|). On a 2-core machine Ray cannot show scaling, only its overhead.

    python bench/bench_ray.py --queries 100000 --shards 8 --workers 1,2
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

GENERATE = """
import sys
import pyarrow.parquet as pq
from data.synth import SynthConfig, generate, write
directory, queries, models, words, shards = sys.argv[1], *map(int, sys.argv[2:])
whole = f"{directory}/whole.parquet"
write(generate(SynthConfig(queries=queries, models=models, words_per_query=words)), whole)
table = pq.read_table(whole)
step = -(-table.num_rows // shards)
for number in range(shards):
    pq.write_table(table.slice(number * step, step), f"{directory}/shards/part-{number:03d}.parquet")
"""

SINGLE = """
import json, os, resource, sys, time
import numpy as np
from agents.linucb import LinUCB
from data.loading import load_log
from data.splits import split
from training.config import load_config
from training.run import fit_featurizer
config = load_config(None, [f"data.path={sys.argv[1]}"])
seconds = {}
def timed(name, stage):
    start = time.perf_counter(); result = stage(); seconds[name] = round(time.perf_counter() - start, 3)
    return result
log = timed("read and validate", lambda: load_log(config.data.path).log)
splits = timed("split", lambda: split(log, config.data.fractions, config.seed))
train = log.subset(splits.train)
featurizer = timed("fit featurizer", lambda: fit_featurizer(config, train))
features = timed("features", lambda: featurizer.transform(train.queries))
agent = timed("fit", lambda: LinUCB(log.n_models, featurizer.dimension).fit(features, train.quality, train.cost))
cpu = os.times()
np.save(sys.argv[2], agent.linear_map())
print(json.dumps({"seconds": seconds, "total": round(sum(seconds.values()), 3), "cpu": round(cpu.user + cpu.system, 1),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                  "queries": log.n_queries, "rows": log.stats.rows_read}))
"""

ON_RAY = """
import json, resource, sys, time
import numpy as np
import ray
from agents.linucb import linucb_from_statistics
from training.config import load_config
from training.distributed import connect, fit_statistics
workers = int(sys.argv[3])
start = time.perf_counter()
ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
         object_store_memory=int(sys.argv[4]) * 1024**2)
connect(None, progress=False)
started = time.perf_counter() - start
config = load_config(None, [f"data.path={sys.argv[1]}"])
start = time.perf_counter()
fit = fit_statistics(config, workers=workers)
agent = linucb_from_statistics(fit.statistics)
total = time.perf_counter() - start
np.save(sys.argv[2], agent.linear_map())
info = fit.info
print(json.dumps({"seconds": info.stage_seconds, "total": round(total, 3), "cluster_start": round(started, 1),
                  "block_seconds": info.block_seconds, "read_blocks": info.read_blocks,
                  "workers_used": len(info.worker_pids),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                  "queries": fit.inputs.data["queries"], "rows": fit.inputs.data["rows_read"]}))
ray.shutdown()
"""


def child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter at the repository root; its last stdout line is JSON."""
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    """Generate the shards, run every configuration, print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=11)
    parser.add_argument("--words", type=int, default=30)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to run (comma-separated)")
    parser.add_argument("--object-store-mib", type=int, default=2048)
    parser.add_argument("--keep", type=Path, help="generate into / reuse this directory")
    args = parser.parse_args()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="bench-ray-"))
    shards = directory / "shards"
    if not shards.is_dir():
        shards.mkdir(parents=True)
        child_args = [str(directory), str(args.queries), str(args.models), str(args.words), str(args.shards)]
        subprocess.run([sys.executable, "-c", GENERATE, *child_args], cwd=ROOT, check=True)
        (directory / "whole.parquet").unlink()
    results = {"single": child(SINGLE, str(shards), str(directory / "single.npy"))}
    for workers in [int(w) for w in args.workers.split(",")]:
        out = str(directory / f"ray-{workers}.npy")
        results[f"ray-{workers}"] = child(ON_RAY, str(shards), out, str(workers), str(args.object_store_mib))
    import numpy as np

    reference = np.load(directory / "single.npy")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load average {os.getloadavg()}"
    )
    print(f"log: {args.queries} queries x {args.models} models in {args.shards} Parquet shards\n")
    print(
        "| run | total s | "
        + " | ".join(sorted({k for r in results.values() for k in r["seconds"]}))
        + " | peak RSS (driver) | max abs diff of theta |"
    )
    for name, result in results.items():
        theta = np.load(directory / f"{name}.npy")
        stages = sorted({k for r in results.values() for k in r["seconds"]})
        cells = " | ".join(str(result["seconds"].get(stage, "")) for stage in stages)
        difference = np.abs(theta - reference).max()
        print(f"| {name} | {result['total']} | {cells} | {result['peak_rss_mib']} MiB | {difference:.1e} |")
    print()
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
