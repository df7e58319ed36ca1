"""End to end: a raw text log of N synthetic queries × K models to ``policy.pt``.

The log (:mod:`data.synth`, ~30 words per query, full information) is generated once in a child
process, untimed, in one of two raw text layouts (``--format``):

* ``wide-csv`` (default): the RouterBench wide layout, one CSV row per query with the prompt
  and, per model, its score column ``X`` and cost column ``X|total_cost`` (docs/contracts.md §1);
* ``jsonl``: the canonical long layout, one JSON line per (query, model) outcome with tokens,
  timestamp and expected quality (``python -m data synth``).

Then ``python train.py --data FILE --out DIR --quiet --set evaluation.bootstrap=0`` runs in a
fresh child (reading, validation, splitting, featurization, LinUCB fit, evaluation, export): its
wall time, CPU time and own peak RSS (``os.wait4``; the generator is a different process, so
its memory does not leak into the peak). The child times its stages itself (wall and CPU
seconds of the outermost call of each; no profiler overhead). ``--per-row`` loads with the
per-row path only (``data.loading.load_log(columnar=False)``), for a side-by-side. With
``--profile`` the same run is repeated under cProfile.

    python bench/bench_e2e.py --queries 100000              # full (and --queries 1000000)
    python bench/bench_e2e.py --queries 20000               # quick

Target for N = 1,000,000: <= 60 s and <= 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Stage → functions whose cumulative time is the stage (the outermost call counts).
STAGES = {
    "read + validate (load_log)": ("loading.py", "load_log"),
    "featurizer fit": ("featurizer.py", "fit"),
    "featurize (transform)": ("featurizer.py", "transform"),
    "agent fit (_learn)": ("run.py", "_learn"),
    "evaluate (largest evaluation/evaluate.py call)": ("evaluate.py", None),
    "export (build + save policy)": ("run.py", "_export"),
    "figures (frontier.png)": ("figures.py", None),
}

#: Run in the child: train.py's main with each stage's function wrapped in a wall / CPU timer.
TIMED_TRAIN = """
import json, os, runpy, sys, time
sys.path.insert(0, os.getcwd())
import data.featurizer, data.loading, data.log_builder, training.run
timings = {}
def timed(owner, name, stage):
    original = getattr(owner, name, None)
    if original is None:  # an older tree without this function
        return
    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            entry = timings.setdefault(stage, [0.0, 0.0])
            entry[0] += time.perf_counter() - wall
            entry[1] += time.process_time() - cpu
    setattr(owner, name, wrapper)
if os.environ.get("ROUTERL_BENCH_PER_ROW"):
    load = data.loading.load_log
    training.run.load_log = lambda *args, **kwargs: load(*args, columnar=False, **kwargs)
for owner, name, stage in [
    (training.run, "load_log", "read + validate (load_log, with fingerprint)"),
    (data.log_builder, "fingerprint", "  of which the fingerprint (data/fingerprint.py)"),
    (training.run, "split", "split"),
    (data.featurizer.TextFeaturizer, "fit", "featurizer fit (<= fit_sample texts)"),
    (data.featurizer.TextFeaturizer, "transform", "featurize (transform, all splits)"),
    (training.run, "learn", "agent fit (learn)"),
    (training.run, "evaluate_and_export", "evaluate + report + export"),
    (training.run, "export_policy", "export (build + save policy)"),
]:
    timed(owner, name, stage)
sys.argv = ["train.py", *sys.argv[1:]]
start = time.perf_counter(), time.process_time()
status = 1
try:
    runpy.run_path("train.py", run_name="__main__")
    status = 0
except SystemExit as done:
    status = done.code or 0
finally:
    timings["total (train.py)"] = [time.perf_counter() - start[0], time.process_time() - start[1]]
    with open(os.environ["ROUTERL_BENCH_STAGES"], "w") as out:
        json.dump(timings, out)
sys.exit(status)
"""

#: Run in a child: the synthetic log in the RouterBench wide layout (one CSV row per query).
WIDE_CSV = """
import csv, sys
from data.synth import SynthConfig, generate
path, queries, models, words = sys.argv[1], *map(int, sys.argv[2:])
log = generate(SynthConfig(queries=queries, models=models, words_per_query=words))
names = log.model_names
header = ["", "sample_id", "prompt", "eval_name"] + [c for m in names for c in (m, m + "|total_cost")]
with open(path, "w", encoding="utf-8", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(header)
    for start in range(0, len(log.queries), 50000):
        stop = min(start + 50000, len(log.queries))
        quality, cost = log.quality[start:stop].tolist(), log.cost[start:stop].tolist()
        writer.writerows(
            [str(i), log.query_ids[i], log.queries[i], "synth"] + [repr(v) for pair in zip(q, c) for v in pair]
            for i, q, c in zip(range(start, stop), quality, cost)
        )
"""


def generate(log: Path, fmt: str, queries: int, models: int, words: int) -> None:
    """Write the synthetic log in ``fmt`` (a child process; untimed)."""
    start = time.perf_counter()
    if fmt == "jsonl":
        command = ["-m", "data", "synth", "--queries", str(queries), "--models", str(models)]
        command += ["--words-per-query", str(words), "--out", str(log)]
    else:
        command = ["-c", WIDE_CSV, str(log), str(queries), str(models), str(words)]
    subprocess.run([sys.executable, *command], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"generated {log} in {time.perf_counter() - start:.1f} s")


def run_child(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, int]:
    """Wall seconds, CPU seconds (user + system), the child's own peak RSS in MiB, its exit status."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    cpu = usage.ru_utime + usage.ru_stime
    return time.perf_counter() - start, cpu, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def stage_breakdown(profile: Path) -> list[tuple[str, float]]:
    """Cumulative seconds per stage from a cProfile dump (functions matched by file and name)."""
    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    total = max(value[3] for value in stats.values())
    rows: list[tuple[str, float]] = []
    for stage, (filename, name) in STAGES.items():
        best = 0.0
        for (file, _, function), (_, _, _, cumulative, _) in stats.items():
            if file.endswith(filename) and (name is None or function == name):
                best = max(best, cumulative)
        rows.append((stage, best))
    rows.append(("total (train.py main)", total))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=11)
    parser.add_argument("--words", type=int, default=30)
    parser.add_argument("--format", choices=("wide-csv", "jsonl"), default="wide-csv", help="raw text log layout")
    parser.add_argument("--per-row", action="store_true", help="load with the per-row path only (columnar=False)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "routerl-bench")
    parser.add_argument("--profile", action="store_true", help="also run once under cProfile: time per stage")
    parser.add_argument("--keep", action="store_true", help="keep the generated log")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    suffix = ".csv" if args.format == "wide-csv" else ".jsonl"
    log = args.dir / f"e2e-{args.queries}x{args.models}-w{args.words}{suffix}"
    if not log.exists():
        generate(log, args.format, args.queries, args.models, args.words)
    size = log.stat().st_size / 2**20
    out = args.dir / f"e2e-run-{args.queries}"
    train = ["--data", str(log), "--out", str(out), "--quiet", "--overwrite", "--set", "evaluation.bootstrap=0"]
    print("$ python train.py " + " ".join(train) + ("  (per-row loading)" if args.per_row else ""))
    stages = args.dir / f"e2e-{args.queries}-stages.json"
    env = {**os.environ, "ROUTERL_BENCH_STAGES": str(stages)}
    if args.per_row:
        env["ROUTERL_BENCH_PER_ROW"] = "1"
    seconds, cpu, peak, status = run_child([sys.executable, "-c", TIMED_TRAIN, *train], env)
    if status != 0:
        raise SystemExit(f"train.py failed with status {status}")
    policy = out / "policy.pt"
    print(
        f"N = {args.queries:,} queries x {args.models} models ({args.queries * args.models:,} outcomes, "
        f"{size:.0f} MiB {args.format}): {seconds:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak:.0f} MiB, "
        f"policy.pt {policy.stat().st_size / 1e6:.2f} MB; load average {os.getloadavg()[0]:.1f}"
    )
    print("\n| stage | wall s | CPU s |\n|---|---|---|")
    for stage, (wall, stage_cpu) in json.loads(stages.read_text()).items():
        print(f"| {stage} | {wall:.1f} | {stage_cpu:.1f} |")
    if args.profile:
        dump = args.dir / f"e2e-{args.queries}.prof"
        seconds_p, _, _, status = run_child([sys.executable, "-m", "cProfile", "-o", str(dump), "train.py", *train])
        if status != 0:
            raise SystemExit(f"profiled train.py failed with status {status}")
        print(
            f"\nprofiled run: {seconds_p:.1f} s (cProfile adds overhead)\n\n| stage | seconds (cumulative) |\n|---|---|"
        )
        for stage, value in stage_breakdown(dump):
            print(f"| {stage} | {value:.1f} |")
    if not args.keep:
        log.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
