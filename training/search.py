"""Hyperparameter search: a grid of configurations from one file, run one after another or as Ray Tune trials.

    python -m training.search configs/search.yaml                    # in this process, in turn
    python -m training.search configs/search.yaml --ray [ADDRESS]    # Ray Tune trials in parallel
    tensorboard --logdir runs/search                                 # every trial's tb/ side by side

A search file names a base run configuration, fixed overrides and a grid of ``--set``-style keys
(any field of :class:`training.config.RunConfig`: cost weights, seeds, LinUCB's or PPO's
hyperparameters)::

    name: search
    base: default.yaml                 # relative to the search file
    set: {evaluation.bootstrap: 200}   # applied to every trial
    grid:
      reward.cost_weight: [100, 300]
      agent.linucb.ridge: [0.3, 1.0]
      seed: [0, 1]
    select: aiq                        # aiq | reward | quality: what picks the best configuration

Every trial is an ordinary run directory (``<out>/<trial>/``: policy.pt, report.json, tb/, ...).
The search writes ``search.json`` and ``search.md`` into ``<out>``: a table of trials with their
test metrics and AIQ, the configurations (grid points other than the seed) ranked by the mean
of ``select`` over their seeds, and the best configuration's frontier figure
(``best-frontier.png``, its first seed's).

"Search" names this grid over configurations; "sweep" in routerl means only the cost-weight
sweep of an evaluation (:mod:`evaluation.sweep`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import ConfigDict, ValidationError
from pydantic.dataclasses import dataclass

from data.outputs import OutputKind, claim_output, replacing, write_text_atomically
from data.schema import DataError, read_yaml
from training.config import load_config
from training.run import prepare_directory, run_inputs, train

SEED_KEY = "seed"
SUMMARY_KEYS = ("agent", "quality", "cost", "reward", "aiq")  # a trial's row besides its name and grid point
SEARCH_DIRECTORY = OutputKind("search directory", frozenset({"search.json", "search.md", "best-frontier.png", "tune"}))


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class SearchConfig:
    """A search file: base configuration, fixed overrides, grid, and the metric that picks the best."""

    base: str  # the run configuration every trial starts from (relative to the search file)
    grid: dict[str, list[Any]]  # --set key -> values; trials are the cartesian product
    name: str = "search"
    set: dict[str, Any] = field(default_factory=dict)  # --set key -> value, for every trial
    select: Literal["aiq", "reward", "quality"] = "aiq"  # higher is better; averaged over seeds


@dataclass(frozen=True)
class Trial:
    """One grid point: its name (the run directory under the search's) and its overrides."""

    name: str
    point: dict[str, Any]  # grid key -> value
    overrides: list[str]  # --set key=value, fixed ones first


def load_search(path: Path) -> tuple[SearchConfig, Path]:
    """Read and validate a search file; returns it and its base configuration's absolute path."""
    tree = read_yaml(path, "search file")
    if not isinstance(tree, dict):
        raise DataError(f"{path}: a search file is a mapping with base, grid (and name, set, select)")
    try:
        search = SearchConfig(**tree)
    except (ValidationError, TypeError) as error:
        raise DataError(f"{path}: invalid search file: {error}") from None
    empty = [key for key, values in search.grid.items() if not values]
    if not search.grid or empty:
        raise DataError(f"{path}: grid needs at least one key with at least one value (empty: {empty})")
    base = (path.parent / search.base).resolve()
    return search, base


def trials(search: SearchConfig) -> list[Trial]:
    """The cartesian product of the grid, in file order (the last key varies fastest)."""
    keys = list(search.grid)
    fixed = [f"{key}={_yaml(value)}" for key, value in search.set.items()]
    result = []
    for number, values in enumerate(itertools.product(*(search.grid[key] for key in keys))):
        point = dict(zip(keys, values))
        overrides = fixed + [f"{key}={_yaml(value)}" for key, value in point.items()]
        result.append(Trial(f"trial-{number:03d}", point, overrides))
    return result


def _yaml(value: Any) -> str:
    """A value as ``--set`` parses it (YAML, one line)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def run_trial(base: Path, trial: Trial, out: Path) -> dict[str, Any]:
    """Train one trial into ``out / trial.name`` (a normal run directory); returns its summary row."""
    config = load_config(base, trial.overrides)
    directory = out / trial.name
    prepare_directory(directory, overwrite=True)
    result = train(config, directory, quiet=True)
    return summarize(trial, result.report)


def summarize(trial: Trial, report: dict[str, Any]) -> dict[str, Any]:
    """A trial's row of the search table: its grid point and its held-out metrics."""
    test = report["test"]
    row = {
        "trial": trial.name,
        "point": trial.point,
        "agent": report["policy"]["agent"],
        "quality": test["mean_quality"],
        "cost": test["mean_cost"],
        "reward": test["mean_reward"],
        "aiq": report["frontier"]["aiq"],
    }
    assert set(row) == {"trial", "point", *SUMMARY_KEYS}
    return row


def run_search(
    search_file: Path, out: Path, ray_address: str | None = None, use_ray: bool = False, overwrite: bool = False
) -> dict[str, Any]:
    """Run every trial (in turn, or as Ray Tune trials) and write the gathered report into ``out``."""
    search, base = load_search(search_file)
    out = out.resolve()  # Tune runs each trial in its own working directory
    grid = trials(search)
    inputs: dict[str | Path, str] = {search_file: "search file"}
    for trial in grid:  # a bad base or key fails here, before any trial runs
        inputs |= run_inputs(load_config(base, trial.overrides), base)
    claim_output(out, SEARCH_DIRECTORY, overwrite, inputs)
    rows = _run_on_ray(base, grid, out, ray_address) if use_ray else [run_trial(base, t, out) for t in grid]
    report = gather(search, rows)
    if report["best"] is not None:
        with replacing(out / "best-frontier.png") as temporary:
            shutil.copyfile(out / report["best"]["trials"][0] / "frontier.png", temporary)
    write_text_atomically(out / "search.json", json.dumps(report, indent=2) + "\n")
    write_text_atomically(out / "search.md", markdown(report))
    return report


def _run_on_ray(base: Path, grid: list[Trial], out: Path, address: str | None) -> list[dict[str, Any]]:
    """Every trial as a Ray Tune trial (one CPU each, as many at once as the cluster holds)."""
    import ray
    from ray import tune

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    by_name = {trial.name: trial for trial in grid}

    def trainable(params: dict[str, Any]) -> None:
        row = run_trial(base, by_name[params["trial"]], out)
        tune.report({key: value for key, value in row.items() if key != "point"})  # flat metrics

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"trial": tune.grid_search(list(by_name))},
        run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=0),
    )
    grid_results = tuner.fit()
    results = [grid_results[index] for index in range(len(grid_results))]
    failed = [result.error for result in results if result.error is not None]
    if failed:
        raise DataError(f"{len(failed)} search trial(s) failed; the first: {failed[0]}")
    metrics = {str(m["trial"]): m for m in (result.metrics or {} for result in results)}  # plus Tune's own keys
    return [{"trial": t.name, "point": t.point} | {key: metrics[t.name][key] for key in SUMMARY_KEYS} for t in grid]


def gather(search: SearchConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The search report: every trial, the configurations ranked by mean ``select`` over seeds, the best."""
    configurations: dict[str, dict[str, Any]] = {}
    for row in rows:
        point = {key: value for key, value in row["point"].items() if key != SEED_KEY}
        entry = configurations.setdefault(
            json.dumps(point, sort_keys=True, default=str), {"point": point, "trials": [], "values": []}
        )
        entry["trials"].append(row["trial"])
        entry["values"].append(row[search.select])
    ranked = sorted(
        (
            {
                "point": entry["point"],
                "trials": entry["trials"],
                search.select: float(np.mean(entry["values"])),
                f"{search.select}_std": float(np.std(entry["values"])),
            }
            for entry in configurations.values()
        ),
        key=lambda entry: -entry[search.select],
    )
    return {
        "name": search.name,
        "select": search.select,
        "trials": rows,
        "configurations": ranked,
        "best": ranked[0] if ranked else None,
    }


def markdown(report: dict[str, Any]) -> str:
    """``search.md``: the trials table, the ranked configurations, the best one's frontier."""
    keys = list(report["trials"][0]["point"]) if report["trials"] else []
    select = report["select"]
    lines = [
        f"# Search {report['name']}",
        "",
        f"{len(report['trials'])} trials; configurations ranked by mean test {select} over seeds.",
        "",
        "| trial | " + " | ".join(keys) + " | agent | quality | cost (USD/query) | reward | AIQ |",
        "|---|" + "---|" * len(keys) + "---|---|---|---|---|",
    ]
    lines += [
        f"| {row['trial']} | "
        + " | ".join(str(row["point"][key]) for key in keys)
        + f" | {row['agent']} | {row['quality']:.4f} | {row['cost']:.6f} | {row['reward']:.4f} | {row['aiq']:.4f} |"
        for row in report["trials"]
    ]
    lines += [
        "",
        "## Configurations",
        "",
        f"| rank | configuration | trials | mean {select} | std |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {rank} | {json.dumps(entry['point'], default=str)} | {len(entry['trials'])} | "
        f"{entry[select]:.4f} | {entry[f'{select}_std']:.4f} |"
        for rank, entry in enumerate(report["configurations"], start=1)
    ]
    if report["best"] is not None:
        lines += [
            "",
            f"## Best: {json.dumps(report['best']['point'], default=str)}",
            "",
            f"Frontier of {report['best']['trials'][0]} (test split):",
            "",
            "![best frontier](best-frontier.png)",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m training.search SEARCH_FILE [--out DIR] [--ray [ADDRESS]] [--overwrite]``."""
    parser = argparse.ArgumentParser(prog="python -m training.search", description=__doc__.split("\n")[0])
    parser.add_argument("search", type=Path, help="search file (YAML: base, grid, set, select)")
    parser.add_argument("--out", type=Path, help="search directory (default: runs/<search name>)")
    parser.add_argument(
        "--ray", nargs="?", const="", metavar="ADDRESS", help="run trials as Ray Tune trials (ADDRESS: a cluster)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing search directory (only one routerl wrote, holding nothing else)",
    )
    args = parser.parse_args(argv)
    try:
        search, _ = load_search(args.search)
        out = args.out or Path(__file__).resolve().parent.parent / "runs" / search.name
        report = run_search(
            args.search, out, ray_address=args.ray or None, use_ray=args.ray is not None, overwrite=args.overwrite
        )
    except DataError as error:
        print(f"training.search: error: {error}", file=sys.stderr)
        return 2
    print(markdown(report))
    print(f"search directory: {out}   (tensorboard --logdir {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
