"""LinUCB ``fit`` on a full-information log: routerl vs the numpy limit and peer libraries.

Synthetic data: N queries × K models, random Gaussian features (float32, d columns: 1M × 256 is
1 GB, where float64 would be 2 GB), quality and cost from random linear models (computed in float32,
so that no float64 copy of X is made) plus noise; reward = quality − w · cost at one cost weight w.
Side by side in this one process (runs interleaved round-robin, so that a busy moment of a shared
machine hits every method alike), the median over ``--repeats`` runs of:

* **routerl** ``LinUCB(K, d, LinUCBConfig(alpha, ridge)).fit(X, quality, cost)``;
* **limit**: the least numpy can do for the same model: one float64 Gram λI + XᵀX, one
  ``np.linalg.solve`` with the 2K right-hand sides Xᵀ[quality | cost] (every arm observes every
  query, so all arms share the Gram matrix);
* **per-arm numpy**: the textbook per-arm Gram-and-solve (K Grams), for reference;
* **MABWiser** ``MAB(arms, LearningPolicy.LinUCB(alpha, l2_lambda))`` batch ``fit`` on the reward
  (one ``fit`` + ``partial_fit`` per further arm, each on the N × d matrix, so that the N·K × d
  stacked copy is not needed);
* **contextualbandits** ``online.LinUCB(nchoices=K, alpha, lambda_, fit_intercept=False, method="chol",
  use_float=False)``, one ``partial_fit`` per arm on the N × d matrix;
* **Vowpal Wabbit** ``--cb_explore_adf --squarecb`` (a few settings, the best reported), trained
  online with simulated bandit feedback on at most ``--vw-rows`` rows: its speed, and the mean
  reward of its greedy choices on held-out rows against routerl's (not agreement).

Bandit feedback (``--bandit``, on by default): each row is logged with one arm drawn uniformly, so
every method computes one Gram matrix per arm over that arm's ~N/K rows (one N × d Gram's worth of
work in all): **routerl** ``partial_fit(X, quality, cost, actions)``, **limit**: the plain numpy
per-arm Gram-and-solve over the same rows, **MABWiser** ``fit(decisions, rewards, contexts)``,
**contextualbandits** ``fit(X, a, r)``.

Wall time, CPU time of the process (``time.process_time``: all threads; with ``OPENBLAS_NUM_THREADS=1``
it is the work done, whatever else runs on the machine), peak memory (``tracemalloc``: numpy reports
its buffers to it), and the agreement of the
greedy decisions with routerl's on ``--holdout`` held-out rows (LinUCB at the same λ should agree
~100%). Peers get the same float32 matrix; MABWiser's ``np.dot(X.T, X)`` then accumulates the Gram
in float32 (routerl and the limit in float64).

    python bench/bench_linucb_fit.py                                  # full: 10k, 100k, 1M; d = 64, 256
    python bench/bench_linucb_fit.py --sizes 10000,100000 --repeats 3 # quick
"""

# ruff: noqa: B023
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.linucb import LinUCB, LinUCBConfig  # noqa: E402


def make_data(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, d) float32 features, (N, K) quality and cost from random linear models + noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x[:, -1] = 1.0  # a bias column, as the featurizer has
    wq = (rng.standard_normal((d, k)) / np.sqrt(d)).astype(np.float32)
    wc = (np.abs(rng.standard_normal((d, k))) / np.sqrt(d) * np.linspace(0.1, 1.0, k)).astype(np.float32)
    quality = (x @ wq).astype(np.float64) + 0.5 * rng.standard_normal((n, k))
    cost = (x @ wc).astype(np.float64) + 0.1 * rng.standard_normal((n, k))
    return x, quality, cost


def measure(fns: dict[str, Callable[[], Any]], repeats: dict[str, int]) -> dict[str, tuple[float, float, float, Any]]:
    """Per method: median wall seconds, median CPU seconds of this process (all its threads), peak
    traced MiB and the last result of ``fn()``.

    The peak comes from one extra, untimed run under ``tracemalloc`` (which slows Python-heavy code
    such as the peers' many times over). Timed runs are interleaved round-robin (run i of every
    method, then run i + 1), so that the load of a shared machine is spread over the methods alike;
    a method stops after its own ``repeats``.
    """
    peaks: dict[str, float] = {}
    for name, fn in fns.items():
        gc.collect()
        tracemalloc.start()
        fn()
        peaks[name] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, Any] = {}
    for i in range(max(repeats.values())):
        for name, fn in fns.items():
            if i >= repeats[name]:
                continue
            results[name] = None
            gc.collect()
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {
        name: (statistics.median(times[name]), statistics.median(cpu[name]), peaks[name], results[name]) for name in fns
    }


def limit_fit(x: np.ndarray, quality: np.ndarray, cost: np.ndarray, ridge: float) -> np.ndarray:
    """θ (d, 2K) = (λI + XᵀX)⁻¹ Xᵀ[quality | cost]: one Gram, one solve."""
    x64 = np.asarray(x, dtype=np.float64)
    gram = x64.T @ x64
    gram[np.diag_indices_from(gram)] += ridge
    return np.linalg.solve(gram, x64.T @ np.hstack([quality, cost]))


def per_arm_fit(x: np.ndarray, reward: np.ndarray, ridge: float) -> np.ndarray:
    """Textbook disjoint LinUCB fit: one Gram and one solve per arm, (K, d)."""
    x64 = np.asarray(x, dtype=np.float64)
    thetas = []
    for arm in range(reward.shape[1]):
        gram = x64.T @ x64 + ridge * np.eye(x.shape[1])
        thetas.append(np.linalg.solve(gram, x64.T @ reward[:, arm]))
    return np.array(thetas)


def per_arm_bandit_fit(x: np.ndarray, outcomes: np.ndarray, actions: np.ndarray, k: int, ridge: float) -> np.ndarray:
    """The numpy limit on a bandit log: per arm, one float64 Gram and one solve over its rows, (K, d, T)."""
    thetas = []
    for arm in range(k):
        rows = actions == arm
        x64 = np.asarray(x[rows], dtype=np.float64)
        gram = x64.T @ x64
        gram[np.diag_indices_from(gram)] += ridge
        thetas.append(np.linalg.solve(gram, x64.T @ outcomes[rows]))
    return np.array(thetas)


def mabwiser_bandit_fit(x: np.ndarray, actions: np.ndarray, reward: np.ndarray, alpha: float, ridge: float) -> Any:
    from mabwiser.mab import MAB, LearningPolicy

    arms = list(range(int(actions.max()) + 1))
    mab = MAB(arms=arms, learning_policy=LearningPolicy.LinUCB(alpha=alpha, l2_lambda=ridge), n_jobs=1)
    mab.fit(decisions=actions, rewards=reward, contexts=x)
    return mab


def cb_bandit_fit(x: np.ndarray, actions: np.ndarray, reward: np.ndarray, k: int, alpha: float, ridge: float) -> Any:
    from contextualbandits.online import LinUCB as CBLinUCB

    model = CBLinUCB(nchoices=k, method="chol", alpha=alpha, lambda_=ridge, use_float=False, fit_intercept=False)
    return model.fit(x, actions, reward)


def mabwiser_fit(x: np.ndarray, reward: np.ndarray, alpha: float, ridge: float) -> Any:
    from mabwiser.mab import MAB, LearningPolicy

    k = reward.shape[1]
    mab = MAB(arms=list(range(k)), learning_policy=LearningPolicy.LinUCB(alpha=alpha, l2_lambda=ridge), n_jobs=1)
    mab.fit(decisions=np.zeros(len(x), dtype=int), rewards=reward[:, 0], contexts=x)
    for arm in range(1, k):
        mab.partial_fit(decisions=np.full(len(x), arm), rewards=reward[:, arm], contexts=x)
    return mab


def mabwiser_greedy(mab: Any, x: np.ndarray) -> np.ndarray:
    """argmax of xᵀβ per arm (MABWiser's ``predict`` adds the UCB bonus)."""
    models = mab._imp.arm_to_model
    return np.argmax(np.stack([x @ models[arm].beta for arm in sorted(models)], axis=1), axis=1)


def cb_fit(x: np.ndarray, reward: np.ndarray, alpha: float, ridge: float) -> Any:
    from contextualbandits.online import LinUCB as CBLinUCB

    k = reward.shape[1]
    model = CBLinUCB(
        nchoices=k,
        method="chol",
        alpha=alpha,
        lambda_=ridge,
        use_float=False,
        fit_intercept=False,
        random_state=1,
    )
    for arm in range(k):
        model.partial_fit(x, np.full(len(x), arm), reward[:, arm])
    return model


def vw_run(x: np.ndarray, reward: np.ndarray, test_x: np.ndarray, options: str, seed: int) -> np.ndarray:
    """Train VW online with simulated bandit feedback (cost = −reward of the sampled action);
    return its greedy actions on ``test_x``."""
    import vowpalwabbit

    k = reward.shape[1]
    model = vowpalwabbit.Workspace(f"--cb_explore_adf --squarecb {options} --quiet --random_seed {seed}")
    rng = np.random.default_rng(seed)
    actions = [f"|a a{arm}" for arm in range(k)]

    def shared(row: np.ndarray) -> str:
        return "shared |s " + " ".join(f"{j}:{v:.5g}" for j, v in enumerate(row))

    for i in range(len(x)):
        lines = [shared(x[i]), *actions]
        pmf = np.asarray(model.predict(lines), dtype=np.float64)
        pmf /= pmf.sum()
        arm = int(rng.choice(k, p=pmf))
        lines[1 + arm] = f"0:{-reward[i, arm]:.6g}:{pmf[arm]:.6g} |a a{arm}"
        model.learn(lines)
    chosen = np.empty(len(test_x), dtype=np.int64)
    for i in range(len(test_x)):
        pmf = np.asarray(model.predict([shared(test_x[i]), *actions]))
        chosen[i] = int(np.argmax(pmf))
    model.finish()
    return chosen


def bandit_comparison(
    x: np.ndarray, quality: np.ndarray, cost: np.ndarray, test_x: np.ndarray, args: argparse.Namespace, peers: list[str]
) -> dict[str, float]:
    """Bandit log (one uniformly drawn arm per row): routerl ``partial_fit`` with ``actions`` vs the
    per-arm numpy limit and the peers' own bandit ``fit``, interleaved; times, peaks, agreement."""
    n, d = x.shape
    k, w = quality.shape[1], args.cost_weight
    actions = np.asarray(np.random.default_rng(args.seed + 1).integers(k, size=n))
    rows = np.arange(n)
    q, c = quality[rows, actions], cost[rows, actions]
    reward = q - w * c
    config = LinUCBConfig(alpha=args.alpha, ridge=args.ridge)
    fns: dict[str, Callable[[], Any]] = {
        "routerl": lambda: LinUCB(k, d, config, cost_weight=w).partial_fit(x, q, c, actions=actions),
        "limit": lambda: per_arm_bandit_fit(x, np.stack([q, c], axis=1), actions, k, args.ridge),
    }
    repeats = {"routerl": args.repeats, "limit": args.repeats}
    if "mabwiser" in peers:
        fns["mabwiser"] = lambda: mabwiser_bandit_fit(x, actions, reward, args.alpha, args.ridge)
        repeats["mabwiser"] = args.peer_repeats
    if "contextualbandits" in peers:
        fns["cb"] = lambda: cb_bandit_fit(x, actions, reward, k, args.alpha, args.ridge)
        repeats["cb"] = args.peer_repeats
    measured = measure(fns, repeats)
    ours = measured["routerl"][3].predict(test_x, w)
    theta = measured["limit"][3]
    result = {
        "bandit_agree_limit": float(
            np.mean(ours == np.argmax(test_x @ (theta[:, :, 0] - w * theta[:, :, 1]).T, axis=1))
        )
    }
    result.update(timings_and_agreement(measured, test_x, ours, "bandit_"))
    return result


def timings_and_agreement(
    measured: dict[str, Any], test_x: np.ndarray, ours: np.ndarray, prefix: str
) -> dict[str, float]:
    """Each run's wall seconds, CPU seconds and MiB, and the peers' agreement with routerl's greedy choices."""
    result: dict[str, float] = {}
    for name, (seconds, cpu, mib, _) in measured.items():
        result.update({f"{prefix}{name}_s": seconds, f"{prefix}{name}_cpu": cpu, f"{prefix}{name}_mib": mib})
    if "mabwiser" in measured:
        result[f"{prefix}agree_mabwiser"] = float(np.mean(mabwiser_greedy(measured["mabwiser"][3], test_x) == ours))
    if "cb" in measured:
        result[f"{prefix}agree_cb"] = float(np.mean(measured["cb"][3].predict(test_x, exploit=True) == ours))
    return result


def print_table(rows: list[dict[str, Any]], prefix: str, limit_title: str, per_arm_title: str | None) -> None:
    """One markdown row per (d, N): times / peaks of the methods whose keys start with ``prefix``."""

    def cell(r: dict[str, Any], name: str) -> str:
        key = f"{prefix}{name}_s"
        return f"{r[key]:.3f} s / {r[f'{prefix}{name}_mib']:.0f} MiB" if key in r else "-"

    extra = f" {per_arm_title} |" if per_arm_title else ""
    print(
        f"\n| d | N | routerl | {limit_title} | routerl / limit (wall, CPU) |{extra} MABWiser | contextualbandits | "
        "agreement (limit, MABWiser, cb) |"
    )
    print("|---" * (8 + bool(per_arm_title)) + "|")
    for r in rows:
        if f"{prefix}routerl_s" not in r:
            continue
        agree = ", ".join(
            f"{r[key]:.2%}" if key in r else "-"
            for key in (f"{prefix}agree_{name}" for name in ("limit", "mabwiser", "cb"))
        )
        per_arm = f" {cell(r, 'per_arm')} |" if per_arm_title else ""
        ratios = f"{r[prefix + 'routerl_s'] / r[prefix + 'limit_s']:.2f}x, "
        ratios += f"{r[prefix + 'routerl_cpu'] / r[prefix + 'limit_cpu']:.2f}x"
        print(
            f"| {r['d']} | {r['n']:,} | {cell(r, 'routerl')} | {cell(r, 'limit')} | {ratios} |{per_arm} "
            f"{cell(r, 'mabwiser')} | {cell(r, 'cb')} | {agree} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="queries N (quick: 10000,100000)")
    parser.add_argument("--dims", default="64,256", help="feature dimensions d")
    parser.add_argument("--models", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method (median)")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--ridge", type=float, default=1.0)
    parser.add_argument("--cost-weight", type=float, default=1.0, help="w in reward = quality − w · cost")
    parser.add_argument("--holdout", type=int, default=5000, help="held-out rows for agreement and reward")
    parser.add_argument("--peers", default="mabwiser,contextualbandits,vw", help="comma-separated, or 'none'")
    parser.add_argument("--peer-repeats", type=int, default=1, help="timed runs per peer (they are slower)")
    parser.add_argument(
        "--peer-max-cells",
        type=float,
        default=1e8,
        help="skip MABWiser / contextualbandits where N·d exceeds this (time on 2 cores)",
    )
    parser.add_argument(
        "--per-arm-max",
        type=int,
        default=100_000,
        help="run the per-arm numpy reference up to this N (it does K Grams)",
    )
    parser.add_argument("--vw-rows", type=int, default=20000, help="at most this many training rows for VW")
    parser.add_argument(
        "--vw-settings",
        default="--gamma_scale 10 -q sa;--gamma_scale 100 -q sa;--gamma_scale 1000 -q sa -l 0.1",
        help="';'-separated VW options tried (best kept)",
    )
    parser.add_argument(
        "--bandit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also compare fits on a bandit log (one logged arm per row)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    dims = [int(s) for s in args.dims.split(",")]
    peers = [] if args.peers == "none" else args.peers.split(",")
    k, w = args.models, args.cost_weight
    for peer, module in (
        ("mabwiser", "mabwiser"),
        ("contextualbandits", "contextualbandits"),
        ("vw", "vowpalwabbit"),
    ):
        if peer in peers:
            try:
                __import__(module)
            except Exception as error:  # report and go on without it
                print(f"{peer}: not available ({type(error).__name__}: {error}); skipped")
                peers.remove(peer)

    print(
        f"K = {k}, alpha = {args.alpha}, ridge = {args.ridge}, w = {w}; median of {args.repeats} runs "
        f"(peers: {args.peer_repeats}), interleaved; peak = tracemalloc peak of one extra untimed run; "
        f"numpy {np.__version__}"
    )
    rows = []
    for d in dims:
        for n in sizes:
            x_all, q_all, c_all = make_data(n + args.holdout, d, k, args.seed)
            x, quality, cost = x_all[:n], q_all[:n], c_all[:n]
            test_x, test_reward = x_all[n:], q_all[n:] - w * c_all[n:]
            reward = quality - w * cost
            config = LinUCBConfig(alpha=args.alpha, ridge=args.ridge)
            slow_peers = n * d > args.peer_max_cells
            if slow_peers:
                print(
                    f"  N={n}, d={d}: full-information MABWiser and contextualbandits skipped (N·d > --peer-max-cells)"
                )
            fns: dict[str, Callable[[], Any]] = {
                "routerl": lambda: LinUCB(k, d, config, cost_weight=w).fit(x, quality, cost),
                "limit": lambda: limit_fit(x, quality, cost, args.ridge),
            }
            repeats = {"routerl": args.repeats, "limit": args.repeats}
            if n <= args.per_arm_max:
                fns["per_arm"] = lambda: per_arm_fit(x, reward, args.ridge)
                repeats["per_arm"] = max(1, args.repeats // 2)
            if "mabwiser" in peers and not slow_peers:
                fns["mabwiser"] = lambda: mabwiser_fit(x, reward, args.alpha, args.ridge)
                repeats["mabwiser"] = args.peer_repeats
            if "contextualbandits" in peers and not slow_peers:
                fns["cb"] = lambda: cb_fit(x, reward, args.alpha, args.ridge)
                repeats["cb"] = args.peer_repeats
            measured = measure(fns, repeats)
            agent, theta = measured["routerl"][3], measured["limit"][3]
            ours = agent.predict(test_x, w)
            limit_choice = np.argmax(test_x @ (theta[:, :k] - w * theta[:, k:]), axis=1)
            result: dict[str, Any] = {
                "d": d,
                "n": n,
                "agree_limit": float(np.mean(ours == limit_choice)),
                "reward_routerl": float(test_reward[np.arange(len(ours)), ours].mean()),
            }
            result.update(timings_and_agreement(measured, test_x, ours, ""))
            del measured, agent
            if args.bandit:
                result.update(bandit_comparison(x, quality, cost, test_x, args, peers))
            if "vw" in peers and n == min(sizes):
                vw_n = min(n, args.vw_rows)
                best = None
                for options in args.vw_settings.split(";"):
                    start = time.perf_counter()
                    chosen = vw_run(x[:vw_n], reward[:vw_n], test_x, options, args.seed)
                    seconds = time.perf_counter() - start
                    value = float(test_reward[np.arange(len(chosen)), chosen].mean())
                    print(f"  vw {options!r} on {vw_n} rows, d={d}: {seconds:.1f} s, held-out reward {value:.4f}")
                    if best is None or value > best[1]:
                        best = (options, value, seconds, vw_n)
                assert best is not None
                sub = LinUCB(k, d, config, cost_weight=w).fit(x[:vw_n], quality[:vw_n], cost[:vw_n]).predict(test_x, w)
                result.update(
                    vw_options=best[0],
                    vw_reward=best[1],
                    vw_s=best[2],
                    vw_rows=best[3],
                    reward_routerl_same_rows=float(test_reward[np.arange(len(sub)), sub].mean()),
                )
            rows.append(result)
            print(
                " ".join(
                    f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                    for key, value in result.items()
                ),
                flush=True,
            )

    print_table(rows, "", "limit (1 Gram + solve)", "per-arm numpy (K Grams)")
    if args.bandit:
        print("\nBandit log (one uniformly drawn arm per row):")
        print_table(rows, "bandit_", "limit (per-arm numpy Gram + solve)", None)
    vw_rows = [r for r in rows if "vw_reward" in r]
    if vw_rows:
        print(
            "\n| d | training rows | VW options (best of the settings tried) | VW time | VW held-out reward | "
            "routerl LinUCB reward (same rows) | routerl fit time |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in vw_rows:
            print(
                f"| {r['d']} | {r['vw_rows']:,} | `{r['vw_options']}` | {r['vw_s']:.1f} s | {r['vw_reward']:.4f} | "
                f"{r['reward_routerl_same_rows']:.4f} | {r['routerl_s']:.3f} s ({r['n']:,} rows) |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
