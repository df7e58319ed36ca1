"""Benchmark the batched RoutingVecEnv against SB3's DummyVecEnv over RoutingEnv copies.

Why: PPO needs millions of one-step episodes; a VecEnv of N Python env objects steps them one
by one. Both sides here step the same task (random full-information data: N queries, ``--dim``
float32 features, ``--models`` models, fixed cost weight) with the same pre-drawn random
actions; steps/s = envs × steps / wall time, median over ``--repeats`` runs. Then PPO
('MlpPolicy', a small net) trains on the RoutingVecEnv for ``--ppo-steps`` steps: samples/s.

    python bench/bench_env.py --envs 256 --dim 256 --models 11
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data.routing_log import RoutingLog
from envs.routing_env import RoutingEnv
from envs.vec_env import RoutingVecEnv


def random_task(queries: int, models: int, dim: int, seed: int) -> tuple[RoutingLog, np.ndarray]:
    """A full-information log of uniform random outcomes and standard normal features."""
    rng = np.random.default_rng(seed)
    log = RoutingLog(
        models=tuple(f"m{k}" for k in range(models)),
        query_ids=np.arange(queries).astype(str).astype(object),
        queries=[""] * queries,
        quality=rng.random((queries, models)),
        cost=rng.random((queries, models)) * 1e-3,
    )
    return log, rng.standard_normal((queries, dim)).astype(np.float32)


def steps_per_second(env, actions: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    """Step ``env`` once per row of ``actions``; env steps per second of wall time."""
    env.reset()
    start = time.perf_counter()
    for batch in actions:
        env.step(batch)
    return actions.size / (time.perf_counter() - start)


def machine() -> dict[str, str | int]:
    """nproc, CPU model name and Python/numpy versions."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count() or 0,
        "cpu": model,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=256, help="environments stepped per call")
    parser.add_argument("--dim", type=int, default=256, help="feature dimension")
    parser.add_argument("--models", type=int, default=11, help="number of models (arms)")
    parser.add_argument("--queries", type=int, default=10_000, help="queries in the random log")
    parser.add_argument("--steps", type=int, default=200, help="VecEnv steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per side (median reported)")
    parser.add_argument("--ppo-steps", type=int, default=50_000, help="PPO training steps (0 = skip)")
    args = parser.parse_args()

    from stable_baselines3.common.vec_env import DummyVecEnv

    log, features = random_task(args.queries, args.models, args.dim, seed=0)
    actions = np.random.default_rng(1).integers(args.models, size=(args.steps, args.envs))
    dummy = DummyVecEnv([functools.partial(RoutingEnv, log, features, 200.0)] * args.envs)
    dummy.seed(0)
    batched = RoutingVecEnv(log, features, args.envs, 200.0, seed=0)
    steps_per_second(dummy, actions[:5])  # warm-up
    steps_per_second(batched, actions[:5])
    dummy_rates = [steps_per_second(dummy, actions) for _ in range(args.repeats)]
    batched_rates = [steps_per_second(batched, actions) for _ in range(args.repeats)]
    result: dict[str, object] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine(),
        "command": "python " + " ".join(sys.argv),
        "envs": args.envs,
        "dim": args.dim,
        "models": args.models,
        "dummy_vec_env_steps_per_s": statistics.median(dummy_rates),
        "routing_vec_env_steps_per_s": statistics.median(batched_rates),
    }
    result["ratio"] = statistics.median(batched_rates) / statistics.median(dummy_rates)
    print(f"DummyVecEnv x {args.envs} RoutingEnv: {statistics.median(dummy_rates):,.0f} steps/s", flush=True)
    print(f"RoutingVecEnv (N={args.envs}):      {statistics.median(batched_rates):,.0f} steps/s", flush=True)
    print(f"ratio: {result['ratio']:.1f}x", flush=True)

    if args.ppo_steps:
        from stable_baselines3 import PPO

        model = PPO(
            "MlpPolicy",
            RoutingVecEnv(log, features, args.envs, 200.0, seed=0),
            n_steps=32,
            batch_size=2048,
            n_epochs=2,
            seed=0,
            device="cpu",
            policy_kwargs={"net_arch": [64]},
        )
        start = time.perf_counter()
        model.learn(args.ppo_steps)
        result["ppo_steps"] = model.num_timesteps
        result["ppo_samples_per_s"] = model.num_timesteps / (time.perf_counter() - start)
        result["ppo"] = "MlpPolicy net_arch=[64], n_steps=32, batch_size=2048, n_epochs=2, torch CPU"
        print(
            f"PPO on RoutingVecEnv: {result['ppo_samples_per_s']:,.0f} samples/s ({model.num_timesteps} steps)",
            flush=True,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
