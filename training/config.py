"""Run configuration: typed dataclasses loaded from YAML, with ``--set a.b=c`` overrides.

Relative paths in a config file are resolved against the folder of that file; paths given on
the command line (``--data``, ``--set data.path=...``) against the current directory.
"""

from __future__ import annotations

from dataclasses import asdict, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError
from pydantic.dataclasses import dataclass

from agents.factorisation import FactorisationConfig
from agents.lints import LinTSConfig
from agents.linucb import LinUCBConfig
from agents.mlp import MlpConfig
from agents.peers import PeerConfig
from agents.ppo import PPOConfig
from agents.registry import check_options, default_learning, registration
from data.featurizer import FeaturizerConfig
from data.outputs import replacing
from data.rules import MAX_COST
from data.schema import DataError, read_yaml
from data.splits import SplitFractions
from envs.rewards import RewardConfig
from envs.task import EnvConfig
from evaluation.evaluate import EvaluationConfig
from policies.faults import fault_point
from policies.rules import read_rules

STRICT = ConfigDict(extra="forbid")
Config = TypeVar("Config")


@dataclass(frozen=True, config=STRICT)
class DataConfig:
    """Where the log is and how to read and split it."""

    path: str = "data/demo/demo.jsonl"  # a log file or a directory of log files
    prices: str | None = None  # price table for rows with tokens but no cost (None: configs/prices.yaml)
    energy: str | None = None  # energy table estimating energy_wh where it is not logged (None: configs/energy.yaml)
    # token mode (docs/contracts.md §2.10): auto when every outcome has token counts and the table prices every
    # model; usd: never; tokens: required (else an error). Every kind but ppo estimates tokens
    cost_mode: Literal["auto", "usd", "tokens"] = "auto"
    allow_pickle: bool = False  # read RouterBench pandas pickles (they can run code: trusted files only)
    # USD per call: a row with a higher cost (given or priced) is rejected as `bad cost`; .inf: no bound
    max_cost: PositiveFloat = MAX_COST
    split: Literal["hash", "time"] = "hash"  # by hash of query_id and seed, or by timestamp
    fractions: SplitFractions = field(default_factory=SplitFractions)


def _registered_kind(kind: str) -> str:
    """``agent.kind`` must be registered in :mod:`agents.registry` (else its :class:`DataError`, as it is)."""
    registration(kind)
    return kind


@dataclass(frozen=True, config=STRICT)
class AgentConfig:
    """Which learner, how it learns, and its hyperparameters."""

    # one of agents.registry.KINDS: linucb | lints (Thompson sampling) | ppo | knn, logistic, mlp, mf (supervised peers)
    kind: Annotated[str, AfterValidator(_registered_kind)] = "linucb"
    # fit: one pass over the log; online: interaction with the env. null: the kind's own (fit for linucb,
    # knn, logistic, mlp, mf; online for lints, ppo). What each kind accepts and reads: agents/registry.py
    learning: Literal["fit", "online"] | None = None
    online_steps: int = 20000  # episodes of env interaction when learning online
    checkpoint_every: int = 5000  # online learning and PPO: steps between checkpoints (atomic; --resume continues)
    linucb: LinUCBConfig = field(default_factory=LinUCBConfig)
    lints: LinTSConfig = field(default_factory=LinTSConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)  # agents/ppo.py documents every field
    peers: PeerConfig = field(default_factory=PeerConfig)  # grids searched for knn and logistic
    mlp: MlpConfig = field(default_factory=MlpConfig)  # grids searched for mlp (agents/mlp.py)
    mf: FactorisationConfig = field(default_factory=FactorisationConfig)  # grids searched for mf

    def __post_init__(self) -> None:
        """Resolve ``learning`` left out to the kind's own, so that config.yaml and the report say it."""
        if self.learning is None:
            object.__setattr__(self, "learning", default_learning(self.kind))  # frozen: set once, here


@dataclass(frozen=True, config=STRICT)
class TuningConfig:
    """Self-tuning: the hyperparameters that matter, chosen by cross-validation on the training split.

    :mod:`training.tuning` documents the method. Every candidate of the grid (and the configured
    values themselves) is scored on the pooled out-of-fold decisions of a ridge fit (LinUCB's own
    greedy rule); the best replaces the configured ``featurizer`` values and
    ``agent.linucb.ridge`` / ``agent.lints.ridge`` for linucb, lints and ppo (PPO's own settings are
    then tried within ``ppo_seconds``); the supervised peers tune themselves when they fit. ``train.py --no-tune`` (or
    ``enabled: false``) keeps the configured values exactly.
    """

    enabled: bool = True
    # aiq: AIQ of the out-of-fold frontier over the single models' cost range (every trade-off);
    # reward: mean reward at reward.cost_weight (the one operating point)
    objective: Literal["aiq", "reward"] = "aiq"
    folds: Annotated[int, Field(ge=2)] = 5  # k of the k-fold cross-validation
    # query: by query-id hash; task: whole tasks per fold (every training query needs a task, and at
    # least `folds` tasks); auto: task when it can, else query. By task lost on RouteProfile (BENCHMARKS.md)
    folds_by: Literal["auto", "query", "task"] = "query"
    # at most this many training queries are cross-validated (those first by query-id hash): the
    # cost of tuning is bounded whatever the log's size
    max_queries: PositiveInt = 20_000
    min_df: tuple[PositiveInt, ...] = (1, 2)  # featurizer.min_df candidates
    components: tuple[NonNegativeInt, ...] = (0, 8, 16, 32, 64)  # featurizer.components (0: no text representation)
    whiten: tuple[bool, ...] = (True, False)  # featurizer.whiten candidates
    ridge: tuple[PositiveFloat, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)  # λ candidates
    ppo_seconds: PositiveFloat = 300.0  # agent.kind ppo: time for trying PPO's settings (training/ppo_tuning.py)

    def __post_init__(self) -> None:
        """Every grid needs at least one value."""
        for name in ("min_df", "components", "whiten", "ridge"):
            if not getattr(self, name):
                raise ValueError(f"tuning.{name} needs at least one candidate")


@dataclass(frozen=True, config=STRICT)
class RunConfig:
    """Everything one training run needs; written resolved as ``config.yaml`` in the run dir."""

    name: str = "default"  # run name; the run directory defaults to runs/<name>
    seed: int = 0  # seeds the split, the featurizer, the environment and the agent
    # numpy's BLAS threads during the run (null: the library's default, one per core). routerl's
    # matrices are thin (N × d, d ≈ 19-256): a second thread gains little, and on a shared machine
    # OpenBLAS threads waiting for a busy core made the LinUCB fit and evaluation 10-60× slower
    # (BENCHMARKS.md, end to end). PPO's torch threads are agent.ppo.threads.
    blas_threads: PositiveInt | None = 1
    # text: features from the query text (the policy takes text); embedding: the log's own
    # `embedding` column and a bias (the policy takes embeddings; the service must compute them)
    input: Literal["text", "embedding"] = "text"
    data: DataConfig = field(default_factory=DataConfig)
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    reward: RewardConfig = field(default_factory=lambda: RewardConfig(cost_weight=30.0))  # envs.rewards
    # On a bandit-feedback log, env.feedback (dm | ips | dr) is what training learns from ("full": dm);
    # evaluation always uses DR and reports every off-policy estimator.
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)  # cross-validated choice of hyperparameters
    # a rules file (YAML, docs/contracts.md §2.9) compiled into policy.pt: conditions on the text -> the
    # models allowed; relative to the config file (train.py --rules: to the current directory)
    rules: str | None = None
    # {model: maximum share of the queries, in (0, 1]} (docs/contracts.md §3.3): a Lagrange multiplier per capped
    # model, fitted on the training queries (evaluation.capacity), goes into policy.pt's metadata; serve.py holds it
    capacity: dict[str, Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse a setting the agent would not read (:func:`agents.registry.check_options`): a :class:`DataError`."""
        assert self.agent.learning is not None  # resolved by AgentConfig
        check_options(self.agent.kind, self.agent.learning, self.agent, self.reward)
        if self.rules is not None:
            if self.input == "embedding":
                raise DataError(f"{self.rules}: rules match the query text, and an input: embedding policy has none")
            read_rules(self.rules)  # malformed: one DataError at load, before anything is read or written

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for YAML and reports)."""
        return asdict(self)


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise DataError(f"--set {dotted}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def read_config_tree(path: Path | None) -> dict[str, Any]:
    """The configuration file's mapping of sections ({} without a file); DataError for anything else."""
    if path is None:
        return {}
    loaded = read_yaml(path, "config")
    if loaded is not None and not isinstance(loaded, dict):
        raise DataError(f"{path}: a config must be a mapping of sections")
    return loaded or {}


def load_config(
    path: Path | None, overrides: list[str], cli_data: str | None = None, seed: int | None = None
) -> RunConfig:
    """Read YAML (or defaults), apply ``--set key=value`` (values parsed as YAML), validate."""
    tree = read_config_tree(path)
    if path is not None:
        tree.setdefault("name", path.stem)
        data = tree.get("data")
        if isinstance(data, dict):
            for key in ("path", "prices", "energy"):
                if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
                    data[key] = str((path.parent / data[key]).resolve())
        if isinstance(tree.get("rules"), str) and not Path(tree["rules"]).is_absolute():
            tree["rules"] = str((path.parent / tree["rules"]).resolve())
    apply_overrides(tree, overrides)
    if cli_data is not None:
        _set(tree, "data.path", cli_data)
    if seed is not None:
        tree["seed"] = seed
    return validated(RunConfig, tree, path)


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> None:
    """Apply ``--set key=value`` overrides (dotted keys; values parsed as YAML) to a configuration tree."""
    for override in overrides:
        key, separator, raw = override.partition("=")
        if not separator or not key:
            raise DataError(f"--set {override!r}: expected key=value, e.g. agent.linucb.ridge=3")
        _set(tree, key.strip(), yaml.safe_load(raw))


def validated(kind: type[Config], tree: dict[str, Any], path: Path | None) -> Config:
    """``kind(**tree)``, every invalid field one :class:`DataError` naming the file and the fields."""
    try:
        return kind(**tree)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise DataError(f"invalid configuration{f' {path}' if path else ''}: {problems}") from None
    except (TypeError, ValueError) as error:
        raise DataError(f"invalid configuration{f' {path}' if path else ''}: {error}") from None


def dump_config(config: RunConfig, path: Path) -> None:
    """Write the resolved configuration as YAML, atomically (:func:`data.outputs.replacing`).

    A run killed meanwhile leaves the previous file or the new one, whole, and ``--resume`` reads
    it; the fault points ``config-written`` and ``config-renamed`` (:mod:`policies.faults`) let
    tests kill it on either side of the rename.
    """
    with replacing(path) as temporary:
        temporary.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
        fault_point("config-written")
    fault_point("config-renamed")
