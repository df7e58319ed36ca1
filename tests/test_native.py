"""The portable twin (``policy.safetensors``) and the native engine decide as the TorchScript artifact does.

Every head kind is built with random parameters over a featurizer fitted on the demo log, exported
with :func:`policies.export.save_policy` (which writes the twin), and scored by both engines on the
featurizer parity inputs, the demo queries, 10,000 synthetic queries and the RouterBench and
RouteProfile prompts: the same route for every query, scores within float32 rounding of each other
(both compute in float64, the artifact returns float32; docs/contracts.md §2.11).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEMO_RULES, ROOT
from test_featurizer_parity import PROBES, TRAIN

from data.featurizer import FeaturizerConfig, TextFeaturizer
from data.loading import load_log
from data.synth.generator import SynthConfig, generate
from policies.artifact import LoadedPolicy, load_policy
from policies.export import PolicyMetadata, build_text_policy, save_policy
from policies.heads import (
    HiddenLayerUtilityHead,
    LogisticUtilityHead,
    MlpLogitHead,
    NearestNeighbourHead,
    TokenHiddenLayerUtilityHead,
    TokenLogisticUtilityHead,
    TokenNearestNeighbourHead,
    TokenUtilityHead,
    UtilityHead,
)
from policies.native import NativePolicy, load_native_policy
from policies.policy_file import PolicyError
from policies.portable import FORMAT_VERSION, HEADER_KEY, read_portable, twin_path
from policies.rules import canonical, parse_rules

DEMO_LOG = ROOT / "data" / "demo" / "demo.jsonl"
ROUTEPROFILE = ROOT.parent / "shared" / "data" / "routeprofile"
K = 5
HIDDEN = 7
COMPONENTS = 6
WEIGHTS = (0.0, 300.0, 1e4)


def _heads(rng: np.random.Generator) -> dict[str, tuple[torch.nn.Module, int]]:
    """One head of every kind with random parameters, and the width m of the linear map it reads."""
    def tensor(*shape: int) -> torch.Tensor:
        return torch.from_numpy(rng.normal(size=shape))

    layers = [torch.nn.Linear(HIDDEN, HIDDEN, dtype=torch.float64), torch.nn.Linear(HIDDEN, K, dtype=torch.float64)]
    prices = torch.from_numpy(rng.uniform(0.1, 20.0, size=(K, 2)))
    return {
        "utility": (UtilityHead(K), 2 * K),
        "token_utility": (TokenUtilityHead(prices), 3 * K),
        "logistic_utility": (LogisticUtilityHead(K), 2 * K),
        "hidden_layer_relu": (HiddenLayerUtilityHead(tensor(HIDDEN, K), tensor(K), relu=True), HIDDEN + K),
        "hidden_layer_identity": (HiddenLayerUtilityHead(tensor(HIDDEN, K), tensor(K), relu=False), HIDDEN + K),
        "nearest_neighbour": (NearestNeighbourHead(tensor(40, 9), tensor(40, K), tensor(40, K).abs(), 5), 9),
        "token_logistic_utility": (TokenLogisticUtilityHead(prices), 3 * K),
        "token_hidden_layer_relu": (
            TokenHiddenLayerUtilityHead(tensor(HIDDEN, K), tensor(K), True, prices), HIDDEN + 2 * K
        ),
        "token_nearest_neighbour": (
            TokenNearestNeighbourHead(tensor(40, 9), tensor(40, K), 1000 * tensor(40, K, 2).abs(), 5, prices), 9
        ),
        "mlp_logit": (
            MlpLogitHead(tensor(HIDDEN), tensor(HIDDEN), layers, "tanh", 1.0, 3000.0, tensor(K).abs()),
            HIDDEN,
        ),
    }


@pytest.fixture(scope="module")
def demo_queries() -> list[str]:
    return list(load_log(DEMO_LOG).log.queries)


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory, demo_queries: list[str]) -> dict[str, Path]:
    """Every head kind exported (``policy.pt`` and its twin) over one featurizer fitted on the demo queries."""
    folder = tmp_path_factory.mktemp("native")
    featurizer = TextFeaturizer(FeaturizerConfig(components=COMPONENTS)).fit(demo_queries + TRAIN)
    rng = np.random.default_rng(0)
    models = [f"model-{i}" for i in range(K)]
    paths = {}
    for kind, (head, width) in _heads(rng).items():
        rules = canonical(parse_rules(_demo_rules(models), "rules")) if kind == "utility" else []
        metadata = PolicyMetadata(models=models, default_cost_weight=300.0, cost_weight_range=[0.0, 3000.0],
                                  score_kind="logit" if kind == "mlp_logit" else "utility", agent=kind,
                                  featurizer={}, data_fingerprint="f" * 16, rules=rules,
                                  cost_mode="tokens" if kind.startswith("token_") else "usd")
        linear_map = rng.normal(size=(featurizer.dimension, width))
        module = build_text_policy(featurizer, linear_map, head, metadata, clamp_cost_weight=kind == "mlp_logit")
        paths[kind] = save_policy(module, metadata, folder / kind / "policy.pt")
    return paths


def _demo_rules(models: list[str]) -> list[dict]:
    """The conftest's demo rules with this test's model names."""
    import yaml

    names = {"frontier-xl": models[0], "large-70b": models[1], "medium-34b": models[2],
             "small-7b": models[3], "tiny-1b": models[4]}
    rules = yaml.safe_load(DEMO_RULES)["rules"]
    return [{**rule, "route_to": [names[model] for model in rule["route_to"]]} for rule in rules]


def _synthetic(count: int) -> list[str]:
    return list(generate(SynthConfig(queries=count, models=2, words_per_query=30, seed=7)).queries)


def _assert_same(torchscript: LoadedPolicy, native: NativePolicy, queries: list[str]) -> None:
    """Same routes; scores and costs equal within float32 rounding (1e-6 relative, or absolute below 1)."""
    for weight in WEIGHTS:
        assert native.route(queries, weight) == torchscript.module.route(queries, weight), weight
        expected = torchscript.score_costs(queries, weight).numpy().astype(np.float64)
        got = native.score_costs(queries, weight).astype(np.float64)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(expected).max()))
    np.testing.assert_array_equal(native.rule_mask(queries), torchscript.rule_mask(queries).numpy())


@pytest.mark.parametrize(
    "kind",
    ["utility", "token_utility", "logistic_utility", "hidden_layer_relu", "hidden_layer_identity",
     "nearest_neighbour", "mlp_logit", "token_logistic_utility", "token_hidden_layer_relu", "token_nearest_neighbour"],
)
def test_every_head_kind_decides_as_torchscript_on_the_parity_inputs(
    policies: dict[str, Path], demo_queries: list[str], kind: str
) -> None:
    torchscript, native = load_policy(policies[kind]), load_native_policy(policies[kind])
    assert native.version == torchscript.version and native.models == torchscript.models
    queries = PROBES + TRAIN + demo_queries[:300] + ["translate this to French please", "prove 7 is prime", "abcd"]
    _assert_same(torchscript, native, queries)
    for query in queries[:40]:  # one query alone takes the single-text path; a batch of 64+ the vectorised one
        assert native.route([query], 300.0) == torchscript.module.route([query], 300.0)


def test_the_rules_mask_and_route_as_in_the_artifact(policies: dict[str, Path]) -> None:
    torchscript, native = load_policy(policies["utility"]), load_native_policy(policies["utility"])
    queries = ["def f(): pass", "x " * 50, "Translate THIS to French!", "prove 7 is prime", "abcd", "hello there"]
    mask = native.rule_mask(queries)
    assert not mask.all() and mask.any(axis=1).all()
    _assert_same(torchscript, native, queries)


def test_ten_thousand_synthetic_queries_route_the_same(policies: dict[str, Path]) -> None:
    queries = _synthetic(10_000)
    for kind in ("token_utility", "mlp_logit"):
        _assert_same(load_policy(policies[kind]), load_native_policy(policies[kind]), queries)


def test_routerbench_prompts_route_the_same(policies: dict[str, Path], routerbench: Path) -> None:
    log = load_log(routerbench).log
    queries = list(log.queries[:400])
    _assert_same(load_policy(policies["utility"]), load_native_policy(policies["utility"]), queries)


def test_routeprofile_prompts_route_the_same(policies: dict[str, Path]) -> None:
    if not ROUTEPROFILE.is_dir():
        pytest.skip(f"{ROUTEPROFILE} is absent (a fresh clone has no ../shared/data)")
    lines = (ROUTEPROFILE / "train.jsonl").read_text(encoding="utf-8").splitlines()
    queries = list(dict.fromkeys(json.loads(line)["query"] for line in lines))
    assert len(queries) > 100
    _assert_same(load_policy(policies["hidden_layer_relu"]), load_native_policy(policies["hidden_layer_relu"]), queries)


@pytest.mark.parametrize("kind", ["token_utility", "token_logistic_utility", "token_hidden_layer_relu",
                                  "token_nearest_neighbour"])
def test_prices_replace_in_both_engines_alike(policies: dict[str, Path], kind: str) -> None:
    torchscript, native = load_policy(policies[kind]), load_native_policy(policies[kind])
    assert native.prices_table() == torchscript.prices_table()
    table = {model: (0.5 * (i + 1), 3.0) for i, model in enumerate(native.models)}
    torchscript.set_prices(table)
    native.set_prices(table)
    assert native.prices_table() == table
    _assert_same(torchscript, native, TRAIN + PROBES)
    with pytest.raises(PolicyError, match="lacks the policy's model"):
        native.set_prices({"model-0": (1.0, 1.0)})
    usd = load_native_policy(policies["utility"])
    assert usd.prices_table() == {}
    with pytest.raises(PolicyError, match="cost_mode 'usd'"):
        usd.set_prices(table)


def test_cost_weight_is_checked_as_in_the_artifact(policies: dict[str, Path]) -> None:
    native = load_native_policy(policies["mlp_logit"])
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="cost_weight must be finite"):
            native.scores(["x"], bad)
    assert native.scores([], 1.0).shape == (0, K)


LOAD_WITHOUT_TORCH = """
import sys, json, time
sys.modules["torch"] = None  # any import of torch now fails
sys.path.insert(0, sys.argv[2])
start = time.perf_counter()
from policies.native import load_native_policy
policy = load_native_policy(sys.argv[1])
print(json.dumps({"route": policy.route(json.loads(sys.argv[3]), 300.0), "version": policy.version}))
"""


def test_the_twin_loads_and_routes_in_a_process_without_torch(policies: dict[str, Path]) -> None:
    queries = TRAIN + PROBES[:4]
    done = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_TORCH, str(twin_path(policies["mlp_logit"])), str(ROOT),
         json.dumps(queries)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    torchscript = load_policy(policies["mlp_logit"])
    assert out == {"route": torchscript.module.route(queries, 300.0), "version": torchscript.version}


def test_the_twin_is_no_larger_than_the_policy_and_records_it(policies: dict[str, Path]) -> None:
    for path in policies.values():
        assert twin_path(path).stat().st_size <= path.stat().st_size
        header = read_portable(twin_path(path)).header
        assert header["format_version"] == FORMAT_VERSION
        assert header["policy_version"] == load_policy(path).version


def test_a_policy_pt_without_its_twin_or_with_a_stale_one_is_converted_in_memory_with_a_warning(
    policies: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = policies["utility"]
    alone = tmp_path / "alone" / "policy.pt"
    alone.parent.mkdir()
    alone.write_bytes(source.read_bytes())
    expected = load_policy(source)
    cases = {"no twin": None, "a twin written with other bytes": twin_path(policies["logistic_utility"]).read_bytes(),
             "an unreadable twin": b"not safetensors"}
    for found, twin in cases.items():
        if twin is not None:
            twin_path(alone).write_bytes(twin)
        caplog.clear()
        native = load_native_policy(alone)
        assert f"{alone}: {found}" in caplog.text and f"python -m policies portable {alone}" in caplog.text
        assert native.version == expected.version
        _assert_same(expected, native, TRAIN + PROBES)
    assert twin_path(alone).read_bytes() == b"not safetensors"  # the service never writes beside the policy


def test_a_portable_file_of_an_unknown_version_or_not_one_is_refused_in_one_line(
    policies: dict[str, Path], tmp_path: Path
) -> None:
    newer = _with_header(twin_path(policies["utility"]), format_version=FORMAT_VERSION + 1)
    with pytest.raises(PolicyError, match=f"format_version {FORMAT_VERSION + 1} is not one this routerl reads"):
        load_native_policy(newer)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(PolicyError, match=r"garbage\.safetensors: not a routerl portable policy"):
        load_native_policy(garbage)
    with pytest.raises(PolicyError, match="no such policy file"):
        load_native_policy(tmp_path / "missing.safetensors")


def _with_header(twin: Path, **changes: object) -> Path:
    """A copy of ``twin`` beside it with header fields changed (tensors kept)."""
    from safetensors.numpy import save

    portable = read_portable(twin)
    header = {**portable.header, **changes}
    copy = twin.with_name("changed.safetensors")
    copy.write_bytes(save(dict(portable.tensors), metadata={HEADER_KEY: json.dumps(header)}))
    return copy


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"arms": {"models": []}}, "arms.models must be a non-empty list of distinct names"),
        ({"arms": {"models": ["a", "a", "b", "c", "d"]}}, "arms.models must be a non-empty list of distinct names"),
        ({"arms": {"default_cost_weight": -1}}, "default_cost_weight must be finite and >= 0"),
        ({"head": {"layers": 10**9}}, "layers must be an integer of at most its tensors' count"),
        ({"head": {"layers": "x"}}, "layers must be an integer of at most its tensors' count"),
        ({"featurizer": {"delimiters": 5}}, "delimiters must be a list of ASCII byte values"),
        ({"featurizer": {"delimiters": [-1, 10]}}, "delimiters must be a list of ASCII byte values"),
        ({"featurizer": {"length_scale": 0}}, "length_scale must be a finite number > 0"),
        ({"featurizer": {"terms": 3}}, "its featurizer says 3 terms"),
        ({"metadata": []}, "its header's 'metadata' is not a JSON object"),
    ],
    ids=["no-models", "twice", "weight", "huge-layers", "layers-text", "delimiters", "negative-byte",
         "length-scale", "terms", "metadata"],
)
def test_a_hostile_header_is_one_line_policy_error(
    policies: dict[str, Path], change: dict, message: str
) -> None:
    """Every wrong value of the header is refused by name, before it is used (found by a hostile review)."""
    source = read_portable(twin_path(policies["mlp_logit"])).header
    header = {key: {**source[key], **value} if isinstance(value, dict) and isinstance(source.get(key), dict) else value
              for key, value in change.items()}
    with pytest.raises(PolicyError, match=message) as refused:
        load_native_policy(_with_header(twin_path(policies["mlp_logit"]), **header))
    assert "\n" not in str(refused.value)


def test_non_finite_tensors_negative_prices_and_a_deep_header_are_refused(
    policies: dict[str, Path], tmp_path: Path
) -> None:
    from safetensors.numpy import save

    portable = read_portable(twin_path(policies["token_utility"]))
    header = json.dumps(portable.header)
    for name, edit, message in [
        ("text_map", lambda a: a * np.nan, "its tensor text_map holds a value that is not finite"),
        ("head.price_table", lambda a: -a, r"head.price_table must be \(K, 2\) prices >= 0"),
    ]:
        tensors = {**portable.tensors, name: edit(portable.tensors[name])}
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(save(tensors, metadata={HEADER_KEY: header}))
        with pytest.raises(PolicyError, match=message):
            load_native_policy(path)
    deep = tmp_path / "deep.safetensors"
    deep.write_bytes(save(dict(portable.tensors), metadata={HEADER_KEY: "[" * 100_000 + "]" * 100_000}))
    with pytest.raises(PolicyError, match="not a routerl portable policy"):
        load_native_policy(deep)
    broken_twin = tmp_path / "beside" / "policy.pt"  # a twin that cannot be read: the policy.pt is converted
    broken_twin.parent.mkdir()
    broken_twin.write_bytes(policies["token_utility"].read_bytes())
    twin_path(broken_twin).write_bytes(deep.read_bytes())
    assert load_native_policy(broken_twin).version == load_policy(policies["token_utility"]).version
