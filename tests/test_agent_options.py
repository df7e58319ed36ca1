"""Settings an agent would not read are refused in one line, before any work (agents/registry.py).

A setting the chosen kind does not read would train the same model as without it, under a name
or an option that says otherwise. Each such pair is a :class:`DataError` at configuration load
(``train.py`` exit 2, one line); each kind left without ``agent.learning`` learns its own way; the
settings each kind does read still pass. Plus the pairs that used to crash: online learning on a
bandit-feedback log, and ``--target-cost`` beside a budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, linear_world, run_train

from agents.lints import LinTS
from agents.linucb import LinUCB
from data.schema import DataError
from data.synth import SynthConfig, generate
from data.synth.writers import write
from training.compare import cross_validated_sweeps
from training.config import load_config
from training.run import prepare_directory, train

DEFAULT = ROOT / "configs" / "default.yaml"
PREFERENCE = ["reward.cost_weight=0", "reward.preference.low=1.0"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["agent.kind=lints", "agent.learning=fit"], "lints differs from linucb only in how it explores"),
        (["agent.kind=knn", "agent.learning=online"], "knn is a supervised router fitted from the log"),
        (["agent.kind=logistic", "agent.learning=online"], "logistic is a supervised router"),
        (["agent.kind=ppo", "agent.learning=fit"], "ppo learns only by interacting"),
        (["agent.kind=direct"], "is exactly what agent.kind=linucb learns with agent.learning=fit"),
        (["agent.kind=knn", "reward.budget.budget=0.0003"], "a budget's multiplier is learned only while"),
        (["reward.budget.budget=0.0003"], r"reward.budget with agent.kind=linucb, agent.learning=fit"),
        (PREFERENCE, "reward.preference with agent.kind=linucb, agent.learning=fit"),
        (["agent.kind=ppo", *PREFERENCE], "ppo draws its training weights from agent.ppo.preference"),
        (["reward.latency_weight=0.1"], "no agent learns from latency"),
        (["agent.linucb.alpha=0.5"], r"agent.linucb.alpha=0.5 acts only while learning online"),
        (["agent.online_steps=3000"], "agent.online_steps=3000 acts only while learning online"),
        (["agent.checkpoint_every=100"], "agent.checkpoint_every=100 acts only while learning online"),
        (["agent.kind=ppo", "agent.online_steps=3000"], "agent.online_steps=3000 is not read by agent.kind=ppo"),
        (["agent.kind=logistic", "agent.peers.neighbours=[3]"], r"agent.peers.neighbours=\(3,\) is not read"),
        (["agent.kind=knn", "agent.peers.inverse_regularisation=[1.0]"], "is not read by agent.kind=knn"),
        (["agent.kind=ppo", "reward.budget.budget=0.0003", "agent.ppo.patience=3"], "under reward.budget"),
    ],
)
def test_a_setting_the_agent_would_not_read_is_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message) as refused:
        load_config(DEFAULT, overrides)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["agent.learning=online", "agent.linucb.alpha=0.5", "agent.online_steps=3000", *PREFERENCE],
        ["agent.learning=online", "reward.budget.budget=0.0003"],
        ["agent.kind=lints", "agent.lints.scale=0.1", "reward.budget.budget=0.0003"],
        ["agent.kind=ppo", "reward.budget.budget=0.0003", "agent.checkpoint_every=100"],
        ["agent.kind=knn", "agent.peers.neighbours=[3]", "agent.linucb.alpha=0.5"],  # another kind's section
        ["agent.kind=logistic", "agent.peers.inverse_regularisation=[1.0]", "agent.peers.folds=3"],
    ],
)
def test_the_settings_each_kind_reads_pass(overrides: list[str]) -> None:
    load_config(DEFAULT, overrides)


@pytest.mark.parametrize(("kind", "learning"), [("linucb", "fit"), ("lints", "online"), ("ppo", "online"),
                                                ("knn", "fit"), ("logistic", "fit")])
def test_a_kind_without_agent_learning_learns_its_own_way(kind: str, learning: str) -> None:
    """configs/default.yaml leaves ``agent.learning`` null: the resolved config (and report) names the kind's own."""
    config = load_config(DEFAULT, [f"agent.kind={kind}"])
    assert config.agent.learning == learning and config.to_dict()["agent"]["learning"] == learning


def test_lints_fitted_from_a_log_would_be_linucb() -> None:
    """Why lints with learning=fit is refused: its fit is LinUCB's, to the last digit."""
    x, quality, cost = linear_world(300)
    np.testing.assert_array_equal(LinTS(3, x.shape[1]).fit(x, quality, cost).linear_map(),
                                  LinUCB(3, x.shape[1]).fit(x, quality, cost).linear_map())


def test_the_comparison_runs_lints_its_own_way() -> None:
    """``training.compare`` learns each kind as it learns by default: lints online, so it is not linucb again."""
    synth = generate(SynthConfig(queries=300, seed=3))
    log = synth.routing_log()
    config = load_config(DEFAULT, ["agent.online_steps=400", "agent.learning=online", "featurizer.components=4"])
    weights = np.array([0.0, 300.0, 3000.0])
    sweeps = cross_validated_sweeps(log, config, ["linucb", "lints"], 2, weights)
    assert not np.array_equal(sweeps["linucb"].actions, sweeps["lints"].actions)


def test_online_learning_on_a_bandit_log_learns_from_its_estimated_table(tmp_path: Path) -> None:
    """A bandit-feedback log's training split is a table of estimates; the environment serves it (no traceback)."""
    data = tmp_path / "bandit.jsonl"
    write(generate(SynthConfig(queries=400, bandit=True, logging_policy="uniform", seed=4)), data)
    config = load_config(DEFAULT, [f"data.path={data}", "agent.learning=online", "agent.online_steps=300",
                                   "agent.checkpoint_every=100", "evaluation.bootstrap=0"])
    prepare_directory(tmp_path / "run", overwrite=False)
    report = train(config, tmp_path / "run", quiet=True).report
    assert report["data"]["feedback"] == "bandit"
    assert report["policy"]["learning"] == "online" and report["policy"]["steps"] == 300


def test_train_py_refuses_a_budget_beside_a_target_in_one_line(tmp_path: Path) -> None:
    """Both would set the exported cost weight: ``--target-*`` on validation, the budget as its λ̄."""
    budget = ("--set", "agent.learning=online", "--set", "reward.budget.budget=0.0003")
    done = run_train("--out", str(tmp_path / "run"), *budget, "--target-cost", "0.0003", timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("train.py: error:") and len(done.stderr.strip().splitlines()) == 1
    assert "reward.budget learns it online" in done.stderr
    assert not (tmp_path / "run" / "report.json").exists()


def test_resume_after_editing_the_agent_settings_is_a_data_error(tmp_path: Path) -> None:
    """A finished PPO run holds its last checkpoint; resumed under other agent.ppo settings it cannot continue.

    ``train.py --resume`` prints a :class:`DataError` as one line and exits 2 (tests/test_train.py).
    """
    out = tmp_path / "run"
    ppo = ["evaluation.bootstrap=0", "agent.ppo.total_steps=1024", "agent.checkpoint_every=1024",
           "tuning.enabled=false"]  # the configured settings, as written: no tuning to move them
    prepare_directory(out, overwrite=False)
    report = train(load_config(ROOT / "configs" / "ppo.yaml", ppo), out, quiet=True).report
    assert report["policy"]["learning"] == "online" and report["policy"]["steps"] == 1024
    edited = load_config(out / "config.yaml", ["agent.ppo.learning_rate=0.01"])
    with pytest.raises(DataError, match="cannot resume") as refused:
        train(edited, out, quiet=True)
    assert "learning_rate 0.001 → 0.01" in str(refused.value) and "\n" not in str(refused.value)
