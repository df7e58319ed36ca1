"""Rule overrides (docs/contracts.md §2.9): the rules file, the glob, first-match masks, the artifact, train.py."""

from __future__ import annotations

import json
import time
from fnmatch import fnmatchcase
from itertools import product
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_isolated, run_python, run_train

from data.featurizer import FeaturizerConfig, TextFeaturizer
from data.loading import load_log
from data.schema import DataError
from data.splits import SplitFractions, split
from policies.__main__ import main as policies_main
from policies.artifact import load_policy
from policies.glob import Glob
from policies.native import load_native_policy
from policies.rules import RuleSet, ascii_lower, canonical, parse_rules, read_rules
from training.config import load_config
from training.run import prepare_directory, train

MODELS = ["a", "b", "c"]


def scripted_rules(*rules: dict) -> torch.jit.ScriptModule:
    """The :class:`RuleSet` of ``rules`` over :data:`MODELS`, scripted as inside a policy."""
    return torch.jit.script(RuleSet(parse_rules(list(rules), "test"), MODELS))


def allowed(rule_set: torch.jit.ScriptModule, text: str) -> list[str]:
    """The models ``rule_set`` allows for ``text``."""
    return [model for model, ok in zip(MODELS, rule_set([text])[0].tolist()) if ok]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("rules: [ {", "not valid YAML"),
        ("rule: []", "a mapping with one key, 'rules'"),
        ("rules: {a: 1}", "'rules' must be a list"),
        ("rules: [3]", "rule 1: a rule is a mapping"),
        (
            "rules:\n  - {name: x, when: {min_chars: 1}, route_to: [a], also: 1}",
            "rule 1 ('x'): also: Unexpected keyword",
        ),
        ("rules:\n  - {when: {regex: b}, route_to: [a]}", "rule 1: when.regex: Unexpected keyword"),
        (
            "rules:\n  - {when: {min_chars: 1}, route_to: [a]}\n  - {name: y, when: {min_chars: 1}, route_to: []}",
            "rule 2 ('y'): route_to needs at least one model",
        ),
        ("rules:\n  - {when: {pattern: '[ab'}, route_to: [a]}", "rule 1: when: glob '[ab': the '[' at position 0"),
        ("rules:\n  - {when: {pattern: '[z-a]'}, route_to: [a]}", "the range z-a is reversed"),
        ("rules:\n  - {when: {pattern: '[é]'}, route_to: [a]}", "ASCII characters only"),
        ("rules:\n  - {when: {min_tokens: 5, max_tokens: 2}, route_to: [a]}", "a minimum (5) above its maximum (2)"),
        ("rules:\n  - {when: {}, route_to: [a]}", "'when' needs at least one condition"),
        ("rules:\n  - {when: {contains_any: []}, route_to: [a]}", "contains_any needs at least one string"),
        ("rules:\n  - {when: {contains_any: '```'}, route_to: [a]}", "when.contains_any: Input should be a valid list"),
        ("rules:\n  - {when: {min_tokens: '5'}, route_to: [a]}", "when.min_tokens: Input should be a valid integer"),
        ("rules:\n  - {when: {min_tokens: -1}, route_to: [a]}", "when.min_tokens: Input should be greater than"),
        ("rules:\n  - {when: {min_tokens: 1}, route_to: [a, a]}", "route_to names a model twice"),
    ],
)
def test_a_malformed_rules_file_is_one_line_naming_the_file_and_the_rule(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as refused:
        read_rules(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


def test_a_rule_naming_an_unknown_model_is_refused_when_compiled() -> None:
    rules = parse_rules([{"name": "long prompts", "when": {"min_tokens": 9}, "route_to": ["a", "x"]}], "f.yaml")
    with pytest.raises(DataError, match=r"rule 1 \('long prompts'\): unknown model 'x'; the log's models are"):
        RuleSet(rules, MODELS)


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("*", "", True),
        ("*", "anything\nat all", True),
        ("**", "", True),
        ("?", "", False),
        ("a*", "", False),
        ("?", "é", True),  # one character, two bytes
        ("?", "日", True),
        ("??", "🚀", False),  # one character of four bytes
        ("caf?", "café", True),
        ("*é*", "un café noir", True),
        ("[!a]", "é", True),  # a non-ASCII character is in no set
        ("[a-z]", "é", False),
        ("*[0-9]x", "é3x", True),
        ("*translate*to french*", "please translate this to french", True),
        ("*translate*to french*", "to french, translate", False),
        ("*hello*", "SAY HELLO", True),  # the policy lowercases the text, the pattern is lowercased here
        ("[A-C]?", "bz", True),
        ("[]]", "]", True),
        ("[*]", "*", True),
        ("[*]", "x", False),
        ("a*b*a", "aba", True),
        ("a*b*a", "ab", False),
        ("*ab?d*", "xxabcabcdxx", True),  # the first "ab" is a false start
    ],
)
def test_glob_edge_cases(pattern: str, text: str, matches: bool) -> None:
    assert torch.jit.script(Glob(pattern)).matches(ascii_lower(text)) is matches


def test_glob_agrees_with_fnmatch_on_mixed_ascii_and_unicode_texts() -> None:
    patterns = ["".join(atoms) for atoms in product(["*", "a", "?", "[!a]", "[a-c]", "é"], repeat=3)]
    texts = ["".join(chars) for chars in product(["a", "b", "é", "日", "\n"], repeat=3)] + ["", "a", "é"]
    for pattern in patterns:
        glob = torch.jit.script(Glob(pattern))
        for text in texts:
            assert glob.matches(text) is fnmatchcase(text, pattern), (pattern, text)


def test_glob_on_a_100k_character_text_stays_fast() -> None:
    glob = torch.jit.script(Glob("*translate*to french*"))
    text = "please " * 15_000 + "translate this to french " + "x" * 10_000
    glob.matches("warm-up")  # the first call of a scripted method optimises it
    started = time.perf_counter()
    assert glob.matches(text) and not glob.matches(text.replace("french", "german"))
    assert not torch.jit.script(Glob("*?[!a]*")).matches("a" * 100_000)  # no candidate loop: refused up front
    assert time.perf_counter() - started < 0.5


def test_the_first_matching_rule_wins_and_no_match_allows_every_model() -> None:
    rule_set = scripted_rules(
        {"when": {"contains_any": ["code"]}, "route_to": ["b"]},
        {"when": {"contains_any": ["code", "math"]}, "route_to": ["a", "c"]},
    )
    assert allowed(rule_set, "some CODE and math") == ["b"]
    assert allowed(rule_set, "only math") == ["a", "c"]
    assert allowed(rule_set, "nothing") == MODELS
    assert rule_set([]).shape == (0, 3) and rule_set([]).dtype == torch.bool
    assert torch.jit.script(RuleSet([], MODELS))(["x", ""]).all()


def test_every_given_condition_must_hold() -> None:
    rule_set = scripted_rules(
        {"when": {"contains_all": ["prove", "prime"], "pattern": "prove*", "max_chars": 30}, "route_to": ["c"]}
    )
    assert allowed(rule_set, "Prove there are infinitely many primes") == MODELS  # 38 characters
    assert allowed(rule_set, "Prove that primes never end") == ["c"]
    assert allowed(rule_set, "We prove that primes never end") == MODELS  # the pattern anchors at the start


def test_token_bounds_count_tokens_as_the_featurizer_does() -> None:
    texts = ["", "one", "Hello, world!! (twice)", "  spaced   out\t\ttabs\n", "Ünïcödé 日本語 émoji🚀ok", "a-b_c.d"]
    featurizer = TextFeaturizer(FeaturizerConfig(min_df=1, components=0)).fit(["one two", "three"])
    counts = featurizer.analyze(texts)[1].astype(int).tolist()
    assert counts == [0, 1, 3, 3, 3, 4]  # "_" is punctuation, non-ASCII bytes are token bytes
    for text, count in zip(texts, counts):
        exactly = scripted_rules({"when": {"min_tokens": count, "max_tokens": count}, "route_to": ["a"]})
        above = scripted_rules({"when": {"min_tokens": count + 1}, "route_to": ["a"]})
        assert allowed(exactly, text) == ["a"] and allowed(above, text) == MODELS, text


def test_character_bounds_count_unicode_code_points() -> None:
    for text in ["", "abc", "a\nb\tc", "café", "日本語", "🚀🚀", "mixed é 日 🚀\n", "\x00\x7f"]:
        exactly = scripted_rules({"when": {"min_chars": len(text), "max_chars": len(text)}, "route_to": ["a"]})
        assert allowed(exactly, text) == ["a"], text


def test_canonical_rules_keep_the_given_conditions_in_file_order() -> None:
    rules = parse_rules(
        [
            {"route_to": ["b"], "when": {"max_tokens": 9, "contains_any": ["X"]}, "name": "n"},
            {"when": {"min_chars": 2}, "route_to": ["a"]},
        ],
        "f",
    )
    assert canonical(rules) == [
        {"name": "n", "when": {"contains_any": ["X"], "max_tokens": 9}, "route_to": ["b"]},
        {"name": None, "when": {"min_chars": 2}, "route_to": ["a"]},
    ]
    assert canonical(parse_rules(canonical(rules), "metadata")) == canonical(rules)


FRESH_PROCESS = r"""
import json, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
import torch
extra = {"metadata.json": ""}
policy = torch.jit.load(sys.argv[1], _extra_files=extra)
queries = json.loads(sys.argv[2])
print(json.dumps({
    "rules": json.loads(extra["metadata.json"])["rules"],
    "mask": policy.rule_mask(queries).tolist(),
    "route": policy.route(queries, 300.0),
    "forward": policy(queries).tolist(),
    "scores": policy.scores(queries, 300.0).tolist(),
    "default": policy.default_cost_weight(),
    "routerl": sorted(name for name in sys.modules if name.split(".")[0] in ("policies", "data", "training")),
}))
"""

QUERIES = [
    "Fix this: ```def f(x): return x```",
    "Please translate the menu to French.",
    "word " * 60,
    "Prove that there are infinitely many primes.",
    "hello",
    "What is the capital of France?",
    "",
]


def test_rule_mask_and_route_in_a_fresh_process(rules_policy: Path, tmp_path: Path) -> None:
    done = run_isolated(FRESH_PROCESS, str(rules_policy), json.dumps(QUERIES), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["routerl"] == []
    assert [rule["route_to"] for rule in answer["rules"]][:2] == [["frontier-xl", "large-70b"], ["large-70b"]]
    models = ["frontier-xl", "large-70b", "medium-34b", "small-7b", "tiny-1b"]
    allowed_sets = [[model for model, ok in zip(models, row) if ok] for row in answer["mask"]]
    assert allowed_sets == [
        ["frontier-xl", "large-70b"],
        ["tiny-1b"],
        ["large-70b"],
        ["medium-34b", "small-7b"],
        ["small-7b"],
        models,
        models,
    ]
    for query, row, scores, chosen in zip(QUERIES, answer["mask"], answer["scores"], answer["route"]):
        best = max((score, -index) for index, (score, ok) in enumerate(zip(scores, row)) if ok)
        assert chosen == models[-best[1]], query
    assert answer["route"][1] == "tiny-1b" and answer["route"][2] == "large-70b"
    in_process = torch.jit.load(str(rules_policy))
    assert answer["forward"] == in_process(QUERIES).tolist()
    assert answer["forward"] == [models.index(m) for m in in_process.route(QUERIES, answer["default"])]


#: A rule every text with a space matches: only the two cheapest models.
SPACES_RULE = 'rules:\n  - when: {contains_any: [" "]}\n    route_to: [tiny-1b, small-7b]\n'


def test_the_report_measures_the_policy_with_its_rules(tmp_path: Path) -> None:
    """The run's test metrics are those of the exported policy as it routes, rules applied. A rule that
    every demo query matches allows only the two cheapest models: the report's shares are
    ``policy.pt``'s own ``route`` on the test split, all on those two models."""
    (tmp_path / "rules.yaml").write_text(SPACES_RULE, encoding="utf-8")
    overrides = [f"rules={tmp_path / 'rules.yaml'}", "tuning.enabled=false", "evaluation.bootstrap=0"]
    prepare_directory(tmp_path / "run", overwrite=False)
    report = train(load_config(ROOT / "configs" / "default.yaml", overrides), tmp_path / "run", quiet=True).report
    assert report["policy"]["rules"] == 1
    log = load_log(ROOT / "data" / "demo" / "demo.jsonl").log
    fractions = SplitFractions(**report["split"]["fractions"])
    test = split(log, fractions, report["split"]["seed"], report["split"]["kind"]).test
    routed = load_policy(tmp_path / "run" / "policy.pt").module.route([log.queries[i] for i in test], 300.0)
    shares = {model: routed.count(model) / len(routed) for model in log.models}
    assert report["policy"]["cost_weight"] == 300.0
    assert report["test"]["share_per_model"] == pytest.approx(shares, abs=1e-12)
    assert set(routed) <= {"tiny-1b", "small-7b"} and len(set(routed)) == 2
    point = next(p for p in report["frontier"]["points"] if p["cost_weight"] == 0.0)  # quality alone
    assert point["share_per_model"]["frontier-xl"] == 0.0  # which the learned decision alone would choose
    assert "apply its 1 rule override(s)" in (tmp_path / "run" / "report.md").read_text(encoding="utf-8")


def test_rule_mask_on_one_query_with_five_rules_takes_under_a_millisecond(rules_policy: Path) -> None:
    policy = torch.jit.load(str(rules_policy))
    query = ["Summarize the plot of Hamlet in three sentences, then list its main characters."]
    for _ in range(20):
        policy.rule_mask(query)
    started = time.perf_counter()
    for _ in range(200):
        policy.rule_mask(query)
    assert (time.perf_counter() - started) / 200 < 1e-3


def test_a_policy_without_rules_has_an_all_true_mask_and_empty_rules_metadata(demo_policy: Path) -> None:
    extra = {"metadata.json": ""}
    policy = torch.jit.load(str(demo_policy), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["rules"] == []
    assert policy.rule_mask(["a", ""]).all() and policy.rule_mask(["a", ""]).shape == (2, 5)


def test_rules_for_an_embedding_run_are_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("rules:\n  - {when: {min_chars: 1}, route_to: [a]}\n", encoding="utf-8")
    with pytest.raises(DataError, match="an input: embedding policy has none"):
        load_config(ROOT / "configs" / "default.yaml", [f"rules={tmp_path / 'rules.yaml'}", "input=embedding"])


def test_train_refuses_an_unknown_model_in_one_line_before_training(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - {when: {min_chars: 1}, route_to: [tiny-1b]}\n"
        "  - {name: long prompts, when: {min_tokens: 3000}, route_to: [x]}\n",
        encoding="utf-8",
    )
    done = run_train("--no-tune", "--rules", str(rules), "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"train.py: error: {rules}: rule 2 ('long prompts'): unknown model 'x'; the log's models are "
        "['frontier-xl', 'large-70b', 'medium-34b', 'small-7b', 'tiny-1b']"
    )
    assert not (tmp_path / "run" / "policy.pt").exists() and not (tmp_path / "run" / "tb").exists()


def test_train_refuses_a_malformed_rules_file_before_creating_the_run_directory(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: m, when: {min_tokens: 5, max_tokens: 2}, route_to: [tiny-1b]}\n")
    done = run_train("--no-tune", "--rules", str(rules), "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith(f"train.py: error: {rules}: rule 1 ('m'): when: a minimum (5) above its maximum")
    assert not (tmp_path / "run").exists()


def test_rules_are_replaced_without_retraining(
    rules_policy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m policies rules``: the new file routes by the new rules with the old scores, bit for bit; its
    metadata says what was replaced; the native engine agrees; the evaluated file is left as it was."""
    (tmp_path / "spaces.yaml").write_text(SPACES_RULE, encoding="utf-8")
    before = rules_policy.read_bytes()
    rules, new_file = str(tmp_path / "spaces.yaml"), str(tmp_path / "new.pt")
    done = run_python("-m", "policies", "rules", str(rules_policy), "--rules", rules, "--out", new_file)
    assert done.returncode == 0, done.stderr
    old, new = load_policy(rules_policy), load_policy(tmp_path / "new.pt")
    assert torch.equal(new.module.scores(QUERIES, 300.0), old.module.scores(QUERIES, 300.0))
    routed = new.module.route(QUERIES, 300.0)
    spaced = [model for query, model in zip(QUERIES, routed) if " " in query]
    assert spaced and set(spaced) <= {"tiny-1b", "small-7b"}
    assert routed != old.module.route(QUERIES, 300.0)
    assert new.metadata["rules"] == [
        {"name": None, "when": {"contains_any": [" "]}, "route_to": ["tiny-1b", "small-7b"]}
    ]
    assert new.metadata["training_data"]["rules_replaced"]["policy_version"] == old.version
    assert new.metadata["metrics"] == old.metadata["metrics"] and new.models == old.models
    assert load_native_policy(tmp_path / "new.pt").route(QUERIES, 300.0) == routed  # the twin was written too
    assert rules_policy.read_bytes() == before
    (tmp_path / "none.yaml").write_text("rules: []\n", encoding="utf-8")
    assert (
        policies_main(
            ["rules", str(rules_policy), "--rules", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "bare.pt")]
        )
        == 0
    )
    bare = load_policy(tmp_path / "bare.pt")
    assert bool(bare.rule_mask(QUERIES).all()) and bare.metadata["rules"] == []
    capsys.readouterr()
    (tmp_path / "unknown.yaml").write_text(
        "rules:\n  - when: {min_chars: 1}\n    route_to: [gpt-9]\n", encoding="utf-8"
    )
    refusals = [
        (["--rules", str(tmp_path / "unknown.yaml"), "--out", str(tmp_path / "x.pt")], "unknown model 'gpt-9'"),
        (["--rules", str(tmp_path / "spaces.yaml"), "--out", str(rules_policy)], "another file than the policy"),
    ]
    for flags, needle in refusals:
        assert policies_main(["rules", str(rules_policy), *flags]) == 2
        stderr = capsys.readouterr().err
        assert len(stderr.strip().splitlines()) == 1 and needle in stderr, stderr
    assert not (tmp_path / "x.pt").exists() and rules_policy.read_bytes() == before
