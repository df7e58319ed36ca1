"""Distributed LinUCB fitting on a real local Ray cluster, started and stopped by this module.

The cluster: 127.0.0.1, two CPUs, no dashboard, an 80 MB object store. The log: the demo's first
600 queries spread row by row over three Parquet shards and one JSONL shard (so every query's
rows sit in several shards), with a malformed line, a bad quality, a duplicate outcome, a
conflicting text and an incomplete query planted in different shards.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from agents.linucb import LinUCB, linucb_from_statistics
from data.featurizer import TextFeaturizer
from data.loading import load_log
from data.schema import DataError
from data.splits import hash_unit, split
from training.config import RunConfig, load_config
from training.run import RunResult, prepare_directory, train

pytest.importorskip("ray")  # the [ray] extra, installed by make setup-dev (make test); in CI a skip fails (conftest)
from training import distributed  # project code: an import error fails, never skips

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("query_id", "query", "model", "quality", "cost")


@pytest.fixture(scope="module")
def cluster(ray_cluster: None) -> None:
    """The module's local cluster (conftest), joined as ``train.py --ray`` joins one."""
    distributed.connect(None, progress=False)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four shards of a demo subset with one bad row of each kind the cross-row rules see."""
    lines = (ROOT / "data" / "demo" / "demo.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [{key: json.loads(line)[key] for key in COLUMNS} for line in lines[:3000]]
    parts: list[list[dict]] = [rows[i::4] for i in range(4)]
    parts[1].append({**rows[7], "quality": 2.0})  # bad quality
    parts[2].append(dict(rows[8]))  # duplicate outcome (its first copy is in shard 0)
    parts[3].append({**rows[9], "query": "a different text"})  # conflicting text
    parts[0].remove(rows[12])  # its query loses a model: its other rows are an incomplete query
    directory = tmp_path_factory.mktemp("shards")
    for number, part in enumerate(parts[:3]):
        pq.write_table(pa.table({c: [row[c] for row in part] for c in COLUMNS}), directory / f"part-{number}.parquet")
    with open(directory / "part-3.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in parts[3][:100])
        handle.write('{"query_id": "broken", \n')  # malformed line
        handle.writelines(json.dumps(row) + "\n" for row in parts[3][100:])
    return directory


def _config(shards: Path, *overrides: str) -> RunConfig:
    return load_config(ROOT / "configs" / "default.yaml", [f"data.path={shards}", "evaluation.bootstrap=0", *overrides])


@pytest.fixture(scope="module")
def on_ray(cluster: None, shards: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, RunResult]:
    """The distributed stages once, and the run directory exported from them (``train.py --ray``)."""
    out = tmp_path_factory.mktemp("ray-run")
    config = _config(shards)
    fit = distributed.fit_statistics(config, out=out, workers=2)
    return fit, distributed.export_fit(config, out, fit, quiet=True)


def test_distributed_fit_equals_the_single_process_fit(
    on_ray: tuple[Any, RunResult], shards: Path, tmp_path: Path
) -> None:
    config = _config(shards)
    fit, run = on_ray
    loaded = load_log(shards)
    log = loaded.log

    # Nothing lost, the same rows by fate, the same quarantine, the same data.
    assert fit.inputs.data["rows_read"] == log.stats.rows_read
    assert fit.inputs.data["rejected_by_reason"] == log.stats.rejected_by_reason
    assert set(log.stats.rejected_by_reason) == {
        "malformed line",
        "bad quality",
        "duplicate outcome",
        "conflicting text",
        "incomplete query",
    }
    loaded.quarantine.write(tmp_path / "single.jsonl")
    assert (run.directory / "rejected.jsonl").read_text() == (tmp_path / "single.jsonl").read_text()
    assert fit.inputs.fingerprint == log.fingerprint
    splits = split(log, config.data.fractions, config.seed)
    assert fit.inputs.split_counts == splits.counts()
    np.testing.assert_array_equal(fit.test.query_ids, log.subset(splits.test).query_ids)

    # At least 4 blocks, reduced in Ray worker processes (not the driver), at most the 2 asked for.
    # How many of the 2 take part is Ray's choice: blocks of a few ms may all go to one idle worker.
    assert fit.info.read_blocks == 4 and fit.info.statistics_blocks >= 4
    assert 1 <= len(fit.info.worker_pids) <= 2 and os.getpid() not in fit.info.worker_pids

    # The same featurizer (the training split is small) and the same LinUCB, to 1e-6.
    train_log, test_log = log.subset(splits.train), log.subset(splits.test)
    featurizer = fit.inputs.featurizer
    assert featurizer is not None
    single = LinUCB(log.n_models, featurizer.dimension, config.agent.linucb).fit(
        featurizer.transform(train_log.queries), train_log.quality, train_log.cost
    )
    summed = linucb_from_statistics(fit.statistics, config.agent.linucb)
    np.testing.assert_allclose(summed.linear_map(), single.linear_map(), atol=1e-6, rtol=0)
    assert summed.steps_done == single.steps_done == train_log.n_queries  # rows learned from, one count
    np.testing.assert_allclose(fit.inputs.train_mean_cost, train_log.cost.mean(axis=0), rtol=1e-12)
    features = featurizer.transform(test_log.queries)
    for weight in (0.0, 30.0, 300.0, 3000.0):
        np.testing.assert_array_equal(summed.predict(features, weight), single.predict(features, weight))


def test_train_ray_writes_the_single_process_run(on_ray: tuple[Any, RunResult], shards: Path, tmp_path: Path) -> None:
    _, ray_run = on_ray
    runs = {"ray": ray_run.directory, "single": tmp_path / "single"}
    prepare_directory(runs["single"], overwrite=False)
    alone = train(_config(shards, "tuning.enabled=false"), runs["single"], quiet=True)  # --ray does not tune
    assert ray_run.report["tuning"]["skipped"].startswith("train.py --ray fits the configured values")
    for key in ("test", "split", "baselines", "featurizer"):  # the same decisions on the same test split
        assert ray_run.report[key] == alone.report[key]
    assert ray_run.report["policy"]["steps"] == alone.report["policy"]["steps"]
    assert ray_run.report["frontier"]["aiq"] == pytest.approx(alone.report["frontier"]["aiq"], rel=1e-9)
    assert ray_run.report["data"]["fingerprint"] == alone.report["data"]["fingerprint"]
    assert 1 <= ray_run.report["data"]["distributed"]["worker_processes"] <= 2
    queries = load_log(shards).log.queries[:200]
    policies = {name: torch.jit.load(str(out / "policy.pt")) for name, out in runs.items()}
    assert policies["ray"].route(queries, 300.0) == policies["single"].route(queries, 300.0)
    assert (runs["ray"] / "tb").is_dir() and (runs["ray"] / "report.md").is_file()


def test_a_sampled_featurizer_is_the_single_process_one(
    cluster: None, shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond ``fit_sample`` training queries both paths fit the featurizer on the same sample.

    A pool of half ``fit_sample`` expected queries also makes the driver widen it (the rare case).
    """
    monkeypatch.setattr(distributed, "FIT_POOL", 0.5)
    config = _config(shards, "featurizer.fit_sample=100", "tuning.enabled=false")
    fit = distributed.fit_statistics(config, workers=2)
    assert fit.inputs.split_counts["train"] > 300
    ray_run = distributed.export_fit(config, tmp_path / "ray", fit, quiet=True)
    prepare_directory(tmp_path / "single", overwrite=False)
    alone = train(config, tmp_path / "single", quiet=True)
    assert ray_run.report["featurizer"] == alone.report["featurizer"]
    assert ray_run.report["test"] == alone.report["test"]  # the same decisions on the test split

    log = load_log(shards).log
    train_log = log.subset(split(log, config.data.fractions, config.seed).train)
    by_hash = TextFeaturizer(config.featurizer).fit(train_log.queries, sample_keys=hash_unit(train_log.query_ids, 0))
    featurizer = fit.inputs.featurizer
    assert featurizer is not None and featurizer.vocabulary == by_hash.vocabulary
    np.testing.assert_array_equal(featurizer.projection, by_hash.projection)
    unsampled = TextFeaturizer(replace(config.featurizer, fit_sample=10**6)).fit(train_log.queries)
    assert featurizer.vocabulary != unsampled.vocabulary  # the sample mattered


def test_out_of_scope_configurations_are_a_clear_error(tmp_path: Path) -> None:
    for override in ("agent.kind=ppo", "agent.learning=online", "input=embedding"):
        with pytest.raises(DataError, match="--ray fits LinUCB"):
            distributed.train_distributed(_config(tmp_path, override), tmp_path)


def test_fingerprint_hashing_refuses_blocks_out_of_order() -> None:
    table = pa.table(
        {
            "query_id": ["b", "a"],
            "query": ["x", "y"],
            "quality": pa.array([[0.5], [1.0]], pa.list_(pa.float64(), 1)),
            "cost": pa.array([[0.1], [0.2]], pa.list_(pa.float64(), 1)),
            "reason": ["", ""],
        }
    )
    with pytest.raises(distributed._OutOfOrder):
        distributed._digest([table], ["m"])
    assert len(distributed._digest([table.slice(1), table.slice(0, 1)], ["m"])) == 64
