"""PPO time-to-quality: wall time until PPO's validation reward reaches a share of LinUCB's.

On each dataset: the run configuration's split and featurizer, LinUCB ``fit`` on the training
split (its validation reward at the configured cost weight w is the reference), then PPO (the
configuration's ``agent.ppo``, early stopping off so that the whole curve is seen) with a
callback after every rollout's update that scores the parameters being trained
(:meth:`~agents.ppo.PPORouter.predict_current`) on the validation split at w. Reported: the
training wall time (the callback's own validation scoring excluded) and the step at which the
validation reward first reaches ``--share`` (default 98%) of LinUCB's, and the best and final
validation rewards.

    python bench/bench_ppo_time_to_quality.py                         # RouterBench and synthetic
    python bench/bench_ppo_time_to_quality.py --datasets synth --device cuda --out ttq-cuda.json

Datasets: ``routerbench`` (``configs/routerbench.yaml`` on ``../shared/data/routerbench``;
skipped when absent) and ``synth`` (``data.synth``: ``--synth-queries`` queries × 11 models,
~30 words each, graded quality, with ``configs/default.yaml``'s split, featurizer and cost
weight, those of the demo log).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.base import FeaturizedSplit, TrainingTask  # noqa: E402
from agents.callbacks import Callback  # noqa: E402
from agents.linucb import LinUCB  # noqa: E402
from agents.ppo import PPORouter  # noqa: E402
from data.featurizer import TextFeaturizer  # noqa: E402
from data.loading import load_log  # noqa: E402
from data.prices import PriceTable  # noqa: E402
from data.routing_log import RoutingLog  # noqa: E402
from data.splits import split  # noqa: E402
from data.synth import SynthConfig, generate  # noqa: E402
from training.config import RunConfig, load_config  # noqa: E402


def synthetic_log(queries: int, seed: int) -> RoutingLog:
    """A full-information synthetic log: 11 models, ~30-word queries, graded quality."""
    synth = generate(SynthConfig(queries=queries, models=11, words_per_query=30, seed=seed))
    return synth.routing_log()


def validation_reward(log: RoutingLog, actions: np.ndarray, weight: float) -> float:
    """Mean of quality − w · cost of the chosen models."""
    rows = np.arange(log.n_queries)
    return float((log.quality[rows, actions] - weight * log.cost[rows, actions]).mean())


def time_to_quality(name: str, log: RoutingLog, config: RunConfig, share: float, device: str) -> dict[str, Any]:
    """LinUCB's validation reward, then PPO's curve and the time at which it reaches ``share`` of it."""
    parts = split(log, config.data.fractions, config.seed, config.data.split)
    train, validation = log.subset(parts.train), log.subset(parts.validation)
    featurizer = TextFeaturizer(config.featurizer).fit(train.queries)
    x, val_x = featurizer.transform(train.queries), featurizer.transform(validation.queries)
    weight = config.reward.cost_weight

    started = time.perf_counter()
    linucb = LinUCB(log.n_models, x.shape[1], config.agent.linucb).fit(x, train.quality, train.cost)
    linucb_seconds = time.perf_counter() - started
    reference = validation_reward(validation, linucb.predict(val_x, weight), weight)

    ppo_config = dataclasses.replace(config.agent.ppo, patience=0, device=device)
    agent = PPORouter(log.n_models, x.shape[1], ppo_config)
    curve: list[dict[str, float]] = []
    scoring = 0.0  # seconds spent in this benchmark's own validation scoring, taken off the clock
    reached: dict[str, float] | None = None
    started = time.perf_counter()

    class Curve(Callback):
        def on_rollout_end(self, step: int, scalars: dict[str, float]) -> None:
            nonlocal scoring, reached
            begin = time.perf_counter()
            elapsed = begin - started - scoring  # training time so far, this benchmark's scoring excluded
            reward = validation_reward(validation, agent.predict_current(val_x, weight), weight)
            scoring += time.perf_counter() - begin
            point = {"step": step, "seconds": elapsed, "validation_reward": reward}
            curve.append(point)
            if reached is None and reward >= share * reference:
                reached = point

    agent.train(TrainingTask(FeaturizedSplit(train, x)), [Curve()])
    total = time.perf_counter() - started - scoring
    rewards = [point["validation_reward"] for point in curve]
    return {
        "dataset": name,
        "queries": {"train": train.n_queries, "validation": validation.n_queries},
        "models": log.n_models,
        "cost_weight": weight,
        "device": device,
        "linucb": {"validation_reward": reference, "fit_seconds": linucb_seconds},
        "target": share * reference,
        "reached": reached,
        "ppo": {"steps": agent.steps_done, "seconds": total, "steps_per_second": agent.steps_done / total,
                "best_validation_reward": max(rewards), "final_validation_reward": rewards[-1]},
        "curve": curve,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="routerbench,synth", help="comma-separated: routerbench, synth")
    parser.add_argument("--routerbench", type=Path, default=ROOT.parent / "shared" / "data" / "routerbench")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "routerbench.yaml",
                        help="run configuration of the routerbench dataset")
    parser.add_argument("--synth-config", type=Path, default=ROOT / "configs" / "default.yaml",
                        help="run configuration of the synth dataset")
    parser.add_argument("--synth-queries", type=int, default=20_000)
    parser.add_argument("--share", type=float, default=0.98, help="share of LinUCB's validation reward to reach")
    parser.add_argument("--total-steps", type=int, help="overrides agent.ppo.total_steps")
    parser.add_argument("--device", default="cpu", help="torch device PPO trains on (cpu, cuda)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    overrides = [] if args.total_steps is None else [f"agent.ppo.total_steps={args.total_steps}"]
    results = []
    for name in args.datasets.split(","):
        if name == "routerbench":
            if not args.routerbench.exists():
                print(f"routerbench: skipped, {args.routerbench} is absent")
                continue
            config = load_config(args.config, overrides)
            log = load_log(args.routerbench, prices=PriceTable.load_or_default(None)).log
        elif name == "synth":
            config = load_config(args.synth_config, overrides)
            log = synthetic_log(args.synth_queries, config.seed)
        else:
            parser.error(f"unknown dataset {name!r}")
        result = time_to_quality(name, log, config, args.share, args.device)
        results.append(result)
        reached = result["reached"]
        print(f"{name}: LinUCB validation reward {result['linucb']['validation_reward']:.4f} "
              f"(w = {result['cost_weight']}); PPO on {args.device} reaches {args.share:.0%} of it "
              + ("never" if reached is None else f"at step {reached['step']:.0f} after {reached['seconds']:.1f} s")
              + f"; {result['ppo']['steps']} steps in {result['ppo']['seconds']:.1f} s "
              f"({result['ppo']['steps_per_second']:.0f} steps/s), best {result['ppo']['best_validation_reward']:.4f}")
    machine = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor(),
               "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    if args.out is not None:
        args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
