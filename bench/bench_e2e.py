"""End to end: a raw JSONL log of N synthetic queries × K models to ``policy.pt``.

The log (``python -m data synth``, ~30 words per query, full information) is generated once in a
child process; then ``python train.py --data FILE --out DIR --quiet --set evaluation.bootstrap=0``
runs in a fresh child (reading, validation, splitting, featurization, LinUCB fit, evaluation,
export): its wall time and its own peak RSS (``ru_maxrss`` from ``os.wait4``; the generator is a
different process, so its memory does not leak into the peak). With ``--profile`` the same run is
repeated under cProfile and its time split into stages.

    python bench/bench_e2e.py --queries 100000              # full (and --queries 1000000 once)
    python bench/bench_e2e.py --queries 20000               # quick

Target for N = 1,000,000: <= 60 s and <= 2 GB.
"""

from __future__ import annotations

import argparse
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


def run_child(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds, the child's own peak RSS in MiB, and its exit status."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


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
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "routerl-bench")
    parser.add_argument("--profile", action="store_true", help="also run once under cProfile: time per stage")
    parser.add_argument("--keep", action="store_true", help="keep the generated log")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    log = args.dir / f"e2e-{args.queries}x{args.models}-w{args.words}.jsonl"
    if not log.exists():
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "data",
                "synth",
                "--queries",
                str(args.queries),
                "--models",
                str(args.models),
                "--words-per-query",
                str(args.words),
                "--out",
                str(log),
            ],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"generated {log} in {time.perf_counter() - start:.1f} s")
    size = log.stat().st_size / 2**20
    out = args.dir / f"e2e-run-{args.queries}"
    train = [
        "train.py",
        "--data",
        str(log),
        "--out",
        str(out),
        "--quiet",
        "--overwrite",
        "--set",
        "evaluation.bootstrap=0",
    ]
    print("$ python " + " ".join(train))
    seconds, peak, status = run_child([sys.executable, *train])
    if status != 0:
        raise SystemExit(f"train.py failed with status {status}")
    policy = out / "policy.pt"
    print(
        f"N = {args.queries:,} queries x {args.models} models ({args.queries * args.models:,} rows, "
        f"{size:.0f} MiB JSONL): {seconds:.1f} s, peak RSS {peak:.0f} MiB, policy.pt "
        f"{policy.stat().st_size / 1e6:.2f} MB"
    )
    if args.profile:
        dump = args.dir / f"e2e-{args.queries}.prof"
        seconds_p, _, status = run_child([sys.executable, "-m", "cProfile", "-o", str(dump), *train])
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
