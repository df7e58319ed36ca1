"""Training on the log's own embeddings exports an ``input_kind`` "embedding" policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_isolated, run_train

from data.synth import SynthConfig, generate

FRESH_PROCESS = r"""
import json, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
import torch
extra = {"metadata.json": ""}
policy = torch.jit.load(sys.argv[1], _extra_files=extra)
x = torch.tensor(json.load(open(sys.argv[2])), dtype=torch.float32)
answer = {"metadata": json.loads(extra["metadata.json"]), "dimension": policy.dimension(),
          "routes": {str(w): policy.route_features(x, w) for w in (0.0, 300.0, 3000.0)},
          "shape": list(policy.scores_features(x, 300.0).shape)}
try:
    policy.route(["some text"], 1.0)
    answer["text"] = "accepted"
except Exception as error:
    answer["text"] = str(error)
print(json.dumps(answer))
"""


def _write_log(path: Path, queries: int = 900) -> np.ndarray:
    """A full-information synthetic log whose embeddings encode the topic (plus noise)."""
    world = generate(SynthConfig(queries=queries, seed=5))
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((int(world.topic.max()) + 1, 8))
    embeddings = centres[world.topic] + 0.3 * rng.standard_normal((queries, 8))
    with open(path, "w", encoding="utf-8") as out:
        for i in range(queries):
            for k, model in enumerate(world.model_names):
                out.write(
                    json.dumps(
                        {
                            "query_id": world.query_ids[i],
                            "query": world.queries[i],
                            "model": model,
                            "quality": world.quality[i, k],
                            "cost": world.cost[i, k],
                            "embedding": embeddings[i].round(6).tolist(),
                        }
                    )
                    + "\n"
                )
    return embeddings


def test_embedding_policy_routes_embeddings_and_refuses_text(tmp_path: Path) -> None:
    log = tmp_path / "embedded.jsonl"
    embeddings = _write_log(log)
    out = tmp_path / "run"
    done = run_train(
        "--data",
        str(log),
        "--out",
        str(out),
        "--set",
        "input=embedding",
        "--set",
        "reward.cost_weight=300",
        "--set",
        "evaluation.bootstrap=0",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["featurizer"] == {"kind": "embedding", "dimension": 8, "bias": True}
    assert report["test"]["mean_reward"] > report["baselines"]["random"]["mean_reward"]
    request = tmp_path / "x.json"
    request.write_text(json.dumps(embeddings[:100].round(6).tolist()))
    fresh = run_isolated(FRESH_PROCESS, str(out / "policy.pt"), str(request), cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    answer = json.loads(fresh.stdout)
    assert answer["metadata"]["input_kind"] == "embedding" and answer["dimension"] == 8
    assert answer["shape"] == [100, len(answer["metadata"]["models"])]
    assert "routes on embeddings" in answer["text"]
    assert len({tuple(r) for r in answer["routes"].values()}) == 3  # the weight changes decisions


def test_embedding_input_needs_embeddings(tmp_path: Path) -> None:
    done = run_train("--out", str(tmp_path / "r"), "--set", "input=embedding", timeout=300)
    assert done.returncode == 2 and "needs an 'embedding' column" in done.stderr


@pytest.mark.parametrize("bad", [[1.0, "x"], [], [float("nan")]])
def test_bad_embeddings_are_rejected(tmp_path: Path, bad: list) -> None:
    from data.loading import load_log

    path = tmp_path / "log.jsonl"
    rows = [
        {"query_id": "a", "query": "q", "model": "m", "quality": 1, "cost": 0.1, "embedding": [0.1, 0.2]},
        {"query_id": "b", "query": "r", "model": "m", "quality": 1, "cost": 0.1, "embedding": bad},
    ]
    path.write_text("\n".join(json.dumps(r, allow_nan=True) for r in rows) + "\n")
    stats = load_log(path).log.stats
    assert stats.rows_accepted == 1 and stats.rejected_by_reason == {"bad embedding": 1}
