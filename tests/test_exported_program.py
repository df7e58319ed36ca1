"""The numeric core as a torch.export program (docs/contracts.md §2.12) and ``python -m policies``.

The program, fed :meth:`NativeFeaturizer.bags`, gives the TorchScript policy's scores and costs:
within 1e-9 of the largest magnitude in each (N, K) array against the policy's own float64
computation (its ``_hidden`` and head), and, cast to float32, within one float32 rounding (relative
2⁻²³, plus that 1e-9) of its public ``scores_costs``. Every head kind is checked, the demo
policy (token_utility) in a fresh process that never imports routerl.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_isolated, run_python
from test_featurizer_parity import PROBES

from agents.base import Agent, FeaturizedSplit, TrainingTask
from agents.linucb import LinUCB
from agents.mlp import MlpConfig, MlpRouter
from agents.peers import LogisticRouter, NearestNeighbourRouter, PeerConfig
from agents.ppo import PPOConfig, PPORouter
from data.featurizer import FeaturizerConfig, TextFeaturizer
from data.loading import load_log
from data.routing_log import RoutingLog
from data.synth import SynthConfig, generate
from envs.rewards import PreferenceConfig
from policies.__main__ import main
from policies.artifact import LoadedPolicy, load_policy
from policies.export import PolicyMetadata, build_embedding_policy, build_text_policy, save_policy
from policies.exported_program import WEIGHT_REFUSED, export_program
from policies.native_featurizer import Bags, NativeFeaturizer
from policies.portable import read_portable, twin_path

#: Beside the logs' own queries: empty, whitespace only, non-ASCII, very long (the featurizer parity inputs).
HARD_QUERIES = [*PROBES, "Ünïcödé façade — naïve 你好世界 😀 " * 50, "word " * 5000, "x" * 50_000]

FRESH_PROCESS = r"""
import json, sys
import numpy as np
import torch
program = torch.export.load(sys.argv[1]).module()
bags = np.load(sys.argv[2])
tensors = [torch.from_numpy(bags[name]) for name in ("columns", "offsets", "values", "extras")]
answer = {}
for weight in json.loads(sys.argv[3]):
    scores, costs = program(*tensors, torch.tensor(weight, dtype=torch.float64))
    answer[str(weight)] = [scores.tolist(), costs.tolist()]
ours = [m for m in sys.modules if m.split(".")[0] in {"data", "envs", "agents", "policies", "training", "serving"}]
print(json.dumps({"outputs": answer, "project_modules": ours}))
"""


def _tensors(bags: Bags, weight: float) -> tuple[torch.Tensor, ...]:
    """The program's inputs: the bags and the weight as a 0-d float64 tensor."""
    arrays = (bags.columns, bags.offsets, bags.values, bags.extras)
    return (*(torch.from_numpy(array) for array in arrays), torch.tensor(weight, dtype=torch.float64))


def _assert_matches_torchscript(loaded: LoadedPolicy, texts: list[str], weight: float, ours: tuple) -> None:
    """``ours`` (scores, costs) float64 equal the TorchScript policy's, in float64 and through its float32 API."""
    module = loaded.module
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = module.head.scores_costs(module._hidden(texts), module.arms.weight(weight))
        public = loaded.score_costs(texts, weight).numpy()
    k = len(loaded.models)
    for mine, theirs, columns in zip(ours, expected, (slice(0, k), slice(k, 2 * k))):
        mine, theirs = np.asarray(mine, dtype=np.float64), theirs.numpy()
        assert mine.shape == theirs.shape == (len(texts), k)
        scale = 1e-9 * max(float(np.abs(theirs).max(initial=0.0)), np.finfo(np.float64).tiny)
        np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=scale, err_msg=f"float64, w={weight}")
        np.testing.assert_allclose(mine.astype(np.float32), public[:, columns], rtol=2**-23, atol=scale,
                                   err_msg=f"float32, w={weight}")


@pytest.fixture(scope="module")
def demo_queries() -> list[str]:
    """~200 queries: the demo log's first 180 and the hard ones."""
    return [*load_log(Path(__file__).parent.parent / "data" / "demo" / "demo.jsonl").log.queries[:180], *HARD_QUERIES]


@pytest.fixture(scope="module")
def demo_copy(demo_policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo policy.pt and its twin, copied (the session's run directory gets no policy.pt2)."""
    folder = tmp_path_factory.mktemp("demo_copy")
    for source in (demo_policy, twin_path(demo_policy)):
        shutil.copy(source, folder / source.name)
    return folder / demo_policy.name


def test_the_command_writes_a_program_that_a_fresh_process_loads_and_that_scores_as_torchscript(
    demo_copy: Path, demo_queries: list[str], tmp_path: Path
) -> None:
    done = run_python("-m", "policies", "export-program", str(demo_copy))
    program = demo_copy.with_suffix(".pt2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {program} (") and "token_utility" in done.stdout and program.is_file()
    portable = read_portable(twin_path(demo_copy))
    bags = NativeFeaturizer(portable).bags(demo_queries)
    np.savez(tmp_path / "bags.npz", columns=bags.columns, offsets=bags.offsets, values=bags.values, extras=bags.extras)
    loaded = load_policy(demo_copy)
    weights = [0.0, loaded.default_cost_weight, 1e4]
    answer = run_isolated(FRESH_PROCESS, str(program), str(tmp_path / "bags.npz"), json.dumps(weights), cwd=tmp_path)
    assert answer.returncode == 0 and answer.stderr == "", answer.stderr
    result = json.loads(answer.stdout)
    assert result["project_modules"] == []
    for weight in weights:
        _assert_matches_torchscript(loaded, demo_queries, weight, result["outputs"][str(weight)])


def test_one_query_an_empty_batch_and_bags_without_entries_keep_their_shapes(
    demo_copy: Path, tmp_path: Path
) -> None:
    """Export traces with 2 queries; sizes 0 and 1 must not have been specialised away."""
    portable = read_portable(twin_path(demo_copy))
    path = tmp_path / "policy.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean save and load: no constant shares a buffer's storage
        torch.export.save(export_program(portable), str(path))
        program = torch.export.load(str(path)).module()
    featurizer, loaded = NativeFeaturizer(portable), load_policy(demo_copy)
    for texts in (["What is 2+2?"], [], ["", "   ", "!!!"], ["unknownword " * 3]):
        bags = featurizer.bags(texts)
        scores, costs = program(*_tensors(bags, 300.0))
        assert scores.dtype == costs.dtype == torch.float64
        _assert_matches_torchscript(loaded, texts, 300.0, (scores, costs))


def test_the_program_refuses_a_negative_or_nan_weight(demo_copy: Path) -> None:
    portable = read_portable(twin_path(demo_copy))
    program = export_program(portable).module()
    bags = NativeFeaturizer(portable).bags(["What is 2+2?"])
    for weight in (-1.0, float("nan"), float("inf")):
        with pytest.raises(RuntimeError, match=WEIGHT_REFUSED.split(" (")[0]):
            program(*_tensors(bags, weight))


@pytest.fixture(scope="module")
def world() -> tuple[RoutingLog, TextFeaturizer, np.ndarray]:
    """A synthetic full-information log (3 models), its featurizer and features: each agent fits in a second."""
    log = generate(SynthConfig(queries=600, models=3, seed=1)).routing_log()
    featurizer = TextFeaturizer(FeaturizerConfig(components=8)).fit(log.queries)
    return log, featurizer, featurizer.transform(log.queries)


def _fitted(kind: str, log: RoutingLog, x: np.ndarray) -> Agent:
    """An agent whose exported head is of the portable ``kind``, fitted fast (``token_*``: in token mode)."""
    if kind.startswith("token_"):
        prices = np.tile([[1.5, 6.0]], (log.n_models, 1))  # USD per 1M input, output tokens
        agent = _fitted(kind.removeprefix("token_"), log, x)
        return agent.train(TrainingTask(FeaturizedSplit(log, x), prices=prices))
    args = (x, log.quality, log.cost)
    if kind == "utility":
        return LinUCB(log.n_models, x.shape[1]).fit(*args)
    if kind == "logistic_utility":
        return LogisticRouter(log.n_models, x.shape[1], PeerConfig(inverse_regularisation=(1.0,), folds=2)).fit(*args)
    if kind == "hidden_layer_utility":
        network = MlpConfig(hidden_sizes=(8,), weight_decay=(1e-3,), folds=3, iterations=100)
        return MlpRouter(log.n_models, x.shape[1], network).fit(*args)
    if kind == "nearest_neighbour":
        return NearestNeighbourRouter(log.n_models, x.shape[1]).fit(*args)
    actor = PPOConfig(total_steps=1024, hidden=(16,), preference=PreferenceConfig(low=10.0, high=10_000.0))
    return PPORouter(log.n_models, x.shape[1], actor).train(TrainingTask(FeaturizedSplit(log, x)))


@pytest.mark.parametrize("kind", ["utility", "logistic_utility", "hidden_layer_utility", "nearest_neighbour",
                                  "mlp_logit", "token_logistic_utility", "token_hidden_layer_utility",
                                  "token_nearest_neighbour"])
def test_every_head_kind_exports_and_scores_as_torchscript(world, kind: str, tmp_path: Path) -> None:
    """The other kinds (the demo policy is token_utility); for mlp_logit also a weight above its range (clamped).

    The ``token_*`` peers are refitted in token mode (:func:`_fitted`), as a token-mode run trains them.
    """
    log, featurizer, x = world
    agent = _fitted(kind, log, x)
    conditioned = agent.cost_weight_range is not None  # PPO: the weight is clamped into its range
    metadata = PolicyMetadata(models=list(log.models), default_cost_weight=300.0,
                              cost_weight_range=agent.cost_weight_range or [0.0, 1e5],
                              score_kind=agent.score_kind, agent=agent.name, featurizer={}, data_fingerprint="t")
    module = build_text_policy(featurizer, agent.linear_map(), agent.head(), metadata, clamp_cost_weight=conditioned)
    policy = save_policy(module, metadata, tmp_path / "policy.pt")
    portable = read_portable(twin_path(policy))
    assert portable.head_kind == kind
    torch.export.save(export_program(portable), str(tmp_path / "policy.pt2"))
    program = torch.export.load(str(tmp_path / "policy.pt2")).module()
    texts = [*log.queries[:180], *HARD_QUERIES]
    bags, loaded = NativeFeaturizer(portable).bags(texts), load_policy(policy)
    for weight in (0.0, 300.0, 1e4, *((1e6,) if conditioned else ())):
        _assert_matches_torchscript(loaded, texts, weight, program(*_tensors(bags, weight)))


def test_an_embedding_policy_is_refused_in_one_line(world, tmp_path: Path, capsys) -> None:
    log, _, x = world
    agent = LinUCB(log.n_models, x.shape[1]).fit(x, log.quality, log.cost)
    metadata = PolicyMetadata(models=list(log.models), default_cost_weight=1.0, cost_weight_range=[0.0, 1e5],
                              score_kind="utility", agent="linucb", featurizer={"kind": "embedding"},
                              data_fingerprint="t", input_kind="embedding")
    policy = save_policy(build_embedding_policy(agent.linear_map(), agent.head(), metadata), metadata,
                         tmp_path / "policy.pt")
    assert main(["export-program", str(policy)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{twin_path(policy)}: its input_kind is not 'text'" in error
    assert not policy.with_suffix(".pt2").exists()


def test_portable_writes_the_twin_of_a_policy_exported_without_one(demo_copy: Path, tmp_path: Path,
                                                                   capsys, caplog) -> None:
    """A policy.pt alone is converted in memory for export-program (a warning names ``portable``), which writes it."""
    lone = tmp_path / "policy.pt"
    shutil.copy(demo_copy, lone)
    assert main(["export-program", str(lone), "--out", str(tmp_path / "converted.pt2")]) == 0
    assert f"{lone}: no twin beside it (policy.safetensors): converted in memory" in caplog.text
    assert f"python -m policies portable {lone}" in caplog.text and not twin_path(lone).exists()
    capsys.readouterr()
    assert main(["portable", str(lone)]) == 0
    assert capsys.readouterr().out == f"wrote {twin_path(lone)}\n"
    assert twin_path(lone).read_bytes() == twin_path(demo_copy).read_bytes()  # what the export wrote, byte for byte
    assert main(["export-program", str(twin_path(lone)), "--out", str(tmp_path / "other.pt2")]) == 0
    assert (tmp_path / "other.pt2").is_file() and not lone.with_suffix(".pt2").exists()


def test_command_errors_are_one_line_with_status_2(demo_copy: Path, tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken"  # not a TorchScript archive, and no twin to read instead
    broken.mkdir()
    (broken / "policy.pt").write_bytes(demo_copy.read_bytes()[:5000])
    cases = {
        "export-program": (["export-program", str(tmp_path / "missing.pt")], f"{tmp_path / 'missing.pt'}: no such "
                           "policy file"),
        "portable": (["portable", str(tmp_path / "missing.pt")], f"{tmp_path / 'missing.pt'}: no such policy file"),
        "out": (["export-program", str(demo_copy), "--out", str(demo_copy)], f"{demo_copy}: a program file's name "
                "ends in .pt2"),
        "broken": (["export-program", str(broken / "policy.pt")], f"{broken / 'policy.pt'}: not a TorchScript "
                   "policy"),
        "unwritable": (["export-program", str(demo_copy), "--out", str(tmp_path / "no" / "p.pt2")],
                       f"{tmp_path / 'no' / 'p.pt2'}: cannot write the program"),
    }
    for name, (argv, message) in cases.items():
        assert main(argv) == 2, name
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and message in error, (name, error)
