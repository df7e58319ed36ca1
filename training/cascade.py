"""``python -m training.cascade``: learn a cascade from a log with responses, evaluate it held out, export it.

    python -m training.cascade --data ../shared/data/routerbench --out runs/cascade \\
        [--config cascade.yaml] [--set agent.total_steps=131072] [--seed 0]

One run (docs/contracts.md §7.4, README "Cascades"):

1. **read** the full-information log and every model's response to every query
   (:func:`data.responses.read_responses`), and the response table
   (:func:`policies.response_features.response_table`);
2. **split** by hash of the query id (:func:`data.splits.split`; by default train 0.6, validation
   0.1, test 0.3, whose test split is ``configs/routerbench.yaml``'s and ``bench/bench_cascade.py``'s);
3. **featurize** the queries (:class:`data.featurizer.TextFeaturizer`, fitted on the training queries);
4. **learn** the cascade (:class:`agents.cascade_ppo.CascadePPO`) on the training split, early
   stopping on the validation split;
5. **evaluate** on the test split beside the baselines of :mod:`evaluation.cascade` (fitted on
   train and validation together): the frontier over the swept cost weights with every call's
   cost, AIQ, the cost (and share of the reference model's) to reach 95% and 100% of the
   reference's quality, and the mean number of calls there;
6. **export** the cascade as one TorchScript file (:mod:`policies.cascade_policy`).

Writes ``cascade.json``, ``cascade.md`` and ``cascade.pt`` into ``--out``. A user error (no
responses, a bandit log, a bad setting) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from agents.cascade_ppo import CascadePPO, CascadePPOConfig
from agents.linucb import LinUCB
from data.featurizer import FeaturizerConfig, TextFeaturizer
from data.fingerprint import fingerprint
from data.loading import load_log
from data.outputs import OutputKind, check_output, create_output, write_text_atomically
from data.responses import read_responses
from data.routing_log import RoutingLog
from data.schema import DataError
from data.splits import SplitFractions, Splits, split
from envs.cascade_vec_env import CascadeData
from evaluation.cascade import (
    CascadeBaselineConfig,
    CascadeSplit,
    decided_point,
    evaluate_cascade_baselines,
    frontier_summary,
)
from evaluation.frontier import cost_weight_grid
from evaluation.sweep import WeightSweep
from policies.cascade_policy import build_cascade_policy, cascade_metadata, save_cascade_policy
from policies.export import PolicyMetadata
from policies.response_features import ResponseTable, response_table
from training.cli import add_set_argument
from training.config import apply_overrides, read_config_tree, validated

CASCADE_FOLDER = OutputKind("cascade folder", frozenset({"cascade.json", "cascade.md", "cascade.pt"}))
#: The learned cascade's name in the report, beside the baselines'.
LEARNED = "learned cascade (PPO)"


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class CascadeRunConfig:
    """Everything ``python -m training.cascade`` reads (YAML, ``--set key=value``)."""

    seed: int = 0  # the split's hash seed
    # validation drives the PPO's early stopping; the test split (hash position >= 0.7) is configs/routerbench.yaml's
    fractions: SplitFractions = field(default_factory=lambda: SplitFractions(train=0.6, validation=0.1, test=0.3))
    featurizer: FeaturizerConfig = field(
        default_factory=lambda: FeaturizerConfig(min_df=2, max_features=20000, components=16)
    )
    agent: CascadePPOConfig = field(default_factory=CascadePPOConfig)  # agents.cascade_ppo, documented there
    baselines: CascadeBaselineConfig = field(default_factory=CascadeBaselineConfig)  # evaluation.cascade
    sweep_points: int = 41  # cost weights of every frontier: 0 and log-spaced over the training data's span
    default_cost_weight: float = 30.0  # the exported cascade's default weight (quality given up per USD)

    def __post_init__(self) -> None:
        if self.sweep_points < 2:
            raise ValueError(f"sweep_points must be >= 2, got {self.sweep_points}")
        if not (np.isfinite(self.default_cost_weight) and self.default_cost_weight >= 0):
            raise ValueError(f"default_cost_weight must be finite and >= 0, got {self.default_cost_weight}")


def load_run_config(path: Path | None, overrides: list[str], seed: int | None = None) -> CascadeRunConfig:
    """The configuration from YAML (or the defaults), ``--set`` overrides and ``--seed`` (also the agent's)."""
    tree = read_config_tree(path)
    apply_overrides(tree, overrides)
    if seed is not None:
        tree["seed"] = seed
        tree.setdefault("agent", {})["seed"] = seed
    return validated(CascadeRunConfig, tree, path)


@dataclass(frozen=True)
class Prepared:
    """A log with responses read, split and featurized (steps 1-3 of the module docstring)."""

    log: RoutingLog
    table: ResponseTable  # (N, K, ...) every response's features, final answer and agreement
    features: np.ndarray  # (N, d) the query features
    parts: Splits
    featurizer: TextFeaturizer
    fingerprint: str

    def data(self, index: np.ndarray) -> CascadeData:
        """The queries at ``index`` as the cascade learns from them."""
        return CascadeData(self.log.subset(index), self.features[index], self.table.features[index],
                           self.table.agreement[index])

    def baseline_split(self, index: np.ndarray) -> CascadeSplit:
        """The queries at ``index`` as the baselines see them."""
        return CascadeSplit(self.log.subset(index), self.features[index], self.table.subset(index))


def prepare(path: Path, config: CascadeRunConfig) -> Prepared:
    """Read the log and its responses, split it, fit the featurizer on the training queries."""
    log = load_log(path).log
    if log.feedback != "full":
        raise DataError(f"{path}: a cascade learns from a full-information log (every model's outcome and "
                        f"response for every query); this log has {log.feedback} feedback")
    table = response_table(read_responses(path, log))
    parts = split(log, config.fractions, config.seed)
    if not len(parts.train) or not len(parts.test):
        raise DataError(f"{path}: {log.n_queries} queries leave the training or the test split empty "
                        f"(queries per split: {parts.counts()})")
    featurizer = TextFeaturizer(config.featurizer)
    featurizer.fit(log.subset(parts.train).queries)
    return Prepared(log, table, featurizer.transform(log.queries), parts, featurizer, fingerprint(log))


def learned_summary(agent: CascadePPO, test: CascadeData, weights: np.ndarray, reference: int,
                    config: CascadeBaselineConfig) -> dict[str, Any]:
    """The learned cascade on ``test`` at every swept weight: its frontier summary and its points."""
    points = []
    for weight in weights.tolist():
        decisions = agent.decide(test, weight)
        points.append(decided_point(test.log, f"w={weight:g}", decisions.called, decisions.returned))
    summary = frontier_summary(points, test.log, reference, config.targets)
    summary["points"] = [{"cost_weight": w, "cost": p.cost, "quality": p.quality, "calls": p.calls}
                         for w, p in zip(weights.tolist(), points)]
    return summary


def evaluate_run(agent: CascadePPO, prepared: Prepared, config: CascadeRunConfig) -> dict[str, Any]:
    """The baselines (fitted on train and validation together) and the learned cascade, on the test split.

    The pre-generation router is LinUCB (the RouterBench configuration's agent), swept over the
    same weights as the learned cascade.
    """
    parts = prepared.parts
    fitted = np.sort(np.concatenate([parts.train, parts.validation]))
    known, test = prepared.data(fitted), prepared.data(parts.test)
    router = LinUCB(known.log.n_models, known.features.shape[1]).fit(known.features, known.log.quality,
                                                                     known.log.cost)
    train = prepared.log.subset(parts.train)
    weights = cost_weight_grid(train.quality.mean(axis=0), train.cost.mean(axis=0), config.sweep_points)
    sweep = WeightSweep.run(test.log, lambda w: router.predict(test.features, w), weights)
    report = evaluate_cascade_baselines(prepared.baseline_split(fitted), prepared.baseline_split(parts.test), sweep,
                                        config.baselines)
    reference = test.log.models.index(report["reference_model"])
    report["learned"] = {LEARNED: learned_summary(agent, test, weights, reference, config.baselines)}
    report["cost_weights"] = weights.tolist()
    return report


def export_cascade(agent: CascadePPO, prepared: Prepared, config: CascadeRunConfig, aiq: float, path: Path) -> Path:
    """Script the learned cascade with its metadata (docs/contracts.md §7.4) into ``path``."""
    linear_map, head = agent.exported()
    featurizer = prepared.featurizer
    metadata = PolicyMetadata(
        models=list(prepared.log.models),
        default_cost_weight=config.default_cost_weight,
        cost_weight_range=agent.cost_weight_range,
        score_kind="logit",
        agent=agent.name,
        featurizer={"kind": "tfidf-lsa", "terms": featurizer.n_terms, "dimension": featurizer.dimension,
                    **asdict(config.featurizer)},
        data_fingerprint=prepared.fingerprint,
        metrics={"aiq": aiq},
        training_data={"queries": len(prepared.parts.train), "split": "train"},
    )
    module = build_cascade_policy(featurizer, linear_map, head, metadata, agent.max_calls)
    return save_cascade_policy(module, cascade_metadata(metadata, agent.max_calls), path)


def run(path: Path, out: Path, config: CascadeRunConfig) -> dict[str, Any]:
    """The whole run of the module docstring; returns the report written to ``out/cascade.json``."""
    started = time.perf_counter()
    check_output(out, CASCADE_FOLDER)
    prepared = prepare(path, config)
    parts = prepared.parts
    validation = prepared.data(parts.validation) if len(parts.validation) else None
    training_started = time.perf_counter()
    agent = CascadePPO(config.agent).train(prepared.data(parts.train), validation)
    trained = time.perf_counter()
    report = evaluate_run(agent, prepared, config)
    report["data"] = {"path": str(path), "fingerprint": prepared.fingerprint, "models": list(prepared.log.models),
                      "queries": parts.counts()}
    report["training"] = {
        "seconds": trained - training_started,  # the agent's training alone (reading and featurizing: before)
        "steps": agent.steps_done,
        "best_step": agent.best_step,
        "stopped_early": agent.stopped_early,
        "validation_scores": [{"step": step, "score": score} for step, score in agent.history],
        "max_calls": agent.max_calls,
        "cost_weight_range": agent.cost_weight_range,
    }
    report["config"] = json.loads(json.dumps(asdict(config)))
    create_output(out, CASCADE_FOLDER)
    export_cascade(agent, prepared, config, report["learned"][LEARNED]["aiq"], out / "cascade.pt")
    report["seconds"] = time.perf_counter() - started
    write_text_atomically(out / "cascade.json", json.dumps(report, indent=2))
    write_text_atomically(out / "cascade.md", markdown(report))
    return report


def _reach(reach: dict[str, Any]) -> str:
    if reach["cost"] is None:
        return "not reached | -"
    return f"${reach['cost']:.6f} ({reach['share_of_reference_cost']:.1%}) | {reach['calls']:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """``cascade.md``: the learned cascade beside the baselines on the test split, and how it trained."""
    training, queries = report["training"], report["data"]["queries"]
    lines = [
        "# Cascade on held-out queries",
        "",
        f"Data: `{report['data']['path']}` ({report['data']['fingerprint']}); queries {queries}. Every call's "
        f"cost counts; reference {report['reference_model']}.",
        "",
        "| cascade | AIQ | cost to 95% (share of the reference's) | calls there | cost to 100% (share) | calls there |",
        "|---|---|---|---|---|---|",
    ]
    rows = report["learned"] | report["baselines"]
    for name, summary in rows.items():
        reach = summary["cost_to_reach"]
        lines.append(f"| {name} | {summary['aiq']:.4f} | {_reach(reach['95%'])} | {_reach(reach['100%'])} |")
    lines += [
        "",
        f"Training: {training['steps']} steps ({training['seconds']:.1f} s), parameters kept from step "
        f"{training['best_step']}, stopped early: {training['stopped_early']}; at most {training['max_calls']} calls.",
        "",
        "| cost weight | mean cost (USD) | quality | calls |",
        "|---|---|---|---|",
    ]
    for point in report["learned"][LEARNED]["points"]:
        weight, cost, quality, calls = point["cost_weight"], point["cost"], point["quality"], point["calls"]
        lines.append(f"| {weight:g} | {cost:.6f} | {quality:.4f} | {calls:.2f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m training.cascade",
                                     description="Learn a cascade (PPO) from a log with responses, evaluate it "
                                     "on held-out queries beside the baselines, export it.")
    parser.add_argument("--data", type=Path, required=True, help="full-information log with every model's response")
    parser.add_argument("--out", type=Path, required=True, help="folder for cascade.json, cascade.md, cascade.pt")
    parser.add_argument("--config", type=Path, help="YAML of the settings (training.cascade.CascadeRunConfig)")
    add_set_argument(parser, "override a setting, e.g. --set agent.total_steps=131072 (repeatable)")
    parser.add_argument("--seed", type=int, help="the split's and the agent's seed (default: the config's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run; a user error is one line on stderr and exit status 2."""
    args = parse_args(argv)
    try:
        config = load_run_config(args.config, args.overrides, args.seed)
        report = run(args.data, args.out, config)
    except DataError as error:
        print(f"python -m training.cascade: error: {error}", file=sys.stderr)
        return 2
    learned = report["learned"][LEARNED]
    print(f"learned cascade: AIQ {learned['aiq']:.4f} on {report['data']['queries']['test']} test queries "
          f"({report['seconds']:.1f} s); report in {args.out / 'cascade.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
