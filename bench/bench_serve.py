"""Load-test ``POST /route`` of the real server on loopback: throughput and p50/p99 latency.

Why: the service should take >= 1,000 routing requests/s at p99 <= 20 ms with one server
process. This script starts ``serve.py`` (access log off) and drives it from separate client
processes (``--clients``, each an ``httpx`` async loop with ``--concurrency`` requests in
flight) with distinct ~30-word queries for ``--seconds`` after a short warm-up. It also times
the policy's scoring alone in this process, to show how much of a request is scoring and how
much is the HTTP stack, and the server's CPU time per request (independent of other load on a
shared machine: one free core could serve about 1e6 / that many requests per second).

    python bench/bench_serve.py --policy runs/default/policy.pt --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "for",
    "on",
    "with",
    "how",
    "what",
    "why",
    "explain",
    "write",
    "code",
    "python",
    "function",
    "list",
    "sort",
    "prove",
    "theorem",
    "prime",
    "number",
    "capital",
    "city",
    "france",
    "history",
    "war",
    "summarize",
    "article",
    "poem",
    "story",
    "translate",
    "german",
    "french",
    "english",
    "sql",
    "query",
    "database",
    "table",
    "join",
    "index",
    "cache",
    "latency",
    "model",
    "router",
    "cost",
    "quality",
    "token",
    "budget",
    "math",
    "integral",
    "derivative",
    "matrix",
    "vector",
    "graph",
    "tree",
    "search",
    "recipe",
    "bread",
    "flour",
    "water",
    "salt",
    "travel",
    "plan",
    "week",
    "japan",
    "tokyo",
    "kyoto",
    "email",
    "reply",
    "polite",
    "meeting",
]


def queries(seed: int, count: int, words: int = 30) -> list[str]:
    """``count`` distinct queries of about ``words`` words."""
    rng = random.Random(seed)
    return [f"{i} " + " ".join(rng.choice(WORDS) for _ in range(words - 1)) for i in range(count)]


async def _drive(
    url: str, target: str, texts: list[str], concurrency: int, warmup: float, seconds: float
) -> dict[str, Any]:
    """Keep ``concurrency`` requests in flight; latencies (ms) of those after the warm-up."""
    latencies: list[float] = []
    errors = sent_total = 0
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker(offset: int) -> None:
            nonlocal errors, sent_total
            i = offset
            while True:
                sent = time.perf_counter()
                if sent >= stop_at:
                    return
                if target == "healthz":
                    response = await client.get("/healthz")
                else:
                    response = await client.post("/route", json={"query": texts[i % len(texts)]})
                done = time.perf_counter()
                i += concurrency
                sent_total += 1
                if sent >= measure_from:
                    latencies.append((done - sent) * 1000)
                    errors += response.status_code != 200

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return {"latencies_ms": latencies, "errors": errors, "sent": sent_total}


def _client(args: tuple[str, str, int, int, float, float]) -> dict[str, Any]:
    """One client process: its own queries (distinct across processes) and event loop."""
    url, target, index, concurrency, warmup, seconds = args
    texts = queries(seed=index, count=20_000)
    texts = [f"c{index} {text}" for text in texts]
    return asyncio.run(_drive(url, target, texts, concurrency, warmup, seconds))


def _start_server(policy: Path) -> tuple[subprocess.Popen[str], str]:
    """Start ``serve.py --port 0`` without access log; return it and its URL."""
    process = subprocess.Popen(
        [sys.executable, "serve.py", "--policy", str(policy), "--port", "0", "--no-access-log"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        match = re.match(r"routerl serving on (\S+)", line)
        if match:
            return process, match.group(1)
    raise SystemExit(f"serve.py exited with {process.wait()} before announcing its address")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scoring_only(policy: Path, count: int = 2000) -> dict[str, float]:
    """Median and p99 (µs) of scoring one query in-process, one thread, as the server does."""
    import torch

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(policy))
    texts = queries(seed=99, count=count)
    times = []
    with torch.inference_mode():
        for text in texts:
            start = time.perf_counter()
            module.scores([text], 300.0)
            times.append((time.perf_counter() - start) * 1e6)
    times.sort()
    return {"p50_us": times[len(times) // 2], "p99_us": times[int(len(times) * 0.99)]}


def _cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    """Run the benchmark and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, default=ROOT / "runs" / "default" / "policy.pt")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured duration (default: 60)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured warm-up seconds")
    parser.add_argument("--clients", type=int, default=1, help="client processes (default: 1)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per client")
    parser.add_argument(
        "--target",
        choices=("route", "healthz"),
        default="route",
        help="POST /route, or GET /healthz to time the HTTP stack without scoring",
    )
    args = parser.parse_args()
    if not args.policy.is_file():
        raise SystemExit(f"{args.policy} not found; run `python train.py` first or pass --policy")

    scoring = _scoring_only(args.policy)
    server, url = _start_server(args.policy)
    try:
        cpu_before = _cpu_seconds(server.pid)
        jobs = [(url, args.target, i, args.concurrency, args.warmup, args.seconds) for i in range(args.clients)]
        with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
            results = pool.map(_client, jobs)
        server_cpu = _cpu_seconds(server.pid) - cpu_before
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies = sorted(x for r in results for x in r["latencies_ms"])
    quantiles = statistics.quantiles(latencies, n=100)
    print(
        json.dumps(
            {
                "machine": {
                    "nproc": os.cpu_count(),
                    "cpu": _cpu_model(),
                    "python": platform.python_version(),
                },
                "date": time.strftime("%Y-%m-%d"),
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "target": args.target,
                "seconds": args.seconds,
                "clients": args.clients,
                "concurrency": args.concurrency,
                "requests": len(latencies),
                "errors": sum(r["errors"] for r in results),
                "throughput_rps": round(len(latencies) / args.seconds, 1),
                "p50_ms": round(quantiles[49], 2),
                "p90_ms": round(quantiles[89], 2),
                "p99_ms": round(quantiles[98], 2),
                # CPU the server spent per request (warm-up included): what one free core could do
                "server_cpu_us_per_request": round(server_cpu / sum(r["sent"] for r in results) * 1e6, 1),
                "scoring_only": {k: round(v, 1) for k, v in scoring.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
