"""Learning in production (issue 17): the follower's promotion gate, its power, and its regret under drift.

An offline simulation of ``serve.py --decision-log`` followed by ``python -m training.follow``: a
simulated service decides each round with the policy in the follower's ``out/policy.pt``, ε-greedy
with exact propensities (:class:`serving.decisions.Exploration`, ε = ``--epsilon``), and writes the
decision and its feedback with :class:`serving.decisions.DecisionLog`; every ``--chunk`` rounds the
real :class:`training.follower.Follower` takes one ``step()``, so a promoted policy decides the
rounds that follow. The truth is known: on the synthetic world (``data.synth``, seed 0: the demo
log's) it is ``expected_quality`` (the realised quality of a round is a fresh Bernoulli draw); on
RouterBench it is the logged outcome. A policy's **true value** is its mean of
E[quality] − w · cost over the population the stream is drawn from, at the policy's default cost
weight w.

1. **False promotions.** The follower starts from a good policy (LinUCB on the training split,
   60%, of a 10,000-query synthetic log) and its own statistics; the stream is i.i.d. from the
   same world (the other 40% of the queries). For each margin, ``--seeds`` simulations of
   ``--rounds`` rounds: gate decisions, promotions, the share of simulations with any promotion,
   and the honest number, *false* promotions: of a policy whose true value is not above the one
   it replaced. **1b**, the hard case: the same policy in service, but the follower's statistics
   emptied (its state right after a drift alarm with ``drift.keep`` = 0): its candidates, learned
   from the bandit rounds alone, differ from the incumbent on most queries and are truly worse.
2. **Power.** The same from a stale policy (trained on 1% of the log, about 100 queries): how
   often and after how many rounds a truly better policy is promoted, and the true value gained.
3. **Cumulative regret** (against the per-query oracle, in expected reward) at checkpoints of
   one stream per seed: (a) the synthetic world whose models' quality columns are rotated by one
   at ``--drift-round`` (each model takes its neighbour's quality: the good policy becomes
   wrong), from the good policy; (b) RouterBench replay (i.i.d. from the queries the starting
   policy did not train on), from a policy trained on 15% of it. Live loop (ε-greedy as served)
   vs the frozen starting policy (greedy, and ε-greedy: the same exploration without learning)
   vs the best single model in hindsight; the rounds of drift alarms and of promotions, with the
   change of true value each promotion made (on the truth in force at its round).

    python bench/bench_follow.py             # default: about 12 minutes on 2 cores
    python bench/bench_follow.py --quick     # about a minute
    python bench/bench_follow.py --parts 3a --set drift.tolerance=0.02   # one part, other follower settings
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binomtest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data.loading import load_log  # noqa: E402
from data.routing_log import RoutingLog  # noqa: E402
from data.splits import split  # noqa: E402
from data.synth.config import SynthConfig  # noqa: E402
from data.synth.generator import generate  # noqa: E402
from data.synth.writers import write  # noqa: E402
from policies.artifact import load_policy  # noqa: E402
from serving.decisions import DecisionLog, Exploration  # noqa: E402
from training.cli import add_set_argument  # noqa: E402
from training.config import load_config  # noqa: E402
from training.follower import FollowConfig, Follower, load_follow_config  # noqa: E402
from training.live_learner import LEARNER_FILE, STATISTICS  # noqa: E402
from training.promotion import PolicyHistory  # noqa: E402
from training.run import prepare_directory, train  # noqa: E402


@dataclass(frozen=True)
class Truth:
    """The population a stream is drawn from: query texts, E[quality] and cost per (query, model)."""

    models: list[str]
    queries: list[str]
    expected: np.ndarray  # (N, K)
    cost: np.ndarray  # (N, K)
    draw: bool  # realised quality ~ Bernoulli(expected) (synthetic), else the logged outcome itself

    def aligned(self, models: list[str]) -> Truth:
        """The same truth with its columns in the order of ``models`` (a policy's order)."""
        order = [self.models.index(model) for model in models]
        return Truth(list(models), self.queries, self.expected[:, order], self.cost[:, order], self.draw)

    def rotated(self) -> Truth:
        """The truth after part 3a's drift: each model takes its neighbour's quality (columns rotated by one)."""
        return Truth(self.models, self.queries, np.roll(self.expected, 1, axis=1), self.cost, self.draw)

    def value(self, choices: np.ndarray, weight: float) -> float:
        """True value of a policy that picks ``choices`` (N,) on the population."""
        rows = np.arange(len(choices))
        return float((self.expected[rows, choices] - weight * self.cost[rows, choices]).mean())


@dataclass(frozen=True)
class Stream:
    """The rounds of one simulation: which population query comes, and the truth at that round."""

    rows: np.ndarray  # (T,) index into Truth.queries
    expected: np.ndarray  # (T, K): Truth.expected[rows], columns rotated after a drift
    cost: np.ndarray  # (T, K)

    def reward(self, weight: float) -> np.ndarray:
        """(T, K) expected reward of each model at each round."""
        return self.expected - weight * self.cost


def iid_stream(truth: Truth, rounds: int, seed: int, drift_round: int | None = None) -> Stream:
    """``rounds`` queries drawn with replacement; after ``drift_round`` the quality columns are rotated by one."""
    rows = np.random.default_rng(seed).integers(0, len(truth.queries), size=rounds)
    expected = truth.expected[rows]
    if drift_round is not None:
        expected = np.vstack([expected[:drift_round], truth.rotated().expected[rows[drift_round:]]])
    return Stream(rows, expected, truth.cost[rows])


@dataclass
class Trace:
    """What one followed simulation did."""

    weight: float  # the policies' default cost weight: the rewards' and true values' weight
    served: np.ndarray  # (T,) expected reward of the service's ε-greedy distribution per round
    events: list[dict]
    choices: dict[int, np.ndarray]  # version -> its greedy choice per population query
    values: dict[int, float]  # version -> true value on the population


#: Scores of a policy file on a population, by (sha256 of the file, population size): the starting
#: policy of every simulation is scored once per process.
_SCORED: dict[tuple[str, int], np.ndarray] = {}


class Service:
    """serve.py's decisions and feedback, simulated: ε-greedy over the scores of the policy in service."""

    def __init__(self, truth: Truth, history: PolicyHistory, epsilon: float, seed: int) -> None:
        self.truth, self.history = truth, history
        start = load_policy(history.serving)
        self.models, self.weight = list(start.models), start.default_cost_weight
        self.exploration = Exploration("epsilon", epsilon)
        self.random = random.Random(seed)
        self.outcomes = np.random.default_rng(seed)
        self.scores: dict[int, np.ndarray] = {}  # version -> its scores of every population query
        self.versions: dict[int, str] = {}  # version -> the artifact's policy_version

    def choices(self, version: int) -> np.ndarray:
        """The greedy choices of ``version`` on the whole population (scored once per version)."""
        if version not in self.scores:
            path = self.history.policy_path(version)
            key = (hashlib.sha256(path.read_bytes()).hexdigest(), len(self.truth.queries))
            if key not in _SCORED:
                policy = load_policy(path)
                _SCORED[key] = policy.scores(self.truth.queries, self.weight).double().numpy()
            self.scores[version], self.versions[version] = _SCORED[key], key[0][:12]  # = LoadedPolicy.version
        return np.argmax(self.scores[version], axis=1)

    def serve(self, log: DecisionLog, stream: Stream, rounds: range, version: int, tag: str) -> np.ndarray:
        """Decide ``rounds`` with ``version``, log decisions and feedback; the expected reward of each round."""
        self.choices(version)
        scores, allowed = self.scores[version], list(range(len(self.models)))
        rewards = stream.reward(self.weight)
        served = np.empty(len(rounds))
        for offset, t in enumerate(rounds):
            row = int(stream.rows[t])
            row_scores = scores[row].tolist()
            action, propensity = self.exploration.choose(row_scores, allowed, self.random)
            served[offset] = float(np.dot(self.exploration.probabilities(row_scores, allowed), rewards[t]))
            expected = float(stream.expected[t, action])
            quality = float(self.outcomes.random() < expected) if self.truth.draw else expected
            log.decision(
                query_id=f"{tag}-{t}",
                query=self.truth.queries[row],
                model=self.models[action],
                propensity=propensity,
                cost_weight=self.weight,
                policy_version=self.versions[version],
            )
            log.feedback(f"{tag}-{t}", quality, float(stream.cost[t, action]))
        return served


@dataclass(frozen=True)
class Simulation:
    """One followed stream: the run it starts from, the stream's seed and length, the follower's settings."""

    run: Path
    truth: Truth
    rounds: int
    seed: int
    config: FollowConfig
    epsilon: float
    chunk: int
    drift_round: int | None = None

    def stream(self) -> Stream:
        """The stream (the same for every margin at this seed)."""
        return iid_stream(self.truth, self.rounds, 1000 + self.seed, self.drift_round)


def follow(simulation: Simulation) -> Trace:
    """Serve the stream in chunks with the policy in service, the follower stepping after each chunk."""
    torch.set_num_threads(1)  # one simulation per core
    stream, truth = simulation.stream(), simulation.truth
    with tempfile.TemporaryDirectory(prefix="bench-follow-") as folder:
        out, logs = Path(folder) / "follower", Path(folder) / "logs"
        logs.mkdir()
        follower = Follower(simulation.run, logs, out, simulation.config)
        service = Service(truth, follower.history, simulation.epsilon, simulation.seed)
        log = DecisionLog(logs / "decisions.jsonl")
        served = []
        try:
            for begin in range(0, simulation.rounds, simulation.chunk):
                rounds = range(begin, min(begin + simulation.chunk, simulation.rounds))
                served.append(service.serve(log, stream, rounds, follower.version, f"s{simulation.seed}"))
                follower.step()
        finally:
            log.close()
            follower.close()
        choices = {version: service.choices(version) for version in range(follower.version + 1)}
    values = {version: truth.value(chosen, service.weight) for version, chosen in choices.items()}
    return Trace(service.weight, np.concatenate(served), follower.events, choices, values)


def run_all(simulations: list[Simulation], pool: ProcessPoolExecutor) -> list[Trace]:
    """Every simulation, as many at a time as ``pool`` has processes (each with one torch thread)."""
    return list(pool.map(follow, simulations, chunksize=4))


# ---------------------------------------------------------------------------------------------
# The starting runs and their populations.


@dataclass(frozen=True)
class Setup:
    """Run directories by name, and the truth of the queries none of them trained on."""

    runs: dict[str, Path]
    truth: Truth


def train_run(config_file: Path, data: Path, out: Path, overrides: list[str]) -> tuple[Path, RoutingLog]:
    """``train.py --no-tune --config CONFIG_FILE --data DATA [--set ...]`` here; the run and its held-out queries."""
    config = load_config(config_file, ["tuning.enabled=false", *overrides], cli_data=str(data))
    prepare_directory(out, overwrite=True)
    train(config, out, quiet=True)
    log = load_log(data).log
    splits = split(log, config.data.fractions, config.seed, config.data.split)
    return out, log.subset(np.sort(np.concatenate([splits.validation, splits.test])))


#: The synthetic runs: the good one (the default config: 60% of the log) and a stale one (1%).
SYNTH_RUNS = {
    "good": [],
    "stale": ["data.fractions.train=0.01", "data.fractions.validation=0.59", "data.fractions.test=0.4"],
}


def synthetic_setup(folder: Path, queries: int) -> Setup:
    """The synthetic world of the demo log: runs on ``queries`` queries; the truth of the good run's held-out 40%."""
    synth = generate(SynthConfig(queries=queries, seed=0))
    data = folder / "synth.jsonl"
    write(synth, data)
    runs, held_out = {}, None
    for name, overrides in SYNTH_RUNS.items():
        runs[name], log = train_run(ROOT / "configs" / "default.yaml", data, folder / name, overrides)
        held_out = log if held_out is None else held_out  # the good run's (it holds no stale training row)
    assert held_out is not None
    rows = np.searchsorted(np.array(synth.query_ids), held_out.query_ids)  # synthetic ids are sorted
    assert (np.array(synth.query_ids)[rows] == held_out.query_ids).all()
    truth = Truth(synth.model_names, held_out.queries, synth.expected_quality[rows], synth.cost[rows], draw=True)
    return Setup(runs, truth.aligned(list(held_out.models)))


def emptied(run: Path, out: Path) -> Path:
    """A copy of ``run`` whose learner keeps no statistics: the follower starts from λI alone, as after a
    drift alarm (``drift.keep`` = 0), while the run's policy stays in service."""
    shutil.copytree(run, out)
    with np.load(run / LEARNER_FILE) as archive:
        arrays = {key: archive[key] for key in archive.files if key not in STATISTICS}
    np.savez(out / LEARNER_FILE, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its keywords
    return out


def routerbench_setup(folder: Path, data: Path) -> Setup:
    """RouterBench: a run on 15% of its queries (configs/routerbench.yaml otherwise); the other 85% as logged."""
    overrides = ["data.fractions.train=0.15", "data.fractions.validation=0.05", "data.fractions.test=0.8"]
    run, held_out = train_run(ROOT / "configs" / "routerbench.yaml", data, folder / "routerbench", overrides)
    truth = Truth(list(held_out.models), held_out.queries, held_out.quality, held_out.cost, draw=False)
    return Setup({"stale": run}, truth)


# ---------------------------------------------------------------------------------------------
# 1 and 2: the gate on stationary streams.


def gate_row(margin: float, traces: list[Trace]) -> str:
    """One markdown row: gate decisions, promotions, false promotions, first promotion, value gained, drift alarms."""
    decisions = promotions = false = promoted_runs = false_runs = alarms = 0
    first, gains = [], []
    for trace in traces:
        decisions += sum(1 for e in trace.events if e["kind"] in ("promote", "refuse") and "lower" in e["detail"])
        promoted = [e for e in trace.events if e["kind"] == "promote"]
        versions = [e["detail"]["version"] for e in promoted]  # version v replaced v - 1 (no rollbacks here)
        wrong = [v for v in versions if trace.values[v] <= trace.values[v - 1]]
        promotions, false, alarms = promotions + len(promoted), false + len(wrong), alarms + _count(trace, "drift")
        promoted_runs, false_runs = promoted_runs + bool(promoted), false_runs + bool(wrong)
        first += [promoted[0]["round"]] if promoted else []
        gains.append(trace.values[max(trace.values)] - trace.values[0])
    n = len(traces)
    start, end = traces[0].values[0], statistics.mean(t.values[max(t.values)] for t in traces)
    quartiles = np.percentile(first, [25, 50, 75]).round().astype(int).tolist() if first else None
    return (
        f"| {margin:g} | {n} | {decisions} | {promotions} ({promotions / max(decisions, 1):.1%}) "
        f"| {_share(promoted_runs, n)} | {false} | {_share(false_runs, n)} "
        f"| {'-' if quartiles is None else f'{quartiles[1]} [{quartiles[0]}, {quartiles[2]}]'} "
        f"| {start:.4f} → {end:.4f} ({statistics.mean(gains):+.4f}) | {alarms} |"
    )


GATE_HEADER = (
    "| margin | simulations | gate decisions | promotions (per decision) | simulations with a promotion [95% CI] "
    "| false promotions (truly not better) | simulations with a false promotion [95% CI] "
    "| first promotion: median round [quartiles] | true value: start → end, mean (gain) | drift alarms |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def _count(trace: Trace, kind: str) -> int:
    return sum(1 for event in trace.events if event["kind"] == kind)


def _share(count: int, total: int) -> str:
    """``count/total = p% [low, high]``: the Clopper–Pearson 95% interval (scipy)."""
    interval = binomtest(count, total).proportion_ci(0.95)
    return f"{count}/{total} = {count / total:.1%} [{interval.low:.1%}, {interval.high:.1%}]"


def gate_experiment(
    title: str, run: Path, truth: Truth, args: argparse.Namespace, margins: list[float], pool: ProcessPoolExecutor
) -> None:
    """``args.seeds`` stationary streams per margin from ``run``; one table row per margin."""
    print(f"\n{title}\n\n{GATE_HEADER}")
    seconds = []
    for margin in margins:
        simulations = [
            Simulation(
                run, truth, args.rounds, seed, replace(args.follow, margin=margin, seed=seed), args.epsilon, args.chunk
            )
            for seed in range(args.seeds)
        ]
        started = time.perf_counter()
        traces = run_all(simulations, pool)
        seconds.append(f"{time.perf_counter() - started:.0f} s")
        print(gate_row(margin, traces), flush=True)
    print(f"\n(wall time per row: {', '.join(seconds)})")


# ---------------------------------------------------------------------------------------------
# 3: cumulative regret.


def regret_experiment(
    title: str, run: Path, truth: Truth, args: argparse.Namespace, drift_round: int | None, pool: ProcessPoolExecutor
) -> None:
    """Live loop vs frozen vs best single model in hindsight, against the oracle, at ``args.checkpoint_list``."""
    simulations = [
        Simulation(
            run, truth, args.regret_rounds, seed, replace(args.follow, seed=seed), args.epsilon, args.chunk, drift_round
        )
        for seed in range(args.regret_seeds)
    ]
    started = time.perf_counter()
    traces = run_all(simulations, pool)
    regrets: dict[str, list[np.ndarray]] = {}
    notes = []
    for simulation, trace in zip(simulations, traces, strict=True):
        stream = simulation.stream()
        rewards = stream.reward(trace.weight)
        frozen = rewards[np.arange(len(rewards)), trace.choices[0][stream.rows]]
        methods = {
            "live loop (ε-greedy, as served)": trace.served,
            "frozen starting policy (greedy)": frozen,
            "frozen starting policy, ε-greedy": (1 - args.epsilon) * frozen + args.epsilon * rewards.mean(axis=1),
            "best single model in hindsight": rewards[:, int(np.argmax(rewards.sum(axis=0)))],
        }
        for method, reward in methods.items():
            regrets.setdefault(method, []).append(np.cumsum(rewards.max(axis=1) - reward))
        regrets.setdefault("oracle: cumulative reward", []).append(np.cumsum(rewards.max(axis=1)))
        alarms = [event["round"] for event in trace.events if event["kind"] == "drift"]
        notes.append(
            f"seed {simulation.seed}: drift alarms at rounds {alarms or 'none'}; promotions at rounds "
            f"(true value change) {_promotions(trace, truth, drift_round)}"
        )
    checkpoints = [c for c in args.checkpoint_list if c <= args.regret_rounds]
    print(f"\n{title} ({len(traces)} seeds, mean; {time.perf_counter() - started:.0f} s)\n")
    print("| method | " + " | ".join(f"regret at {c:,}" for c in checkpoints) + " |")
    print("|---|" + "---|" * len(checkpoints))
    for method, curves in regrets.items():
        mean = np.mean(curves, axis=0)
        print(f"| {method} | " + " | ".join(f"{mean[c - 1]:.1f}" for c in checkpoints) + " |")
    print("\n" + "\n".join(f"- {note}" for note in notes))


def _promotions(trace: Trace, truth: Truth, drift_round: int | None) -> str:
    """Each promotion's round and the change of true value it made, on the truth in force at that round."""
    parts = []
    for event in trace.events:
        if event["kind"] == "promote":
            now = truth.rotated() if drift_round is not None and event["round"] >= drift_round else truth
            new, old = (trace.choices[event["detail"]["version"] - back] for back in (0, 1))
            parts.append(f"{event['round']} ({now.value(new, trace.weight) - now.value(old, trace.weight):+.4f})")
    return ", ".join(parts) or "none"


# ---------------------------------------------------------------------------------------------


PARTS = ("1", "1b", "2", "3a", "3b")


def parse_args() -> argparse.Namespace:
    """The command line; ``--quick`` replaces the sizes by a one-minute smoke test."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test of about a minute")
    parser.add_argument("--parts", default=",".join(PARTS), help="which parts to run")
    parser.add_argument("--seeds", type=int, default=200, help="simulations per margin (parts 1 and 2)")
    parser.add_argument("--rounds", type=int, default=3000, help="rounds per simulation (parts 1 and 2)")
    parser.add_argument("--margins", default="0,0.005", help="the gate's margins (reward per query; 1b: the first)")
    parser.add_argument("--epsilon", type=float, default=0.1, help="the service's ε-greedy exploration")
    parser.add_argument("--chunk", type=int, default=250, help="rounds the service decides between two steps")
    parser.add_argument("--synth-queries", type=int, default=10000)
    parser.add_argument("--regret-rounds", type=int, default=10000)
    parser.add_argument("--regret-seeds", type=int, default=3)
    parser.add_argument("--drift-round", type=int, default=3000, help="the synthetic truth changes here (part 3a)")
    parser.add_argument("--checkpoints", default="1000,2000,5000,10000")
    parser.add_argument("--routerbench", type=Path, default=ROOT.parent / "shared" / "data" / "routerbench")
    parser.add_argument("--workers", type=int, default=2, help="simulations run at once (processes)")
    add_set_argument(
        parser,
        "a follower setting for every simulation (FollowConfig, as python -m training.follow --set), "
        "e.g. --set drift.tolerance=0.02; --margins still sets the margin of parts 1 and 2",
    )
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.margins, args.regret_rounds, args.regret_seeds = 8, "0", 2500, 1
        args.drift_round, args.checkpoints = 1000, "1000,2500"
    args.margin_list = [float(m) for m in args.margins.split(",")]
    args.checkpoint_list = [int(c) for c in args.checkpoints.split(",")]
    args.part_list = args.parts.split(",")
    unknown = set(args.part_list) - set(PARTS)
    if unknown:
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))} (known: {', '.join(PARTS)})")
    args.follow = load_follow_config(None, args.overrides)
    return args


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__}; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"command: python bench/bench_follow.py {' '.join(sys.argv[1:])}"
    )
    context = multiprocessing.get_context("spawn")  # fresh processes: no torch thread pool inherited by fork
    with (
        tempfile.TemporaryDirectory(prefix="bench-follow-runs-") as folder,
        ProcessPoolExecutor(args.workers, mp_context=context) as pool,
    ):
        synthetic_parts(args, Path(folder), pool)
        if "3b" in args.part_list:
            routerbench_part(args, Path(folder), pool)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


def synthetic_parts(args: argparse.Namespace, folder: Path, pool: ProcessPoolExecutor) -> None:
    """Parts 1, 1b, 2 and 3a (those of ``args.part_list``) on the synthetic world."""
    synth = synthetic_setup(folder, args.synth_queries)
    good, stale = (_value(synth.runs[name], synth.truth) for name in ("good", "stale"))
    weight = load_policy(synth.runs["good"] / "policy.pt").default_cost_weight
    oracle = float((synth.truth.expected - weight * synth.truth.cost).max(axis=1).mean())
    print(
        f"\nsynthetic population: {len(synth.truth.queries)} queries; true value of the good policy {good:.4f}, "
        f"of the stale one {stale:.4f}, of the oracle {oracle:.4f}"
    )
    if "1" in args.part_list:
        title = "1. False promotions: from the good policy and its statistics, i.i.d. stream from its world"
        gate_experiment(title, synth.runs["good"], synth.truth, args, args.margin_list, pool)
    if "1b" in args.part_list:
        title = (
            "1b. False promotions, hard case: the good policy in service, the follower's statistics emptied "
            "(its state after a drift alarm)"
        )
        empty = emptied(synth.runs["good"], folder / "empty")
        gate_experiment(title, empty, synth.truth, args, args.margin_list[:1], pool)
    if "2" in args.part_list:
        title = "2. Power: from the stale policy, i.i.d. stream"
        gate_experiment(title, synth.runs["stale"], synth.truth, args, args.margin_list, pool)
    if "3a" in args.part_list:
        title = f"3a. Synthetic stream, quality columns rotated at round {args.drift_round}"
        regret_experiment(title, synth.runs["good"], synth.truth, args, args.drift_round, pool)


def routerbench_part(args: argparse.Namespace, folder: Path, pool: ProcessPoolExecutor) -> None:
    """Part 3b, or a line saying why not."""
    if not (args.routerbench / "mbpp_train.csv").is_file():
        print(f"\n3b. RouterBench: skipped ({args.routerbench} not found)")
        return
    bench = routerbench_setup(folder, args.routerbench)
    title = "3b. RouterBench replay from a policy trained on 15% of it"
    regret_experiment(title, bench.runs["stale"], bench.truth, args, None, pool)


def _value(run: Path, truth: Truth) -> float:
    """True value of ``run``'s policy at its default cost weight."""
    policy = load_policy(run / "policy.pt")
    scores = policy.scores(truth.queries, policy.default_cost_weight).double().numpy()
    return truth.value(np.argmax(scores, axis=1), policy.default_cost_weight)


if __name__ == "__main__":
    main()
