"""What self-tuning costs: ``train.py`` with and without it on RouterBench, and the tuning alone at growing log sizes.

1. RouterBench: ``configs/routerbench.yaml`` trained in this process with tuning on and with
   ``--no-tune`` (``tuning.enabled=false``), alternately, ``--repeats`` times each; the median wall
   time of each and their ratio, with the held-out AIQ of both (issue #16's budget: the tuning
   adds at most 3× the untuned training time).
2. Scale: :func:`training.tuning.tune` alone on synthetic logs of ``--sizes`` queries (data/synth),
   on ``blas_threads`` BLAS threads as in ``train.py``: beyond ``tuning.max_queries`` (20,000) only
   that many queries are cross-validated, so its time stops growing with the log; what is left
   grows with hashing the query ids.

    python bench/bench_tuning.py --data ../shared/data/routerbench --repeats 3 --sizes 2000,20000,200000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data.synth.config import SynthConfig  # noqa: E402
from data.synth.generator import generate  # noqa: E402
from training.config import load_config  # noqa: E402
from training.run import prepare_directory, train  # noqa: E402
from training.tuning import tune  # noqa: E402


def timed_run(data: str, tuned: bool, out: Path) -> tuple[float, float, dict[str, object]]:
    """Wall seconds, held-out AIQ and the tuning section of one run of configs/routerbench.yaml."""
    overrides = [] if tuned else ["tuning.enabled=false"]
    config = load_config(ROOT / "configs" / "routerbench.yaml", overrides, cli_data=data)
    prepare_directory(out, overwrite=True)
    started = time.perf_counter()
    report = train(config, out, quiet=True).report
    return time.perf_counter() - started, report["frontier"]["aiq"], report["tuning"]


def routerbench(data: str, repeats: int) -> None:
    """Tuned and untuned runs alternately; medians and the ratio."""
    times: dict[bool, list[float]] = {True: [], False: []}
    aiq: dict[bool, float] = {}
    chosen: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            for tuned in (False, True):
                seconds, aiq[tuned], tuning = timed_run(data, tuned, Path(folder) / f"run-{repeat}-{tuned}")
                times[tuned].append(seconds)
                chosen = tuning.get("chosen", chosen)  # type: ignore[assignment]
    untuned, tuned_time = statistics.median(times[False]), statistics.median(times[True])
    print("| run | median wall s | held-out AIQ |\n|---|---|---|")
    print(f"| --no-tune | {untuned:.2f} | {aiq[False]:.4f} |")
    print(f"| tuned | {tuned_time:.2f} | {aiq[True]:.4f} |")
    print(
        f"\ntuned / untuned = {tuned_time / untuned:.2f}x (the tuning adds {tuned_time / untuned - 1:.2f}x); "
        f"chosen {chosen}"
    )


def scale(sizes: list[int]) -> None:
    """tune() alone on synthetic logs of each size, on train.py's BLAS threads (many are slow on small matrices)."""
    config = load_config(None, [])
    print("\n| queries | cross-validated | tune() s |\n|---|---|---|")
    for size in sizes:
        log = generate(SynthConfig(queries=size, seed=0)).routing_log()
        started = time.perf_counter()
        with threadpool_limits(limits=config.blas_threads, user_api="blas"):
            tuning = tune(config, log)
        print(f"| {size} | {tuning.report['queries']} | {time.perf_counter() - started:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "routerbench"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="2000,20000,200000")
    args = parser.parse_args()
    routerbench(args.data, args.repeats)
    scale([int(size) for size in args.sizes.split(",")])


if __name__ == "__main__":
    main()
