"""Tests of the synthetic log generator (data/synth/): truth, determinism, writers, CLI."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import run_python

from data.synth import COLUMNS, SynthConfig, SynthLog, add_arguments, generate, main, write
from data.synth.cli import config_from_args

ROOT = Path(__file__).resolve().parents[1]
SMALL = SynthConfig(queries=400, models=4, seed=3)


@pytest.fixture(scope="module")
def log() -> SynthLog:
    """A mid-sized full-information log shared by the read-only tests."""
    return generate(SynthConfig(queries=3000, models=5, seed=7))


def _utility(lg: SynthLog, cost_weight: float) -> np.ndarray:
    """(N, K) ground-truth reward of each arm: expected_quality - cost_weight * cost."""
    return lg.expected_quality - cost_weight * lg.cost


def _arrays(lg: SynthLog) -> dict[str, np.ndarray]:
    return {
        "expected_quality": lg.expected_quality,
        "quality": lg.quality,
        "cost": lg.cost,
        "prompt_tokens": lg.prompt_tokens,
        "completion_tokens": lg.completion_tokens,
        "timestamps": lg.timestamps.astype(np.int64),
        "topic": lg.topic,
    }


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_log() -> None:
    a, b = generate(SMALL), generate(SMALL)
    for name, arr in _arrays(a).items():
        np.testing.assert_array_equal(arr, _arrays(b)[name], err_msg=name)
    assert a.queries == b.queries
    assert a.query_ids == b.query_ids
    assert a.model_names == b.model_names


def test_different_seed_gives_different_log() -> None:
    a = generate(SMALL)
    b = generate(dataclasses.replace(SMALL, seed=4))
    assert a.queries != b.queries
    assert not np.array_equal(a.expected_quality, b.expected_quality)
    assert not np.array_equal(a.quality, b.quality)


def test_bandit_flag_keeps_the_same_world() -> None:
    full = generate(SMALL)
    bandit = generate(dataclasses.replace(SMALL, bandit=True))
    assert full.queries == bandit.queries
    np.testing.assert_array_equal(full.expected_quality, bandit.expected_quality)
    np.testing.assert_array_equal(full.cost, bandit.cost)


def test_bandit_is_deterministic() -> None:
    cfg = dataclasses.replace(SMALL, bandit=True, logging_policy="softmax")
    a, b = generate(cfg), generate(cfg)
    assert a.action is not None and b.action is not None
    np.testing.assert_array_equal(a.action, b.action)
    np.testing.assert_array_equal(a.propensity, b.propensity)


# --------------------------------------------------------------------------- shapes, ranges


def test_shapes_and_dtypes(log: SynthLog) -> None:
    n, k = 3000, 5
    assert log.shape == (n, k)
    assert len(log.queries) == n and len(set(log.query_ids)) == n
    assert log.query_ids[0] == "q000001"
    assert len(set(log.model_names)) == k
    for name in ("expected_quality", "quality", "cost", "completion_tokens"):
        assert getattr(log, name).shape == (n, k), name
    for name in ("prompt_tokens", "timestamps", "topic", "difficulty"):
        assert getattr(log, name).shape == (n,), name
    assert log.expected_quality.dtype == np.float64 and log.quality.dtype == np.float64
    assert log.timestamps.dtype == np.dtype("datetime64[s]")
    assert log.action is None and log.propensity is None and not log.is_bandit


def test_ranges(log: SynthLog) -> None:
    eq = log.expected_quality
    assert eq.min() >= 0.02 and eq.max() <= 0.98
    assert set(np.unique(log.quality).tolist()) == {0.0, 1.0}
    assert (log.prompt_tokens >= 1).all() and (log.completion_tokens >= 1).all()
    assert np.all(np.diff(log.timestamps.astype(np.int64)) > 0)
    assert all(q.strip() for q in log.queries)
    assert set(np.unique(log.topic).tolist()) == set(range(6))
    assert set(np.unique(log.difficulty).tolist()) == {0, 1, 2}


def test_quality_is_bernoulli_of_expected_quality(log: SynthLog) -> None:
    # Mean of 15,000 Bernoulli draws: standard error < 0.005.
    assert abs(log.quality.mean() - log.expected_quality.mean()) < 0.02
    hi, lo = log.expected_quality > 0.8, log.expected_quality < 0.2
    assert log.quality[hi].mean() > 0.8 and log.quality[lo].mean() < 0.2


def test_costs_follow_prices_and_stated_range(log: SynthLog) -> None:
    assert (log.cost >= 0).all()
    assert log.cost.min() >= 1e-7 and log.cost.max() <= 5e-2
    median = np.median(log.cost, axis=0)
    assert np.all(np.diff(median) > 0), "models are sorted from cheapest to dearest"
    assert 1e-6 <= median[0] <= 1e-4 and 1e-4 <= median[-1] <= 1e-2
    ratio = log.input_price.max() / log.input_price.min()
    assert 30 <= ratio <= 70, "about 50x between the cheapest and the dearest model"
    recomputed = (log.prompt_tokens[:, None] * log.input_price + log.completion_tokens * log.output_price) / 1e6
    np.testing.assert_allclose(log.cost, recomputed, rtol=1e-6, atol=1e-12)


def test_dearer_models_better_on_average_but_not_everywhere(log: SynthLog) -> None:
    """RouterBench's shape: quality rises with price, the dearest model leads by a clear margin,
    yet on some topics a cheaper model is better on the plain queries."""
    mean = log.expected_quality.mean(axis=0)
    assert np.all(np.diff(mean) > 0.03), f"mean quality must rise with price: {mean}"
    assert mean[-1] > mean[0] + 0.1
    best = log.expected_quality.argmax(axis=1)
    best_by_topic = [np.bincount(best[log.topic == t], minlength=5).argmax() for t in range(6)]
    assert len(set(best_by_topic)) >= 2, "no single model should be best on every topic"
    plain = log.difficulty == 0
    best_on_plain_queries = [log.expected_quality[plain & (log.topic == t)].mean(axis=0).argmax() for t in range(6)]
    assert sum(b < 4 for b in best_on_plain_queries) >= 2, "cheaper specialists beat the dearest on some topics"
    assert 4 in best_on_plain_queries, "the dearest model keeps a topic of its own"


@pytest.mark.parametrize("seed", range(5))
def test_default_world_has_the_routerbench_shape_for_any_seed(seed: int) -> None:
    """With the defaults (the demo's settings), whatever the seed: mean quality rises with price
    and the dearest model is the best on average by at least 0.03."""
    mean = generate(SynthConfig(seed=seed)).expected_quality.mean(axis=0)
    assert np.all(np.diff(mean) > 0), f"seed {seed}: {mean}"
    assert mean[-1] - mean[-2] > 0.03, f"seed {seed}: {mean}"


def test_difficulty_markers_lower_quality(log: SynthLog) -> None:
    easy = log.expected_quality[log.difficulty == 0].mean(axis=0)
    hard = log.expected_quality[log.difficulty == 2].mean(axis=0)
    assert (hard < easy).all()
    # Hard queries hurt the cheapest model more than the dearest.
    assert (easy - hard)[0] > (easy - hard)[-1]


def test_dearest_model_is_best_on_most_hard_queries(log: SynthLog) -> None:
    best = log.expected_quality.argmax(axis=1)
    dearest_share = [(best[log.difficulty == d] == 4).mean() for d in range(3)]
    assert dearest_share[2] > 0.6, dearest_share
    assert dearest_share[0] < dearest_share[1] < dearest_share[2], "its lead grows with difficulty"


@pytest.mark.parametrize(("w", "margin"), [(0.0, 0.01), (200.0, 0.08)])
def test_oracle_beats_best_single_model(log: SynthLog, w: float, margin: float) -> None:
    """In expectation the per-query oracle beats every single model; by little when cost is free
    (the dearest model is the best on most queries), by a lot when cost counts."""
    utility = _utility(log, w)
    oracle = utility.max(axis=1).mean()
    best_single = utility.mean(axis=0).max()
    assert oracle - best_single > margin


def test_realised_oracle_is_better_and_far_cheaper_than_the_dearest_model(log: SynthLog) -> None:
    """As on RouterBench (0.976 at $0.00021 against gpt-4's 0.879 at $0.0050): the cheapest model
    that answered each query correctly beats the dearest model's quality at a fraction of its cost."""
    rows = np.arange(log.shape[0])
    cheapest_correct = np.where(log.quality.max(axis=1) > 0, np.argmax(log.quality > 0, axis=1), 0)
    oracle_quality = log.quality[rows, cheapest_correct].mean()
    oracle_cost = log.cost[rows, cheapest_correct].mean()
    assert oracle_quality > log.quality[:, -1].mean() + 0.05
    assert oracle_cost < 0.25 * log.cost[:, -1].mean()


def test_topic_words_carry_signal(log: SynthLog) -> None:
    # A word's topic should be predictable: the most frequent words of topic 0 rarely occur in
    # queries of other topics, so a text featurizer can learn the topic.
    words0: dict[str, int] = {}
    for q in np.array(log.queries, dtype=object)[log.topic == 0][:300]:
        for w in q.lower().rstrip("?.").split():
            words0[w] = words0.get(w, 0) + 1
    other = " ".join(np.array(log.queries, dtype=object)[log.topic != 0][:300]).lower()
    top = sorted(words0, key=lambda w: words0[w], reverse=True)[:40]
    specific = [w for w in top if f" {w} " not in f" {other} "]
    assert len(specific) >= 5


def test_drift_changes_skills_over_time() -> None:
    cfg = SynthConfig(queries=4000, models=4, seed=2, query_noise=0.0)
    still, moving = generate(cfg), generate(dataclasses.replace(cfg, drift=True))
    half = 2000

    def early_late(lg: SynthLog) -> np.ndarray:
        return lg.expected_quality[half:].mean(0) - lg.expected_quality[:half].mean(0)

    assert np.abs(early_late(moving)).max() > 0.08
    assert np.abs(early_late(still)).max() < 0.04


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="models"):
        SynthConfig(models=1)
    with pytest.raises(ValueError, match="logging_policy"):
        SynthConfig(logging_policy="greedy")
    with pytest.raises(ValueError, match="temperature"):
        SynthConfig(temperature=0.0)


def test_model_count_limits() -> None:
    two = generate(SynthConfig(queries=10, models=2))
    many = generate(SynthConfig(queries=10, models=26))
    assert two.model_names == ["tiny-1b", "frontier-xl"]
    assert len(set(many.model_names)) == 26
    assert np.all(np.diff(many.input_price) >= 0)


# --------------------------------------------------------------------------- bandit logs


def test_uniform_propensity_is_one_over_k() -> None:
    lg = generate(dataclasses.replace(SMALL, bandit=True, logging_policy="uniform"))
    assert lg.action is not None and lg.propensity is not None
    np.testing.assert_array_equal(lg.propensity, np.full(400, 0.25))
    assert lg.action.min() >= 0 and lg.action.max() <= 3


def test_eps_greedy_propensities_are_exact() -> None:
    eps, k = 0.3, 4
    cfg = dataclasses.replace(SMALL, bandit=True, logging_policy="eps-greedy", epsilon=eps)
    lg = generate(cfg)
    assert lg.action is not None and lg.propensity is not None
    greedy = _utility(lg, cfg.cost_weight).argmax(axis=1)
    is_greedy = lg.action == greedy
    np.testing.assert_allclose(lg.propensity[is_greedy], 1 - eps + eps / k)
    np.testing.assert_allclose(lg.propensity[~is_greedy], eps / k)
    assert is_greedy.any() and (~is_greedy).any()


def test_softmax_propensities_are_exact() -> None:
    cfg = dataclasses.replace(SMALL, bandit=True, logging_policy="softmax", temperature=0.05)
    lg = generate(cfg)
    assert lg.action is not None and lg.propensity is not None
    u = _utility(lg, cfg.cost_weight) / cfg.temperature
    p = np.exp(u - u.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(lg.propensity, p[np.arange(400), lg.action], rtol=1e-12)
    assert (lg.propensity > 0).all() and (lg.propensity <= 1).all()


@pytest.mark.parametrize("policy", ["uniform", "eps-greedy", "softmax"])
def test_empirical_action_frequencies_match_propensities(policy: str) -> None:
    n = 40000
    lg = generate(SynthConfig(queries=n, models=5, seed=11, bandit=True, logging_policy=policy))
    assert lg.action is not None and lg.logging_probabilities is not None
    probs = lg.logging_probabilities
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(lg.propensity, probs[np.arange(n), lg.action])
    observed = np.bincount(lg.action, minlength=5) / n
    expected = probs.mean(axis=0)
    # Each frequency is a mean of n independent indicators: std <= 0.5 / sqrt(n) = 0.0025.
    np.testing.assert_allclose(observed, expected, atol=0.01)


def test_eps_greedy_prefers_the_greedy_arm() -> None:
    lg = generate(SynthConfig(queries=5000, seed=1, bandit=True, logging_policy="eps-greedy"))
    assert lg.action is not None
    greedy = _utility(lg, 200.0).argmax(axis=1)
    share = (lg.action == greedy).mean()
    assert abs(share - (1 - 0.2 + 0.2 / 5)) < 0.02


# --------------------------------------------------------------------------- writers


def test_jsonl_round_trip_full_information(tmp_path: Path) -> None:
    lg = generate(SMALL)
    path = tmp_path / "log.jsonl"
    assert write(lg, path) == 400 * 4
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 1600
    expected_cols = [c for c in COLUMNS if c != "propensity"]
    assert all(list(r) == expected_cols for r in rows)
    for i in (0, 1, 5, 1599):
        r, n, k = rows[i], i // 4, i % 4
        assert r["query_id"] == lg.query_ids[n] and r["query"] == lg.queries[n]
        assert r["model"] == lg.model_names[k]
        assert r["quality"] == lg.quality[n, k]
        assert r["cost"] == lg.cost[n, k]  # exact: written with repr
        assert r["expected_quality"] == lg.expected_quality[n, k]
        assert r["prompt_tokens"] == lg.prompt_tokens[n]
        assert r["completion_tokens"] == lg.completion_tokens[n, k]
        assert r["timestamp"] == str(lg.timestamps[n]) + "Z"
    assert {r["query_id"] for r in rows} == set(lg.query_ids)


def test_jsonl_escapes_special_text(tmp_path: Path) -> None:
    lg = generate(SynthConfig(queries=3000, models=2, seed=5, shared_vocabulary=8))
    special = [q for q in lg.queries if any(s in q for s in ('"', "\\", "é", "日本"))]
    assert special, "the shared vocabulary holds quotes, backslashes and non-ASCII words"
    path = tmp_path / "special.jsonl"
    write(lg, path)
    texts = [json.loads(line)["query"] for line in path.open(encoding="utf-8")]
    assert texts[::2] == lg.queries


def test_jsonl_bandit_rows(tmp_path: Path) -> None:
    lg = generate(dataclasses.replace(SMALL, bandit=True, logging_policy="softmax"))
    assert lg.action is not None and lg.propensity is not None
    path = tmp_path / "bandit.jsonl"
    assert write(lg, path) == 400
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    assert all(list(r) == list(COLUMNS) for r in rows)
    assert [r["query_id"] for r in rows] == lg.query_ids
    assert [r["model"] for r in rows] == [lg.model_names[a] for a in lg.action]
    assert [r["propensity"] for r in rows] == lg.propensity.tolist()
    assert [r["quality"] for r in rows] == lg.quality[np.arange(400), lg.action].tolist()


def test_csv_round_trip(tmp_path: Path) -> None:
    lg = generate(dataclasses.replace(SMALL, bandit=True))
    path = tmp_path / "log.csv"
    assert write(lg, path) == 400
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(COLUMNS)
    assert [r["query"] for r in rows] == lg.queries
    assert [float(r["cost"]) for r in rows] == lg.cost[np.arange(400), lg.action].tolist()
    assert all(float(r["propensity"]) == 0.25 for r in rows)

    full = tmp_path / "full.csv"
    assert write(generate(SMALL), full) == 1600
    with full.open(encoding="utf-8", newline="") as f:
        header = next(csv.reader(f))
    assert "propensity" not in header and header[0] == "query_id"


def test_parquet_round_trip(tmp_path: Path) -> None:
    lg = generate(SMALL)
    path = tmp_path / "log.parquet"
    assert write(lg, path) == 1600
    table = pq.read_table(path)
    assert table.column_names == [c for c in COLUMNS if c != "propensity"]
    assert table.column("cost").to_pylist() == lg.cost.ravel().tolist()
    assert table.column("query").to_pylist()[::4] == lg.queries


def test_unknown_suffix_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        write(generate(SMALL), tmp_path / "log.txt")


# --------------------------------------------------------------------------- command line


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_flags_default_to_and_set_their_config_fields() -> None:
    """No flag gives SynthConfig's defaults; each flag (dashed field name) sets its field, typed."""
    assert config_from_args(_parse(["--out", "x.jsonl"])) == SynthConfig()
    numbers = ["--words-per-query", "7", "--topic-word-share", "0.5", "--cost-weight", "3"]
    config = config_from_args(_parse(["--out", "x.jsonl", *numbers, "--drift", "--logging-policy", "softmax"]))
    assert (config.words_per_query, config.topic_word_share, config.cost_weight) == (7, 0.5, 3.0)
    assert type(config.words_per_query) is int and type(config.cost_weight) is float
    assert config.drift and not config.bandit and config.logging_policy == "softmax"
    with pytest.raises(SystemExit):
        _parse(["--out", "x.jsonl", "--logging-policy", "greedy"])


def test_cli_main_writes_bandit_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "bandit.jsonl"
    args = _parse(
        [
            "--queries",
            "50",
            "--models",
            "3",
            "--out",
            str(out),
            "--bandit",
            "--logging-policy",
            "eps-greedy",
            "--drift",
            "--seed",
            "9",
        ]
    )
    assert main(args) == 0
    rows = [json.loads(line) for line in out.open(encoding="utf-8")]
    assert len(rows) == 50 and all("propensity" in r for r in rows)
    assert {r["propensity"] for r in rows} <= {1 - 0.2 + 0.2 / 3, 0.2 / 3}
    assert "50" in capsys.readouterr().out


def test_cli_bad_settings_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_parse(["--models", "1", "--out", str(tmp_path / "x.jsonl")])) == 2
    assert "models" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_python_m_data_synth(tmp_path: Path) -> None:
    out = tmp_path / "log.csv"
    proc = run_python(
        "-m", "data", "synth", "--queries", "20", "--models", "3", "--out", str(out), "--seed", "1", timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    with out.open(encoding="utf-8", newline="") as f:
        assert len(list(csv.DictReader(f))) == 60


def test_demo_file_is_the_documented_command_output(tmp_path: Path) -> None:
    """data/demo/demo.jsonl is exactly what `python -m data synth --out data/demo/demo.jsonl` writes
    (the command in the README): regenerating it reproduces every byte."""
    demo = ROOT / "data" / "demo" / "demo.jsonl"
    assert demo.stat().st_size < 2_100_000  # small enough for the repository (2.08 MB with its task column)
    fresh = tmp_path / "demo.jsonl"
    assert main(_parse(["--out", str(fresh)])) == 0
    assert fresh.read_bytes() == demo.read_bytes()
    assert len(demo.read_text(encoding="utf-8").splitlines()) == 1500 * 5
