"""Load-test ``POST /route`` of the real server on loopback: throughput and p50/p90/p99 latency.

Why: the service should take >= 1,000 routing requests/s at p99 <= 20 ms with one server
process. This script starts ``serve.py`` (access log off, ``--workers`` processes) and drives it
from separate client processes (``--clients``) for ``--seconds`` after a short warm-up. The
client is deliberately lean, so that on a small machine it leaves the CPU to the server: raw
asyncio streams (uvloop when installed), ``--connections`` keep-alive HTTP/1.1 connections per
process, each with one request in flight, and every request prebuilt as bytes with a distinct
~30-word query. It reports the server's CPU time per request (from ``/proc/<pid>/stat``, the
server and its worker processes; independent of other load on a shared machine: one free core
serves about 1e6 / that many requests per second), the clients' own CPU time per request, and
the policy's scoring alone in this process, to show how much of a request is scoring.

    python bench/bench_serve.py --seconds 60
    python bench/bench_serve.py --seconds 60 --workers 2
    python bench/bench_serve.py --seconds 15 --decision-log     # the cost of logging every decision
    python bench/bench_serve.py --seconds 15 --budget 0.0003    # the cost of the live budget
    python bench/bench_serve.py --seconds 15 --engine torchscript   # against the default native engine
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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    """``count`` distinct queries of about ``words`` words (the first word is the query's number)."""
    rng = random.Random(seed)
    return [f"{i} " + " ".join(rng.choice(WORDS) for _ in range(words - 1)) for i in range(count)]


def _request(host: str, target: str, text: str) -> bytes:
    """One complete HTTP/1.1 keep-alive request for ``target`` (``route``: ``POST /route``)."""
    if target == "healthz":
        return f"GET /healthz HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()
    body = json.dumps({"query": text}).encode()
    head = f"POST /route HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    head += "\r\n"
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one whole response (it must carry ``content-length``); return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if match is None:
        raise RuntimeError(f"response without content-length: {head[:200]!r}")
    await reader.readexactly(int(match.group(1)))
    return status


async def _drive(url: str, requests: list[bytes], connections: int, warmup: float, seconds: float) -> dict[str, Any]:
    """Keep ``connections`` connections busy; latencies (ms) of the requests sent after the warm-up."""
    parts = urlsplit(url)
    latencies: list[float] = []
    errors = sent_total = 0
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds

    async def connection(offset: int) -> None:
        nonlocal errors, sent_total
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        i = offset
        while True:
            sent = time.perf_counter()
            if sent >= stop_at:
                break
            writer.write(requests[i % len(requests)])
            status = await _read_response(reader)
            done = time.perf_counter()
            i += connections
            sent_total += 1
            if sent >= measure_from:
                latencies.append((done - sent) * 1000)
                errors += status != 200
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(connection(k) for k in range(connections)))
    return {"latencies_ms": latencies, "errors": errors, "sent": sent_total}


def _client(args: tuple[str, str, int, int, float, float]) -> dict[str, Any]:
    """One client process: its own distinct queries, prebuilt requests and event loop."""
    url, target, index, connections, warmup, seconds = args
    host = urlsplit(url).netloc
    requests = [_request(host, target, f"c{index} {text}") for text in queries(seed=index, count=20_000)]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    cpu_before = time.process_time()
    result = asyncio.run(_drive(url, requests, connections, warmup, seconds))
    result["cpu_s"] = time.process_time() - cpu_before
    return result


def _start_server(
    policy: Path, workers: int, decision_log: Path | None, budget: float | None, engine: str
) -> tuple[subprocess.Popen[str], str]:
    """Start ``serve.py --port 0 --engine engine`` without access log (with ``decision_log`` and a
    live ``budget`` if given); return it and its URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "serve.py",
            "--policy",
            str(policy),
            "--port",
            "0",
            "--no-access-log",
            "--engine",
            engine,
            *(["--workers", str(workers)] if workers > 1 else []),
            *(["--decision-log", str(decision_log)] if decision_log else []),
            *(["--budget", str(budget)] if budget is not None else []),
        ],
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


def _tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and its live child processes (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += _tree_cpu_seconds(int(child))
    return total


def _scoring_only(policy: Path, engine: str, count: int = 2000) -> dict[str, float]:
    """Median and p99 (µs) of scoring one query in-process, one thread, with ``engine``, as the server does."""
    import torch

    sys.path.insert(0, str(ROOT))
    from serving.policy import load_engine_policy

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = load_engine_policy(policy, engine)
    texts = queries(seed=99, count=count)
    times = []
    for text in texts:
        start = time.perf_counter()
        loaded.scores([text], 300.0)
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
    parser.add_argument("--workers", type=int, default=1, help="server processes (serve.py --workers)")
    parser.add_argument("--clients", type=int, default=1, help="client processes (default: 1)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections per client (default: 8)")
    parser.add_argument("--decision-log", action="store_true", help="serve with a decision log (in a temporary folder)")
    parser.add_argument("--budget", type=float, metavar="USD", help="serve with a live budget (serve.py --budget)")
    parser.add_argument(
        "--engine", choices=("native", "torchscript"), default="native", help="serve.py --engine (default: %(default)s)"
    )
    parser.add_argument(
        "--target",
        choices=("route", "healthz"),
        default="route",
        help="POST /route, or GET /healthz to time the HTTP stack without scoring",
    )
    args = parser.parse_args()
    if not args.policy.is_file():
        raise SystemExit(f"{args.policy} not found; run `python train.py` first or pass --policy")

    load_before = os.getloadavg()
    scoring = _scoring_only(args.policy, args.engine)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    decision_log = log_dir / "decisions.jsonl" if args.decision_log else None
    server, url = _start_server(args.policy, args.workers, decision_log, args.budget, args.engine)
    try:
        cpu_before = _tree_cpu_seconds(server.pid)
        jobs = [(url, args.target, i, args.connections, args.warmup, args.seconds) for i in range(args.clients)]
        with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
            results = pool.map(_client, jobs)
        server_cpu = _tree_cpu_seconds(server.pid) - cpu_before
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(log_dir)
    latencies = sorted(x for r in results for x in r["latencies_ms"])
    quantiles = statistics.quantiles(latencies, n=100)
    sent = sum(r["sent"] for r in results)
    print(
        json.dumps(
            {
                "machine": {"nproc": os.cpu_count(), "cpu": _cpu_model(), "python": platform.python_version()},
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "load_average_before": [round(x, 2) for x in load_before],
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "target": args.target,
                "seconds": args.seconds,
                "workers": args.workers,
                "decision_log": args.decision_log,
                "budget": args.budget,
                "engine": args.engine,
                "clients": args.clients,
                "connections": args.connections,
                "requests": len(latencies),
                "errors": sum(r["errors"] for r in results),
                "throughput_rps": round(len(latencies) / args.seconds, 1),
                "p50_ms": round(quantiles[49], 2),
                "p90_ms": round(quantiles[89], 2),
                "p99_ms": round(quantiles[98], 2),
                # CPU per request (warm-up included): the server's is what one free core could do
                "server_cpu_us_per_request": round(server_cpu / sent * 1e6, 1),
                "client_cpu_us_per_request": round(sum(r["cpu_s"] for r in results) / sent * 1e6, 1),
                "scoring_only": {k: round(v, 1) for k, v in scoring.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
